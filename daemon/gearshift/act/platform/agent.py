"""The daemon's side of the node agents' command protocol: MQTT 5 request/response.

A request is published (QoS 1, not retained) to ``{prefix}/nodes/{identity}/command``::

    {"command": "deactivate", "args": {"district": "...", "host": "..."},
     "request_id": "..."}

with the MQTT 5 properties ``ResponseTopic`` (this client's reply topic,
``{prefix}/daemon/{client id}/replies``) and ``CorrelationData`` (the request id). The
agent runs its own allowlisted template for ``command`` and replies on the response
topic with the same correlation data::

    {"request_id": "...", "command": "deactivate", "ok": true, "exit_code": 0,
     "stdout": "...", "stderr": "...", "error": null}

Broker-side steps go to ``broker_identity`` (the agent on the broker host); node steps
(``list_gears``) to the node's own agent. One connection is opened on first use and
kept; if it drops, requests waiting for replies fail at once (``PlatformError``) and the
next request reconnects. A request nobody answers within ``timeout`` fails too. Replies
that match no request waiting (late, duplicated, foreign) are ignored.

With a keyring (``trust.keyring_file``) every request is signed with the target node's
key (``gearshift.wire.signing``, purpose ``command``) and carries ``target`` and
``expires_at``, so an agent can refuse anything else (``gearshift.agent.gate``); a reply
must be signed by the node asked, and one that is not is ignored (logged), never taken:
whoever can publish on the reply topic cannot answer for an agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Collection, Mapping
from typing import Any

import aiomqtt
import structlog

from gearshift import jsonlimits
from gearshift.act.platform.commands import CommandResult
from gearshift.errors import PlatformError
from gearshift.settings import MqttSettings
from gearshift.wire import topics
from gearshift.wire.commands import CommandReply, CommandRequest
from gearshift.wire.mqtt import client_for, response_properties
from gearshift.wire.signing import Keyring, SignatureError, is_envelope, open_envelope, seal

log = structlog.get_logger(component="gearshift.platform.agent")


class AgentRunner:
    """Sends platform steps to node agents and waits for their replies."""

    def __init__(self, settings: MqttSettings, *, broker_identity: str,
                 node_steps: Collection[str] = ("list_gears",), timeout: float = 600.0,
                 keyring: Keyring | None = None) -> None:
        self.settings = settings
        self.keyring = keyring
        self.broker_identity = broker_identity
        self.node_steps = frozenset(node_steps)
        self.timeout = timeout
        self.prefix = settings.prefix.rstrip("/")
        self.client_id = f"{settings.client_id}-platform-{uuid.uuid4().hex[:8]}"
        self.reply_topic = topics.daemon_replies(self.prefix, self.client_id)
        self._client: aiomqtt.Client | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiting: dict[bytes, asyncio.Future[dict[str, Any]]] = {}
        self._targets: dict[bytes, str] = {}  # correlation -> the agent asked
        self._connecting = asyncio.Lock()

    def has(self, step: str) -> bool:
        return True  # the agent's own allowlist decides, and says so in its reply

    def target(self, step: str, node: str) -> str:
        return node if step in self.node_steps else self.broker_identity

    async def _connect(self) -> aiomqtt.Client:
        async with self._connecting:
            if self._client is not None:
                return self._client
            client = client_for(self.settings, identifier=self.client_id)
            try:
                await client.__aenter__()
                await client.subscribe(self.reply_topic, qos=1)
            except aiomqtt.MqttError as exc:
                raise PlatformError(f"cannot reach the MQTT broker for agent commands: "
                                    f"{exc}") from exc
            self._client = client
            self._reader = asyncio.create_task(self._read(client), name="agent replies")
            log.info("connected for agent commands", reply_topic=self.reply_topic)
            return client

    async def _read(self, client: aiomqtt.Client) -> None:
        try:
            async for message in client.messages:
                self._deliver(message)
        except aiomqtt.MqttError as exc:
            log.warning("MQTT connection for agent commands lost", error=str(exc))
        finally:
            if self._client is client:
                self._client = None
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(PlatformError(
                        "the MQTT connection dropped before the agent replied"))
            self._waiting.clear()

    def _deliver(self, message: aiomqtt.Message) -> None:
        raw = getattr(message.properties, "CorrelationData", None)
        correlation = bytes(raw) if raw else b""
        future = self._waiting.get(correlation)
        if future is None or future.done():
            return  # late, duplicated or not ours
        payload = message.payload if isinstance(message.payload, bytes) else b""
        if self.keyring is not None:
            target = self._targets.get(correlation, "")
            try:
                if not is_envelope(payload):
                    raise SignatureError("unsigned", "the reply is not signed")
                payload = open_envelope(payload, keys=self.keyring.node_keys(target),
                                        purpose="reply", topic=self.reply_topic).body
            except SignatureError as exc:
                log.warning("agent reply refused: not signed by the agent asked",
                            target=target, reason=exc.reason)
                return  # keep waiting for the real one
        try:
            reply = jsonlimits.loads(payload)
        except ValueError:
            future.set_exception(PlatformError("the agent's reply is not JSON"))
            return
        if not isinstance(reply, dict):
            future.set_exception(PlatformError("the agent's reply is not a JSON object"))
            return
        future.set_result(reply)

    async def run(self, step: str, args: Mapping[str, str], *, node: str,
                  timeout: float | None = None) -> CommandResult:
        target = self.target(step, node)
        limit = timeout if timeout is not None else self.timeout
        request_id = uuid.uuid4().hex
        correlation = request_id.encode()
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[correlation] = future
        self._targets[correlation] = target
        try:
            client = await self._connect()
            topic = topics.node(self.prefix, target, "command")
            payload = self._request(topic, target=target, step=step, args=args,
                                    request_id=request_id, valid_for=limit)
            try:
                await client.publish(topic, payload, qos=1,
                                     properties=response_properties(self.reply_topic, correlation))
            except aiomqtt.MqttError as exc:
                raise PlatformError(f"cannot send {step} to agent {target}: {exc}") from exc
            try:
                async with asyncio.timeout(limit):
                    reply = await future
            except TimeoutError:
                raise PlatformError(f"agent {target} did not answer {step} within "
                                    f"{limit:g}s") from None
        finally:
            self._waiting.pop(correlation, None)
            self._targets.pop(correlation, None)
        return _result(reply, request_id=request_id, step=step, target=target)

    def _request(self, topic: str, *, target: str, step: str, args: Mapping[str, str],
                 request_id: str, valid_for: float) -> bytes:
        if self.keyring is None:
            return CommandRequest(command=step, args=args, request_id=request_id).to_json()
        now = time.time()
        body = CommandRequest(command=step, args=args, request_id=request_id, target=target,
                              expires_at=now + valid_for)
        kid, key = self.keyring.node_key(target)
        return seal(body.to_json(), key=key, kid=kid, purpose="command", topic=topic, ts=now)

    async def close(self) -> None:
        client, self._client = self._client, None
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if client is not None:
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)


def _result(reply: dict[str, Any], *, request_id: str, step: str, target: str) -> CommandResult:
    if reply.get("request_id") not in (None, request_id):
        raise PlatformError(f"agent {target} answered another request")
    try:
        answer = CommandReply.from_dict(reply)
    except ValueError:
        raise PlatformError(f"agent {target} sent a malformed reply to {step}") from None
    return CommandResult(ok=answer.ok, exit_code=answer.exit_code, stdout=answer.stdout,
                         stderr=answer.stderr,
                         error=f"agent {target}: {answer.error}" if answer.error else None)
