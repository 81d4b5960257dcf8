"""Node facts over MQTT: the primary, event-driven fact source.

Topics under the configured prefix (default ``gearshift/v1``):

* ``nodes/{identity}/facts``  retained JSON facts (QoS 1), see ``observe.facts``;
* ``nodes/{identity}/status`` ``online`` / ``offline`` (the agent's last will);
* ``requests``                capacity requests (JSON ``{pool, gears, ttl, reason}``).

Retained messages give the whole fleet right after subscribing. A lost broker marks the
source down (scale-in freezes) and the client reconnects with jittered exponential
back-off and resubscribes. A bad message is counted in ``gearshift_bad_messages_total``
by reason, logged (rate-limited), and dropped; nothing a message says can stop the loop.
"""

from __future__ import annotations

import asyncio
import json
import random
import ssl
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiomqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gearshift.clock import Clock, SystemClock
from gearshift.durations import parse_duration
from gearshift.errors import BadMessage
from gearshift.metrics import Metrics
from gearshift.model import CapacityRequest, FleetSnapshot
from gearshift.observe.facts import parse_facts
from gearshift.observe.fleet import FleetModel
from gearshift.observe.requests import RequestBook
from gearshift.settings import MqttSettings, Settings

log = structlog.get_logger(component="gearshift.mqtt")


class RateLimitedLog:
    """At most one log line per ``every`` seconds per reason; the rest are counted."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warn(self, reason: str, **fields: Any) -> None:
        now = time.monotonic()
        if now - self._last.get(reason, -self.every) >= self.every:
            suppressed = self._suppressed.pop(reason, 0)
            log.warning("bad message dropped", reason=reason, suppressed=suppressed, **fields)
            self._last[reason] = now
        else:
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1


def client_for(settings: MqttSettings, *, identifier: str | None = None,
               will: aiomqtt.Will | None = None) -> aiomqtt.Client:
    """An aiomqtt client configured from settings (auth, TLS, protocol)."""
    tls_context = None
    if settings.tls is not None:
        tls_context = ssl.create_default_context(
            cafile=str(settings.tls.ca_file) if settings.tls.ca_file else None)
        if settings.tls.cert_file is not None:
            tls_context.load_cert_chain(str(settings.tls.cert_file),
                                        str(settings.tls.key_file) if settings.tls.key_file
                                        else None)
        if settings.tls.insecure:
            tls_context.check_hostname = False
    password = settings.secret()
    protocol = (aiomqtt.ProtocolVersion.V5 if settings.protocol == "5"
                else aiomqtt.ProtocolVersion.V311)
    return aiomqtt.Client(
        settings.host, settings.port, username=settings.username,
        password=password.get_secret_value() if password is not None else None,
        identifier=identifier or f"{settings.client_id}-{uuid.uuid4().hex[:8]}",
        protocol=protocol, will=will, keepalive=settings.keepalive, tls_context=tls_context,
        tls_insecure=settings.tls.insecure if settings.tls is not None else None,
        timeout=10)


def response_properties(topic: str, correlation: bytes) -> Properties:
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.ResponseTopic = topic
    properties.CorrelationData = correlation
    return properties


class MqttFactSource:
    """Subscribes to node facts and status, feeds the fleet model, wakes the reconciler."""

    def __init__(self, settings: MqttSettings, fleet: FleetModel, *,
                 metrics: Metrics | None = None, clock: Clock | None = None,
                 requests: RequestBook | None = None,
                 on_facts: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self.fleet = fleet
        self.metrics = metrics
        self.clock = clock or SystemClock()
        self.requests = requests
        self.on_facts = on_facts
        self.prefix = settings.prefix.rstrip("/")
        self.connected = asyncio.Event()
        self.caught_up = asyncio.Event()
        self.bad_log = RateLimitedLog()
        self.client: aiomqtt.Client | None = None
        self.messages = 0
        self._set_up(False)

    def _set_up(self, up: bool) -> None:
        self.fleet.source_up = up
        if self.metrics is not None:
            self.metrics.fact_source_up.set(1 if up else 0)

    def _bad(self, reason: str, topic: str, detail: str = "") -> None:
        if self.metrics is not None:
            self.metrics.bad_messages.labels(reason).inc()
        self.bad_log.warn(reason, topic=topic[:200], detail=detail[:200])

    def handle(self, topic: str, payload: bytes) -> None:
        """Take one message; never raises."""
        self.messages += 1
        try:
            self._handle(topic, payload)
        except BadMessage as exc:
            self._bad(exc.reason, topic, exc.detail)
        except Exception as exc:  # a bug must not stop ingestion; count it loudly
            log.exception("unexpected error handling a message", topic=topic[:200])
            self._bad("internal_error", topic, repr(exc))

    def _handle(self, topic: str, payload: bytes) -> None:
        if not topic.startswith(self.prefix + "/"):
            raise BadMessage("unknown_topic", topic[:200])
        rest = topic[len(self.prefix) + 1:].split("/")
        now = self.clock.now()
        if rest == ["requests"]:
            self._request(payload, now)
            return
        if len(rest) != 3 or rest[0] != "nodes" or not rest[1]:
            raise BadMessage("unknown_topic", topic[:200])
        identity, kind = rest[1], rest[2]
        if kind == "facts":
            if not payload:
                self.fleet.forget(identity)  # retained facts cleared: the node was retired
                return
            if len(payload) > self.settings.max_payload:
                raise BadMessage("too_large", f"{len(payload)} bytes")
            facts = parse_facts(payload, topic_identity=identity)
            if self.fleet.ingest(facts, received_at=now):
                if self.metrics is not None:
                    self.metrics.facts_received.inc()
                if self.on_facts is not None:
                    self.on_facts()
            else:
                self._bad("out_of_order", topic)
        elif kind == "status":
            text = payload.decode("utf-8", "replace").strip().lower()
            if text not in ("online", "offline", ""):
                raise BadMessage("bad_status", text[:40])
            if text:
                self.fleet.set_online(identity, text == "online", at=now)
                if self.on_facts is not None:
                    self.on_facts()
        elif kind != "command":
            raise BadMessage("unknown_topic", topic[:200])

    def _request(self, payload: bytes, now: float) -> None:
        if self.requests is None:
            return
        try:
            data = json.loads(payload)
        except ValueError as exc:
            raise BadMessage("invalid_json", str(exc)[:80]) from exc
        if not isinstance(data, dict):
            raise BadMessage("not_an_object", type(data).__name__)
        pool, gears = data.get("pool"), data.get("gears")
        if not isinstance(pool, str) or not isinstance(gears, int) or gears <= 0:
            raise BadMessage("wrong_type", "request needs pool (string) and gears (int > 0)")
        try:
            ttl = parse_duration(str(data.get("ttl", "30m")))
        except ValueError as exc:
            raise BadMessage("bad_value", str(exc)) from exc
        self.requests.add(CapacityRequest(
            request_id=str(data.get("id") or uuid.uuid4().hex), pool=pool, gears=gears,
            expires_at=now + ttl, reason=str(data.get("reason", ""))[:200]))
        if self.on_facts is not None:
            self.on_facts()

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected until ``stop``; reconnect with jittered back-off."""
        backoff = 1.0
        while not stop.is_set():
            try:
                async with client_for(self.settings) as client:
                    self.client = client
                    await client.subscribe(f"{self.prefix}/nodes/+/facts", qos=1)
                    await client.subscribe(f"{self.prefix}/nodes/+/status", qos=1)
                    await client.subscribe(f"{self.prefix}/requests", qos=1)
                    log.info("connected to MQTT broker", host=self.settings.host,
                             port=self.settings.port)
                    self.connected.set()
                    backoff = 1.0
                    catch_up = asyncio.get_running_loop().call_later(1.0, self._caught_up)
                    try:
                        await self._consume(client, stop)
                    finally:
                        catch_up.cancel()
            except aiomqtt.MqttError as exc:
                log.warning("MQTT broker lost; scale-in frozen until facts are fresh again",
                            error=str(exc), retry_in=round(backoff, 1))
            finally:
                self.client = None
                self.connected.clear()
                self.caught_up.clear()
                self._set_up(False)
            if stop.is_set():
                break
            await self._sleep_or_stop(stop, backoff * random.uniform(0.5, 1.5))
            backoff = min(backoff * 2, 60.0)

    def _caught_up(self) -> None:
        """Retained facts arrive right after subscribing; after a quiet second we trust them."""
        self.caught_up.set()
        self._set_up(True)
        if self.on_facts is not None:
            self.on_facts()

    async def _consume(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        """Hand every message to ``handle`` until ``stop`` or the connection drops."""

        async def pump() -> None:
            async for message in client.messages:
                payload = message.payload
                if isinstance(payload, str):
                    payload = payload.encode()
                elif not isinstance(payload, bytes | bytearray):
                    payload = b"" if payload is None else str(payload).encode()
                self.handle(str(message.topic), bytes(payload))

        pumping = asyncio.create_task(pump())
        stopping = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait({pumping, stopping},
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pumping, stopping):
                task.cancel()
        if pumping in done:
            pumping.result()  # re-raise MqttError: the connection dropped

    @staticmethod
    async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await stop.wait()
        except TimeoutError:
            pass

    async def forget_node(self, identity: str) -> None:
        """Clear a retired node's retained messages so it does not come back as stale."""
        self.fleet.forget(identity)
        client = self.client
        if client is None:
            return
        for kind in ("facts", "status"):
            await client.publish(f"{self.prefix}/nodes/{identity}/{kind}", b"", qos=1,
                                 retain=True)


async def collect_snapshot(settings: Settings, *, wait: float) -> FleetSnapshot:
    """Connect, read the retained facts for ``wait`` seconds, return a snapshot."""
    fleet = FleetModel(stale_after=settings.reconcile.stale_after)
    source = MqttFactSource(settings.mqtt, fleet)
    stop = asyncio.Event()
    task = asyncio.create_task(source.run(stop))
    try:
        async with asyncio.timeout(wait + 10):
            await source.connected.wait()
        await asyncio.sleep(wait)
    finally:
        stop.set()
        await task
    fleet.source_up = True
    return fleet.snapshot(time.time())
