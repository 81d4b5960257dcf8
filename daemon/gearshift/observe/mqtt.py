"""Node facts over MQTT: the primary, event-driven fact source.

Topics under the configured prefix (default ``gearshift/v1``):

* ``nodes/{identity}/facts``  retained JSON facts, see ``gearshift.wire.facts``;
* ``nodes/{identity}/status`` ``online`` / ``offline`` (the agent's last will);
* ``requests``                capacity requests (JSON ``{pool, gears, ttl, reason, id}``);
* ``unplaced``                unplaced gears a broker-side hook reports
  (JSON ``{pool, gears, source, ttl, reason}``, see ``observe.unplaced``).

Retained messages give the whole fleet right after subscribing. Facts and status are
subscribed at QoS 0: they are a state stream (every agent republishes on an interval and
the broker keeps the last one), so per-message acknowledgements buy nothing on a live TCP
connection and a reconnect replays the state anyway. Whatever the QoS, a broker caps what
it queues for one client: mosquitto's ``max_queued_messages`` (1000 by default) drops the
retained facts of a larger fleet during the replay on (re)subscribe — measured at 10 000
nodes: 1 020 arrive at QoS 1, 9 474 to 10 000 at QoS 0 — so a broker serving a large fleet
needs ``max_queued_messages 0`` (or well above the fleet size); see the README.
Each message is taken as it is read off the socket (``wire.mqtt.dispatching_queue``),
not through aiomqtt's message iterator, whose task and wait per message cost more than
the source's own parse, validate and store (measured in bench/ingest.py).
To know when the retained replay is over, the source publishes a marker to a topic of its
own right after subscribing; when the marker comes back, everything before it has arrived.
It trusts the fleet no sooner than ``catch_up_min`` after subscribing all the same, so
agents that publish live (a broker that lost its retained facts) are heard first.

A lost broker marks the source down (scale-in freezes) and the client reconnects with
jittered exponential back-off and resubscribes. After a loss the source stays down until
the facts are fresh again: every node has said something live since the loss, or its
retained facts were produced after it, or it has gone stale or offline (and so counts as
unknown anyway). Replayed retained facts with an old ``ts`` are not fresh. Scale-out on
clear evidence goes on meanwhile; only scale-in waits.

Facts are checked before they count (``trust:`` settings): signed facts
(``gearshift.wire.signing``) must verify against the node's key derived for the identity in
the topic; unsigned ones are refused under ``require_signed`` and taken but flagged under
``accept_unsigned``, except for a node that has signed before (no downgrade). A ``ts``
more than ``max_clock_skew`` ahead is refused; counts above ``max_gears`` make the facts
bad; new identities past ``max_nodes`` are refused. Under ``require_signed`` an unsigned
``online`` is ignored (``offline`` only lowers trust, so it is taken from anyone).

A bad message is counted in ``gearshift_bad_messages_total`` by reason, logged
(rate-limited), remembered for its identity (``/v1/status`` shows it) and dropped;
nothing a message says can stop the loop.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Collection
from dataclasses import replace

import aiomqtt
import structlog

from gearshift.clock import Clock, SystemClock
from gearshift.errors import BadMessage
from gearshift.metrics import Metrics
from gearshift.model import NodeFacts
from gearshift.observe.fleet import FleetModel
from gearshift.observe.mqtt_requests import take_capacity_request, take_unplaced
from gearshift.observe.requests import RequestBook
from gearshift.settings import MqttSettings, TrustSettings
from gearshift.wire import topics
from gearshift.wire.facts import parse_facts
from gearshift.wire.mqtt import Backoff, RateLimitedLog, check_granted, client_for
from gearshift.wire.signing import Keyring, SignatureError, is_envelope, open_envelope

log = structlog.get_logger(component="gearshift.mqtt")

MAX_IDENTITY = 255


class MqttFactSource:
    """Subscribes to node facts and status, feeds the fleet model, wakes the reconciler."""

    def __init__(self, settings: MqttSettings, fleet: FleetModel, *,
                 metrics: Metrics | None = None, clock: Clock | None = None,
                 requests: RequestBook | None = None,
                 on_facts: Callable[[], None] | None = None,
                 pool_names: Callable[[], Collection[str]] | None = None,
                 rng: random.Random | None = None, trust: TrustSettings | None = None,
                 keyring: Keyring | None = None) -> None:
        self.settings = settings
        self.trust = trust or TrustSettings()
        self.keyring = keyring
        self.fleet = fleet
        self.metrics = metrics
        self.clock = clock or SystemClock()
        self.requests = requests
        self.on_facts = on_facts
        self.pool_names = pool_names
        self.prefix = settings.prefix.rstrip("/")
        self.connected = asyncio.Event()
        self.caught_up = asyncio.Event()
        self.bad_log = RateLimitedLog()
        self.client: aiomqtt.Client | None = None
        self.messages = 0
        self.connects = 0
        self.backoff = Backoff(initial=settings.reconnect_min, maximum=settings.reconnect_max,
                               rng=rng)
        self.delays: list[float] = []  # reconnect delays used, newest last (for tests, logs)
        self.lost_at: float | None = None  # when the broker was last lost
        self._recovering = False
        self._marker: str | None = None
        self._marker_seen = asyncio.Event()  # (a new one for each connection)
        self._set_up(False)

    def _set_up(self, up: bool) -> None:
        self.fleet.source_up = up
        if self.metrics is not None:
            self.metrics.fact_source_up.set(1 if up else 0)

    def _bad(self, reason: str, topic: str, detail: str = "") -> None:
        if self.metrics is not None:
            self.metrics.bad_messages.labels(reason).inc()
        self.bad_log.warn(reason, topic=topic[:200], detail=detail[:200])
        rest = topic[len(self.prefix) + 1:].split("/") if topic.startswith(self.prefix) else []
        if len(rest) == 3 and rest[0] == "nodes" and 0 < len(rest[1]) <= MAX_IDENTITY:
            self.fleet.refused(rest[1], reason, detail, at=self.clock.now())

    def _verified(self, topic: str, identity: str, payload: bytes, now: float) -> NodeFacts:
        """The facts in ``payload``, checked as the module docstring says."""
        signed_at: float | None = None
        if is_envelope(payload):
            try:
                signed = open_envelope(payload, keys=self.keyring.node_keys(identity)
                                       if self.keyring is not None else {},
                                       purpose="facts", topic=topic)
            except SignatureError as exc:
                raise BadMessage(exc.reason, exc.detail) from None
            payload, signed_at = signed.body, signed.ts
        elif self.trust.facts == "require_signed":
            raise BadMessage("unsigned", "trust.facts is require_signed")
        else:
            held = self.fleet.facts(identity)
            if held is not None and held.signed:
                raise BadMessage("unsigned", "this node signed its facts before")
        facts = parse_facts(payload, topic_identity=identity, max_gears=self.trust.max_gears)
        if signed_at is not None:
            facts = replace(facts, signed=True,
                            produced_at=facts.produced_at if facts.produced_at is not None
                            else signed_at)
            if abs((facts.produced_at or signed_at) - signed_at) > self.trust.max_clock_skew:
                raise BadMessage("clock_skew", "the facts' ts and the signature's differ")
        if facts.produced_at is not None and facts.produced_at > now + self.trust.max_clock_skew:
            # Stored, it would make every correct message after it look out of order.
            raise BadMessage("clock_skew", f"ts is {facts.produced_at - now:.0f}s ahead "
                                           f"of ours: check the node's NTP")
        full = self.fleet.room_for(identity)
        if full is not None:
            raise BadMessage("fleet_full", full)
        return facts

    def _take(self, message: aiomqtt.Message) -> None:
        """One message from the broker, as it is read (``dispatching_queue``)."""
        topic = message.topic.value
        if topic == self._marker:
            self._marker_seen.set()
            return
        payload = message.payload
        if isinstance(payload, str):
            payload = payload.encode()
        elif not isinstance(payload, bytes | bytearray):
            payload = b"" if payload is None else str(payload).encode()
        self.handle(topic, bytes(payload), retained=bool(message.retain))

    def handle(self, topic: str, payload: bytes, *, retained: bool = False) -> None:
        """Take one message; never raises. ``retained``: a replay on subscribing."""
        self.messages += 1
        try:
            self._handle(topic, payload, retained)
        except BadMessage as exc:
            self._bad(exc.reason, topic, exc.detail)
        except Exception as exc:  # a bug must not stop ingestion; count it loudly
            log.exception("unexpected error handling a message", topic=topic[:200])
            self._bad("internal_error", topic, repr(exc))

    def _handle(self, topic: str, payload: bytes, retained: bool) -> None:
        if not topic.startswith(self.prefix + "/"):
            raise BadMessage("unknown_topic", topic[:200])
        rest = topic[len(self.prefix) + 1:].split("/")
        now = self.clock.now()
        if rest in (["requests"], ["unplaced"]):
            # An empty payload clears a retained message: nothing to ask for.
            if self.requests is not None and payload:
                take = take_capacity_request if rest == ["requests"] else take_unplaced
                take(payload, book=self.requests, now=now, retained=retained,
                     pools=self.pool_names() if self.pool_names is not None else None,
                     max_payload=self.settings.max_payload)
                if self.on_facts is not None:
                    self.on_facts()
            return
        if len(rest) != 3 or rest[0] != "nodes" or not rest[1]:
            raise BadMessage("unknown_topic", topic[:200])
        identity, kind = rest[1], rest[2]
        if len(identity) > MAX_IDENTITY:
            raise BadMessage("bad_identity", f"{len(identity)} characters")
        if kind == "facts":
            if not payload:
                # Retained facts cleared: the node was retired (we clear them ourselves in
                # ``forget_node``). Anyone can send an empty message: with signed facts
                # required it proves nothing, and the node stays until it goes silent.
                if self.trust.facts != "require_signed":
                    self.fleet.forget(identity)
                return
            if len(payload) > self.settings.max_payload:
                raise BadMessage("too_large", f"{len(payload)} bytes")
            facts = self._verified(topic, identity, payload, now)
            if self.fleet.ingest(facts, received_at=now, retained=retained):
                if self.metrics is not None:
                    self.metrics.facts_received.inc()
                    if not facts.signed:
                        self.metrics.unsigned_facts.inc()
                if self._recovering and not self.fleet.waiting_for:
                    self._check_recovered()
                if self.on_facts is not None:
                    self.on_facts()
            else:
                self._bad("out_of_order", topic)
        elif kind == "status":
            if len(payload) > 64:
                raise BadMessage("bad_status", f"{len(payload)} bytes")
            text = payload.decode("utf-8", "replace").strip().lower()
            if text not in ("online", "offline", ""):
                raise BadMessage("bad_status", text[:40])
            if text == "online" and self.trust.facts == "require_signed":
                return  # anyone may say so: only signed facts bring a node back
            if text:
                self.fleet.set_online(identity, text == "online", at=now, retained=retained)
                if self.on_facts is not None:
                    self.on_facts()
        elif kind != "command":
            raise BadMessage("unknown_topic", topic[:200])

    # -- connection -------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected until ``stop``; reconnect with jittered back-off."""
        while not stop.is_set():
            try:
                self._marker_seen = asyncio.Event()
                async with client_for(self.settings, on_message=self._take) as client:
                    self.client = client
                    await self._subscribe(client)
                    self.connects += 1
                    if self.metrics is not None and self.connects > 1:
                        self.metrics.fact_source_reconnects.inc()
                    log.info("connected to MQTT broker", host=self.settings.host,
                             port=self.settings.port, connects=self.connects)
                    self.connected.set()
                    self.backoff.reset()
                    await self._consume(client, stop)
            except (aiomqtt.MqttError, OSError) as exc:
                if self.connected.is_set() or self.lost_at is None:
                    log.warning("MQTT broker lost; scale-in frozen until facts are fresh "
                                "again", error=str(exc)[:200])
                else:
                    log.info("MQTT broker still unreachable", error=str(exc)[:200])
            finally:
                if self.connected.is_set() or self.caught_up.is_set():
                    self.lost_at = self.clock.now()
                self.client = None
                self._marker = None
                self.connected.clear()
                self.caught_up.clear()
                self._set_up(False)
            if stop.is_set():
                break
            delay = self.backoff.next()
            self.delays.append(delay)
            del self.delays[:-50]
            log.info("reconnecting to MQTT broker", retry_in=round(delay, 2))
            await self._sleep_or_stop(stop, delay)

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        """One SUBSCRIBE for everything: its SUBACK comes before the retained replay, so
        nothing waits for the replay before the pump starts taking it in."""
        marker = topics.sync(self.prefix, client.identifier)
        wanted = [(topics.all_nodes(self.prefix, "facts"), 0),
                  (topics.all_nodes(self.prefix, "status"), 0),
                  (topics.requests(self.prefix), 1), (topics.unplaced(self.prefix), 1),
                  (marker, 0)]
        check_granted(await client.subscribe(wanted), ", ".join(t for t, _ in wanted))
        self._marker = marker

    def _caught_up(self, *, timed_out: bool = False) -> None:
        """The retained replay is over: trust the fleet, or wait until it is fresh again."""
        if self.caught_up.is_set():
            return
        if timed_out:
            log.warning("no catch-up marker from the broker; trusting retained facts after "
                        "the timeout", timeout=self.settings.catch_up_timeout)
        self.caught_up.set()
        if self.lost_at is not None:
            waiting = self.fleet.await_fresh(self.lost_at)
            self._recovering = True
            if waiting:
                log.info("reconnected; scale-in stays frozen until these nodes are heard "
                         "from again (or go stale)", nodes=waiting)
            self._check_recovered()
        else:
            self._set_up(True)
        if self.on_facts is not None:
            self.on_facts()

    def _check_recovered(self) -> None:
        if self.fleet.recovered(self.clock.now()):
            self._recovering = False
            self._set_up(True)
            log.info("facts fresh again after the broker loss; scale-in unfrozen",
                     outage=round(self.clock.now() - (self.lost_at or self.clock.now()), 1))
        if self.metrics is not None:
            self.metrics.fact_source_waiting.set(self.fleet.waiting_for)

    async def _consume(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        """Follow the connection until ``stop`` or it drops; messages go to ``_take`` as
        they are read, none waits in a queue."""
        loop = asyncio.get_running_loop()
        subscribed = loop.time()
        marker_seen = self._marker_seen

        async def pump() -> None:
            async for _ in client.messages:  # nothing is queued: ends when the link drops
                pass

        async def watch() -> None:
            """Catch up (marker back, and at least ``catch_up_min`` after subscribing, so
            agents publishing live get a moment, e.g. after a broker lost its retained
            facts), then follow nodes going stale while we wait for fresh facts."""
            timed_out = False
            try:
                async with asyncio.timeout(self.settings.catch_up_timeout):
                    await marker_seen.wait()
            except TimeoutError:
                timed_out = True
            await asyncio.sleep(max(0.0, self.settings.catch_up_min
                                    - (loop.time() - subscribed)))
            self._caught_up(timed_out=timed_out)
            while True:
                if self._recovering:
                    self._check_recovered()
                await asyncio.sleep(1.0)

        pumping = asyncio.create_task(pump())
        watching = asyncio.create_task(watch())
        stopping = asyncio.create_task(stop.wait())
        try:
            # Ask for the marker only now: its PUBACK queues behind the retained replay.
            if self._marker is not None:
                await client.publish(self._marker, b"caught-up?", qos=1)
            done, _ = await asyncio.wait({pumping, stopping},
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pumping, watching, stopping):
                task.cancel()
            await asyncio.gather(pumping, watching, stopping, return_exceptions=True)
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
        await client.publish(topics.node(self.prefix, identity, "facts"), b"", qos=1,
                             retain=True)
        await client.publish(topics.node(self.prefix, identity, "status"), b"", qos=1,
                             retain=True)
