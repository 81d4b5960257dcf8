"""Node facts from the fleet's own mcollectived: gearshift as an MCollective 2.x client.

An OpenShift v2 node already runs mcollectived on ActiveMQ (STOMP), and its rpcutil agent
serves the node's Facter facts. This source asks for them, so adopting gearshift needs
nothing new on the nodes. It speaks the activemq connector's protocol
(``connector/activemq.rb``): discovery pings to ``/topic/C.discovery.agent`` with the
configured fact and identity filters; then every ``interval`` (with jitter) one
``rpcutil inventory`` request, either directed (one copy per discovered node on
``/queue/C.nodes`` with its ``mc_identity`` header, which each node's subscription
selects on) or broadcast (``/topic/C.rpcutil.agent`` with the filters); replies arrive on
our own ``/queue/C.reply.IDENTITY_RANDOM`` and are collected for ``timeout``. Messages are
encoded and checked as the ``psk`` security plugin does (``psk.py``), over a restricted
Marshal decoder (``marshal.py``).

Facts go through the same legacy-facts mapping as flat MQTT facts and into the same
``FleetModel``; a node that stops answering goes stale like a silent MQTT node. A reply
that fails a check is counted in ``gearshift_bad_messages_total{reason}`` and dropped.

STOMP client: stompman (asyncio, typed, failover over a list of brokers, heart-beats,
TLS; it reconnects and re-subscribes by itself). We watch its connections to know when the
broker was lost: scale-in then stays frozen until every node has answered again (or gone
stale), as after an MQTT broker loss. If all its reconnect attempts fail, the client is
rebuilt here with jittered back-off.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import stompman
import structlog

from gearshift.clock import Clock, SystemClock
from gearshift.errors import BadMessage, FactsUnavailable
from gearshift.metrics import Metrics
from gearshift.model import FleetSnapshot
from gearshift.observe.fleet import FleetModel
from gearshift.observe.mcollective.marshal import dumps
from gearshift.observe.mcollective.psk import (
    IdentityFilter,
    decode_reply,
    encode_request,
    make_filter,
    rpc_body,
    rpc_data,
)
from gearshift.observe.mcollective.stomp import tls_context, watched_connection
from gearshift.observe.requests import RequestBook
from gearshift.settings import McollectiveSettings
from gearshift.wire.facts import parse_legacy_facts
from gearshift.wire.mqtt import Backoff, RateLimitedLog

log = structlog.get_logger(component="gearshift.mcollective")

ACTION = "inventory"  # one reply with every fact; get_facts takes at most 200 characters


@dataclass
class _Request:
    kind: str  # discovery | poll
    asked: set[str] | None  # None: broadcast, any node matching the filter may answer
    answered: set[str] = field(default_factory=set)
    complete: asyncio.Event = field(default_factory=asyncio.Event)  # every node asked answered


class McoFactSource:
    """Discovers nodes, polls their facts over MCollective, feeds the fleet model."""

    def __init__(self, settings: McollectiveSettings, fleet: FleetModel, *,
                 metrics: Metrics | None = None, clock: Clock | None = None,
                 on_facts: Callable[[], None] | None = None,
                 rng: random.Random | None = None, max_gears: int = 10_000) -> None:
        self.settings = settings
        self.fleet = fleet
        self.max_gears = max_gears  # trust.max_gears: counts above it make the facts bad
        self.metrics = metrics
        self.clock = clock or SystemClock()
        self.on_facts = on_facts
        self.requests: RequestBook | None = None  # capacity requests: HTTP only here
        self.pool_names: Callable[[], Collection[str]] | None = None
        self.rng = rng or random.Random()
        self.psk = settings.secret_psk().get_secret_value().encode()
        self.reply_to = (f"/queue/{settings.collective}.reply."
                         f"{settings.identity}_{uuid.uuid4().hex[:12]}")
        self.caller = f"gearshift={settings.identity}"
        # Who may answer a broadcast: anyone, or whom the identity filters name.
        self.anyone: IdentityFilter | None = (IdentityFilter(settings.identities)
                                              if settings.identities else None)
        self.connected = asyncio.Event()
        self.caught_up = asyncio.Event()
        self.backoff = Backoff(initial=1.0, maximum=30.0, rng=self.rng)
        self.bad_log = RateLimitedLog()
        self.targets: dict[str, float] = {}  # identity -> when it last answered anything
        self.open: dict[str, _Request] = {}
        self.closed: deque[str] = deque(maxlen=256)  # request ids whose window is over
        self.sent = 0  # STOMP messages sent (one per directed copy)
        self.received = 0
        self.rounds = 0
        self.connects = 0
        self.lost_at: float | None = None
        self._recovering = False
        self._round_after_connect = False
        self._stopping = False
        self._set_up(False)

    # -- bookkeeping ------------------------------------------------------------------
    def _set_up(self, up: bool) -> None:
        self.fleet.source_up = up
        if self.metrics is not None:
            self.metrics.fact_source_up.set(1 if up else 0)

    def _bad(self, reason: str, detail: str = "") -> None:
        if self.metrics is not None:
            self.metrics.bad_messages.labels(reason).inc()
        self.bad_log.warn(reason, source="mcollective", detail=detail[:200])

    def _connected(self) -> None:
        self.connects += 1
        if self.connects > 1 and self.metrics is not None:
            self.metrics.fact_source_reconnects.inc()
        self._round_after_connect = True

    def _lost(self) -> None:
        if self._stopping:
            return
        if self.lost_at is None or self.fleet.source_up or self.caught_up.is_set():
            log.warning("MCollective broker lost; scale-in frozen until every node answers "
                        "again")
        self.lost_at = self.clock.now()
        self._recovering = False
        self._set_up(False)

    # -- replies ----------------------------------------------------------------------
    def handle(self, payload: bytes) -> None:
        """Take one reply; never raises."""
        self.received += 1
        if self.metrics is not None:
            self.metrics.mcollective_messages.labels("received").inc()
        try:
            self._handle(payload)
        except BadMessage as exc:
            self._bad(exc.reason, exc.detail)
        except Exception as exc:  # a bug must not stop ingestion; count it loudly
            log.exception("unexpected error handling an MCollective reply")
            self._bad("internal_error", repr(exc))

    def _handle(self, payload: bytes) -> None:
        now = self.clock.now()
        asked: dict[str, Any] = {rid: self.anyone if r.asked is None else r.asked
                                 for rid, r in self.open.items()}
        try:
            reply = decode_reply(payload, psk=self.psk, now=now, ttl=self.settings.ttl,
                                 asked=asked, max_size=self.settings.max_reply)
        except BadMessage as exc:
            if exc.reason == "unknown_request" and exc.detail in self.closed:
                raise BadMessage("late_reply", exc.detail) from None
            raise
        request = self.open[reply.request_id]
        if reply.sender in request.answered:
            raise BadMessage("duplicate_reply", reply.sender[:80])
        request.answered.add(reply.sender)
        if request.asked is not None and len(request.answered) == len(request.asked):
            request.complete.set()
        self.targets[reply.sender] = now
        if request.kind == "discovery":
            if reply.body != "pong":
                raise BadMessage("bad_pong", repr(reply.body)[:60])
            return
        data = rpc_data(reply)
        raw = data.get("facts")
        if not isinstance(raw, dict):
            raise BadMessage("missing_field", "inventory reply without facts")
        facts = {str(k): v for k, v in raw.items() if isinstance(k, str) and isinstance(v, str)}
        full = self.fleet.room_for(reply.sender)
        if full is not None:
            raise BadMessage("fleet_full", full)
        if self.fleet.ingest(parse_legacy_facts(facts, identity=reply.sender,
                                                max_gears=self.max_gears), received_at=now):
            if self.metrics is not None:
                self.metrics.facts_received.inc()
            if self._recovering and not self.fleet.waiting_for:
                self._check_recovered()
            if self.on_facts is not None:
                self.on_facts()

    async def _on_frame(self, frame: stompman.MessageFrame) -> None:
        self.handle(frame.body)

    # -- requests ---------------------------------------------------------------------
    def _headers(self, now: float) -> dict[str, str]:
        return {"reply-to": self.reply_to, "mc_sender": self.settings.identity,
                "timestamp": str(int(now * 1000)),
                "expires": str(int((now + self.settings.ttl + 10) * 1000))}

    async def _ask(self, client: stompman.Client, *, kind: str, agent: str, body: bytes,
                   filter_: dict[str, Any], destination: str,
                   identities: Collection[str] | None) -> _Request:
        now = self.clock.now()
        request_id = uuid.uuid4().hex
        payload = encode_request(body, psk=self.psk, sender=self.settings.identity,
                                 request_id=request_id, filter_=filter_,
                                 collective=self.settings.collective, agent=agent,
                                 caller=self.caller, ttl=self.settings.ttl, now=now)
        request = _Request(kind=kind, asked=set(identities) if identities is not None else None)
        self.open[request_id] = request
        headers = self._headers(now)
        if identities is None:
            await client.send(payload, destination, headers=headers)
            self._count_sent(1)
        else:
            for identity in identities:
                await client.send(payload, destination, headers={**headers,
                                                                 "mc_identity": identity})
            self._count_sent(len(identities))
            if not identities:
                request.complete.set()
        try:  # directed: done once every node asked has answered
            async with asyncio.timeout(self.settings.timeout):
                await request.complete.wait()
        except TimeoutError:
            pass
        del self.open[request_id]
        self.closed.append(request_id)
        return request

    def _count_sent(self, count: int) -> None:
        self.sent += count
        if self.metrics is not None:
            self.metrics.mcollective_messages.labels("sent").inc(count)

    async def discover(self, client: stompman.Client) -> set[str]:
        """Ping the discovery agent with the filters (directed polls only: a broadcast
        poll reaches every matching node anyway); who answered within the timeout."""
        collective = self.settings.collective
        request = await self._ask(
            client, kind="discovery", agent="discovery", body=dumps("ping"),
            filter_=make_filter(facts=self.settings.facts_filter,
                                identities=self.settings.identities, agents=["rpcutil"]),
            destination=f"/topic/{collective}.discovery.agent", identities=None)
        return request.answered

    async def poll(self, client: stompman.Client) -> set[str]:
        """Ask the targets (or, broadcast, every matching node) for their facts."""
        collective = self.settings.collective
        body = rpc_body(agent="rpcutil", action=ACTION, data={"process_results": True},
                        caller=self.caller)
        if self.settings.poll == "broadcast":
            request = await self._ask(
                client, kind="poll", agent="rpcutil", body=body,
                filter_=make_filter(facts=self.settings.facts_filter,
                                    identities=self.settings.identities, agents=["rpcutil"]),
                destination=f"/topic/{collective}.rpcutil.agent", identities=None)
        else:
            request = await self._ask(
                client, kind="poll", agent="rpcutil", body=body,
                filter_=make_filter(agents=["rpcutil"]),
                destination=f"/queue/{collective}.nodes", identities=sorted(self.targets))
        return request.answered

    # -- rounds -----------------------------------------------------------------------
    async def refresh(self, client: stompman.Client, *, discover: bool) -> set[str]:
        """One round: discovery (when due), then the poll. The nodes that answered it."""
        if self.settings.poll == "directed" and (discover or not self.targets):
            self.targets.update(dict.fromkeys(await self.discover(client), self.clock.now()))
        answered = await self.poll(client)
        # A target silent for two discovery intervals is dropped (it goes stale meanwhile).
        cutoff = self.clock.now() - 2 * self.settings.discovery_interval
        for identity in [i for i, at in self.targets.items() if at < cutoff]:
            del self.targets[identity]
        self.rounds += 1
        if self.metrics is not None:
            self.metrics.mcollective_nodes.set(len(answered))
        return answered

    def _round_done(self) -> None:
        if self._round_after_connect:
            self._round_after_connect = False
            if self.lost_at is not None:
                self.fleet.await_fresh(self.lost_at)
                self._recovering = True
                self._check_recovered()
            else:
                self._set_up(True)
            self.caught_up.set()
        elif self._recovering:
            self._check_recovered()
        if self.on_facts is not None:
            self.on_facts()

    def _check_recovered(self) -> None:
        if self.fleet.recovered(self.clock.now()):
            self._recovering = False
            self._set_up(True)
            log.info("facts fresh again after the broker loss; scale-in unfrozen")
        if self.metrics is not None:
            self.metrics.fact_source_waiting.set(self.fleet.waiting_for)

    async def _rounds(self, client: stompman.Client, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        next_discovery = loop.time()
        while not stop.is_set():
            started = loop.time()
            due = started >= next_discovery
            if due:
                next_discovery = started + self.settings.discovery_interval
            await self.refresh(client, discover=due)
            self._round_done()
            spread = self.settings.jitter * self.settings.interval
            wait = self.settings.interval + self.rng.uniform(-spread, spread)
            await _sleep_or_stop(stop, max(0.0, wait - (loop.time() - started)))

    def client(self) -> stompman.Client:
        password = self.settings.secret()
        servers = [stompman.ConnectionParameters(
            host=host, port=port, login=self.settings.username or "",
            passcode=password.get_secret_value() if password is not None else "")
            for host, port in self.settings.servers()]
        beat = int(self.settings.heartbeat * 1000)
        return stompman.Client(
            servers, heartbeat=stompman.Heartbeat(beat, beat),
            ssl=tls_context(self.settings.tls) if self.settings.tls is not None else None,
            connect_retry_attempts=3, connect_retry_interval=1, connect_timeout=5,
            no_message_restart_interval=None,
            on_error_frame=lambda frame: log.warning("STOMP error frame",
                                                     message=frame.headers.get("message")),
            connection_class=watched_connection(self._connected, self._lost))

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected and poll until ``stop``; rebuild the client with back-off."""
        while not stop.is_set():
            try:
                async with self.client() as client:
                    subscription = await client.subscribe(
                        self.reply_to, self._on_frame, ack="auto",
                        on_suppressed_exception=lambda exc, _frame: log.warning(
                            "reply handler failed", error=repr(exc)[:200]))
                    log.info("connected to the MCollective broker", reply_to=self.reply_to,
                             brokers=self.settings.brokers)
                    self.connected.set()
                    self.backoff.reset()
                    try:
                        await self._rounds(client, stop)
                    finally:
                        self._stopping = stop.is_set()
                        # Unsubscribed, the client closes at once; if that fails, the
                        # error leaves the block (a clean exit would wait for it).
                        async with asyncio.timeout(5):
                            await subscription.unsubscribe()
            except (stompman.Error, OSError, TimeoutError, ExceptionGroup) as exc:
                log.warning("MCollective broker unreachable", error=repr(exc)[:300])
            finally:
                self.connected.clear()
                if not stop.is_set() and (self.fleet.source_up or self.caught_up.is_set()):
                    self._lost()
            if stop.is_set():
                break
            await _sleep_or_stop(stop, self.backoff.next())
        self._stopping = True

    async def forget_node(self, identity: str) -> None:
        """A retired node: forget its facts and stop asking it."""
        self.fleet.forget(identity)
        self.targets.pop(identity, None)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        async with asyncio.timeout(seconds):
            await stop.wait()
    except TimeoutError:
        pass


async def collect_mco_snapshot(settings: McollectiveSettings, *, stale_after: float,
                               wait: float) -> FleetSnapshot:
    """One MCollective round (discovery, poll), as a snapshot: ``gearshift plan``."""
    fleet = FleetModel(stale_after=stale_after)
    source = McoFactSource(settings, fleet)
    stop = asyncio.Event()
    task = asyncio.create_task(source.run(stop))
    try:
        async with asyncio.timeout(wait + 2 * settings.timeout + 10):
            await source.caught_up.wait()
    except TimeoutError:
        raise FactsUnavailable(f"no MCollective round completed through "
                               f"{', '.join(settings.brokers)}") from None
    finally:
        stop.set()
        await task
    return fleet.snapshot(time.time())
