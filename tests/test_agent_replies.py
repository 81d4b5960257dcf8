"""Whoever can publish on the daemon's reply topic cannot answer for an agent.

The daemon's command client (act.platform.agent.AgentRunner) sends a signed command and
waits on its own reply topic, matched by the MQTT 5 correlation data. Anyone with publish
rights can see the correlation data go by and answer first. Here an impostor on a real
mosquitto does exactly that: it answers every command before the agent, with "done"
replies that are unsigned, signed with another node's key, signed by the right node for
another purpose (its facts) or for another topic, or not an envelope at all. The runner
must refuse each (and log why) and take only the agent's own reply; with no genuine reply
it must time out rather than take a forged one.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gearshift.act.platform.agent import AgentRunner
from gearshift.act.platform.commands import CommandResult
from gearshift.errors import PlatformError
from gearshift.settings import MqttSettings
from gearshift.wire import topics
from gearshift.wire.mqtt import client_for, response_properties
from gearshift.wire.signing import Keyring, new_master_line, open_envelope, seal, write_private

NODE = "node1.example.com"
OTHER = "node2.example.com"


def forgeries(body: bytes, *, keyring: Keyring, reply_to: str) -> list[tuple[str, bytes]]:
    """Every "the command succeeded" reply an impostor can make without node1's key used
    for a reply on this topic."""
    other_kid, other_key = keyring.node_key(OTHER)
    kid, key = keyring.node_key(NODE)
    now = time.time()
    return [
        ("unsigned", body),
        ("another node's key", seal(body, key=other_key, kid=other_kid, purpose="reply",
                                    topic=reply_to, ts=now)),
        ("node1's key, for its facts", seal(body, key=key, kid=kid, purpose="facts",
                                            topic=reply_to, ts=now)),
        ("node1's key, another topic", seal(body, key=key, kid=kid, purpose="reply",
                                            topic=reply_to + "/x", ts=now)),
        ("a made-up key id", seal(body, key=key, kid="k9", purpose="reply", topic=reply_to,
                                  ts=now)),
        ("an envelope with its MAC cut", json.dumps({"v": 1}).encode()),
    ]


@asynccontextmanager
async def impostor_and_agent(settings: MqttSettings, keyring: Keyring, *, genuine: bool,
                             sent: list[str]) -> AsyncIterator[None]:
    """Answers every command to node1: first every forgery, then (``genuine``) the real
    agent's signed reply. One client, QoS 1: mosquitto delivers them in that order."""
    ready = asyncio.Event()

    async def serve() -> None:
        async with client_for(settings) as client:
            await client.subscribe(topics.node(settings.prefix, NODE, "command"), qos=1)
            ready.set()
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                request = json.loads(open_envelope(
                    message.payload, keys=keyring.node_keys(NODE), purpose="command",
                    topic=message.topic.value).body)
                reply_to = message.properties.ResponseTopic  # type: ignore[union-attr]
                correlation = message.properties.CorrelationData  # type: ignore[union-attr]
                properties = response_properties(reply_to, correlation)

                def answer(stdout: str, request: Mapping[str, Any] = request) -> bytes:
                    return json.dumps({"request_id": request["request_id"],
                                       "command": request["command"], "ok": True,
                                       "exit_code": 0, "stdout": stdout, "stderr": "",
                                       "error": None}).encode()

                for what, payload in forgeries(answer(f"forged {request['command']}"),
                                               keyring=keyring, reply_to=reply_to):
                    await client.publish(reply_to, payload, qos=1, properties=properties)
                    sent.append(what)
                if genuine:
                    kid, key = keyring.node_key(NODE)
                    await client.publish(reply_to, seal(
                        answer(f"genuine {request['command']}"), key=key, kid=kid,
                        purpose="reply", topic=reply_to, ts=time.time()),
                        qos=1, properties=properties)

    task = asyncio.create_task(serve())
    try:
        async with asyncio.timeout(10):
            await ready.wait()
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def keyring_in(directory: Path) -> Keyring:
    path = directory / "keyring"
    write_private(path, new_master_line("k1") + "\n")
    return Keyring.load(path)


def refusals(logs: list[Any]) -> list[object]:
    return [e.get("reason") for e in logs
            if str(e.get("event", "")).startswith("agent reply refused")]


@pytest.fixture
def settings(mosquitto: tuple[str, int]) -> MqttSettings:
    host, port = mosquitto
    return MqttSettings(host=host, port=port, prefix=f"gs-replies/{uuid.uuid4().hex[:8]}")


async def deactivate(settings: MqttSettings, tmp_path: Path, *, genuine: bool, timeout: float
                     ) -> tuple[CommandResult | PlatformError, list[str], list[object]]:
    """Ask node1 to deactivate with the impostor answering first: what the runner made of
    it (its result, or the error it raised), the forgeries sent, the refusals logged."""
    keyring = keyring_in(tmp_path)
    sent: list[str] = []
    runner = AgentRunner(settings, broker_identity=NODE, timeout=timeout, keyring=keyring)
    outcome: CommandResult | PlatformError
    try:
        async with impostor_and_agent(settings, keyring, genuine=genuine, sent=sent):
            with capture_logs() as logs:
                try:
                    outcome = await runner.run("deactivate", {"district": "d1", "host": NODE},
                                               node=NODE)
                except PlatformError as exc:
                    outcome = exc
    finally:
        await runner.close()
    return outcome, sent, refusals(logs)


async def test_forged_replies_are_refused_and_the_agents_own_is_taken(
        settings: MqttSettings, tmp_path: Path) -> None:
    result, sent, reasons = await deactivate(settings, tmp_path, genuine=True, timeout=10)
    assert isinstance(result, CommandResult), result
    assert (result.ok, result.stdout) == (True, "genuine deactivate")
    assert len(sent) == 6
    assert len(reasons) == 6  # each forgery refused, none taken
    assert "unsigned" in reasons


async def test_with_only_forged_replies_the_command_times_out(
        settings: MqttSettings, tmp_path: Path) -> None:
    error, sent, reasons = await deactivate(settings, tmp_path, genuine=False, timeout=3)
    assert isinstance(error, PlatformError) and "did not answer" in str(error), error
    assert len(sent) == 6
    assert len(reasons) == 6
