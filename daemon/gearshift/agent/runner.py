"""The agent's MQTT loop: publish facts and status, answer command requests, reconnect.

See ``gearshift.agent`` for the topics and the command protocol.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiomqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gearshift.agent.commands import CommandRunner, reply
from gearshift.agent.config import AgentConfig
from gearshift.agent.gate import CommandGate
from gearshift.agent.sources import FactSource
from gearshift.errors import CommandRefused, FactsUnavailable
from gearshift.wire import topics
from gearshift.wire.facts import facts_to_message
from gearshift.wire.mqtt import Backoff, check_granted, client_for
from gearshift.wire.signing import seal

log = structlog.get_logger(component="gearshift.agent")


def _same(a: dict[str, Any] | None, b: dict[str, Any]) -> bool:
    """Equal facts, ignoring the stamp (``ts`` and ``seq``) that changes every time."""
    if a is None:
        return False
    skip = {"ts", "seq"}
    return {k: v for k, v in a.items() if k not in skip} == \
        {k: v for k, v in b.items() if k not in skip}


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.identity = config.identity
        prefix = config.mqtt.prefix
        self.facts_topic = topics.node(prefix, self.identity, "facts")
        self.status_topic = topics.node(prefix, self.identity, "status")
        self.command_topic = topics.node(prefix, self.identity, "command")
        self.reply_topic = topics.node(prefix, self.identity, "reply")
        self.source = FactSource(config.facts, self.identity)
        self.runner = CommandRunner(config.commands, timeout=config.command_timeout,
                                    max_concurrent=config.max_concurrent_commands)
        self.keys = config.keys()
        self.gate = CommandGate(identity=self.identity, command_topic=self.command_topic,
                                keys=self.keys, allow_unsigned=config.allow_unsigned_commands)
        self.seq = time.time_ns() // 1_000_000  # rises across restarts too
        self.last: dict[str, Any] | None = None
        self.last_sent = 0.0
        self.published = 0
        self.connected = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def read_message(self) -> dict[str, Any]:
        """The facts message the node would publish now."""
        facts = await self.source.read()
        self.seq += 1
        message = facts_to_message(facts, now=time.time())
        message["seq"] = self.seq
        return message

    async def publish_facts(self, client: aiomqtt.Client, *, force: bool = False) -> bool:
        try:
            message = await self.read_message()
        except FactsUnavailable as exc:
            log.warning("facts unavailable; publishing nothing new", error=str(exc))
            return False
        due = time.monotonic() - self.last_sent >= self.config.interval
        if not force and not due and _same(self.last, message):
            return False
        payload = json.dumps(message).encode()
        if self.keys is not None:
            kid, key = self.keys.current
            payload = seal(payload, key=key, kid=kid, purpose="facts", topic=self.facts_topic,
                           ts=time.time())
        await client.publish(self.facts_topic, payload, qos=1, retain=True)
        self.last, self.last_sent = message, time.monotonic()
        self.published += 1
        return True

    async def _facts_loop(self, client: aiomqtt.Client) -> None:
        await self.publish_facts(client, force=True)
        while True:
            await asyncio.sleep(self.config.poll)
            await self.publish_facts(client)

    async def _answer(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        props = message.properties
        response_topic = getattr(props, "ResponseTopic", None) if props is not None else None
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        payload = message.payload if isinstance(message.payload, bytes) else \
            str(message.payload).encode()
        try:
            request = self.gate.admit(payload)
        except CommandRefused as exc:
            log.warning("command refused", error=str(exc), request_id=exc.request_id)
            result: dict[str, Any] | None = reply(request_id=exc.request_id, command="",
                                                  error=str(exc))
        else:
            result = await self.runner.handle(request)
        if result is None:
            return
        topic = response_topic or self.reply_topic
        if not topic or "+" in topic or "#" in topic:
            log.warning("command reply topic is not usable; reply dropped", topic=topic[:200])
            return
        properties = None
        if self.config.mqtt.protocol == "5" and correlation is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.CorrelationData = correlation
        try:
            await client.publish(topic, self.gate.seal_reply(json.dumps(result).encode(),
                                                             topic=topic),
                                 qos=1, properties=properties)
        except aiomqtt.MqttError as exc:
            log.warning("command reply could not be sent", request_id=result["request_id"],
                        error=str(exc)[:200])

    async def _commands(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            if message.topic.value != self.command_topic:
                continue
            if message.retain:
                log.warning("retained command ignored (it would run on every reconnect)")
                continue
            task = asyncio.create_task(self._answer(client, message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected and publishing until ``stop``; reconnect with back-off."""
        settings = self.config.mqtt
        backoff = Backoff(initial=settings.reconnect_min, maximum=settings.reconnect_max)
        will = aiomqtt.Will(self.status_topic, b"offline", qos=1, retain=True)
        while not stop.is_set():
            try:
                client = client_for(settings, identifier=f"gearshift-agent-{self.identity}"[:64],
                                    will=will)
                async with client:
                    check_granted(await client.subscribe(self.command_topic, qos=1),
                                  self.command_topic)
                    await client.publish(self.status_topic, b"online", qos=1, retain=True)
                    log.info("agent connected", identity=self.identity,
                             broker=f"{settings.host}:{settings.port}")
                    self.connected.set()
                    backoff.reset()
                    await self._serve(client, stop)
                    if stop.is_set():  # a clean stop suppresses the will: say it ourselves
                        await client.publish(self.status_topic, b"offline", qos=1,
                                             retain=True)
            except (aiomqtt.MqttError, OSError) as exc:
                log.warning("broker connection lost", error=str(exc)[:200])
            finally:
                self.connected.clear()
            if stop.is_set():
                break
            try:
                async with asyncio.timeout(backoff.next()):
                    await stop.wait()
            except TimeoutError:
                pass

    async def _serve(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        tasks = [asyncio.create_task(self._facts_loop(client)),
                 asyncio.create_task(self._commands(client))]
        stopping = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait({*tasks, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (*tasks, stopping):
                task.cancel()
            await asyncio.gather(*tasks, stopping, return_exceptions=True)
        for task in tasks:
            if task in done:
                task.result()  # re-raise: the connection dropped


async def run_agent(config: AgentConfig) -> int:
    """``gearshift agent``: run until SIGTERM/SIGINT."""
    import signal  # noqa: PLC0415

    agent = Agent(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await agent.run(stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return 0
