"""The control loop: wake, snapshot, plan, act, record. One evaluation at a time.

It wakes on a timer, on ``wake()`` (a fact that crossed a policy edge, a capacity request,
a policy reload) and runs one ``reconcile_once``:

1. push in-flight operations forward (registrations, gear moves, provisioning timeouts);
2. take a snapshot (fleet facts joined with the journal, requests and signals);
3. ``decide.plan`` it; carry the plan out;
4. when a provider answered "no quota" or "no capacity", re-plan at once (up to
   ``spill_rounds`` times) so the remaining nodes go to the next placement in this
   reconcile, not the next one;
5. export metrics: counters and timings at once, the pools and the fleet as of the last
   reconcile when ``/metrics`` is scraped (at 10k nodes and 100 pools recording them cost
   as much as the plan; a fact-driven daemon reconciles far more often than it is scraped).

A failing reconcile is logged and counted; the loop goes on.

What must survive a restart or a failover is in the journal, and ``restore`` reads it
back when an instance becomes leader: the pools an operator paused (``pause`` and
``resume`` write them before the set in memory changes) and the preemptions whose
victims are still draining (the planner's memory of them would otherwise start empty,
and the preempting pool preempt again).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import replace
from functools import partial

import structlog

from gearshift import decide
from gearshift.act.executor import Executor, ExecutorSettings
from gearshift.act.providers.guard import GuardedProvider
from gearshift.clock import Clock
from gearshift.forecast.result import Forecast
from gearshift.metrics import Metrics
from gearshift.model import (
    FleetSnapshot,
    Node,
    ProviderStatus,
    ScaleOut,
    Signal,
)
from gearshift.observe.fleet import FleetModel
from gearshift.observe.requests import RequestBook
from gearshift.plan import Plan, PlannerState, PoolEvaluation
from gearshift.policy.holder import PolicyHolder
from gearshift.records import (
    Journal,
    Operation,
    Phase,
    drains_in_flight,
    parked_machines,
    pending_nodes,
    preemptions_in_flight,
)

log = structlog.get_logger(component="gearshift.reconcile")


def _merge_growth(first: PlannerState, later: PlannerState) -> PlannerState:
    """Keep the scale-up times of an earlier round when a spill round re-planned."""
    pools = dict(later.pools)
    for name, memory in first.pools.items():
        if name in pools and memory.last_scale_up is not None:
            current = pools[name].last_scale_up
            if current is None or memory.last_scale_up > current:
                pools[name] = replace(pools[name], last_scale_up=memory.last_scale_up)
    return replace(later, pools=pools)


def provider_statuses(providers: Mapping[str, GuardedProvider]) -> dict[str, ProviderStatus]:
    """Each provider's status, with when it last refused capacity (placement demotes it
    for its ``capacity_error_penalty`` after that, even once its back-off is over)."""
    statuses = {}
    for name, provider in providers.items():
        status = provider.status()
        backoff = provider.backoff
        if backoff is not None:
            status = replace(status, capacity_error=backoff.reason or None,
                             capacity_error_at=backoff.since)
        statuses[name] = status
    return statuses


def plan_in_flight(ops: Iterable[Operation], snapshot: FleetSnapshot, *, now: float,
                   providers: Mapping[str, GuardedProvider], settings: ExecutorSettings,
                   skip: Callable[[str], bool] = lambda _: False) -> decide.InFlightPlan:
    """Creates that never came up and destroys that failed: what the planner makes of
    them (``decide.in_flight``). ``skip``: creates not to consider (about to register)."""
    nodes = snapshot.by_id
    creates = [decide.CreateInFlight(
        op_id=o.op_id, identity=o.identity, pool=o.pool, provider=o.provider or "",
        machine_id=o.machine_id, started_at=o.started_at, abandoning=o.phase == Phase.ABANDONING,
        active_gears=_active_gears(nodes.get(o.identity)))
        for o in ops if o.kind == "create" and o.phase in (Phase.CREATED, Phase.ABANDONING)
        and not (o.phase == Phase.CREATED and skip(o.identity))]
    retires = [decide.RetireInFlight(op_id=o.op_id, identity=o.identity, pool=o.pool,
                              provider=o.provider or "", machine_id=o.machine_id)
               for o in ops if o.kind == "drain" and o.phase == Phase.RETIRING]
    return decide.plan_in_flight(
        creates=creates, retires=retires, statuses=provider_statuses(providers), now=now,
        facts_fresh=snapshot.facts_fresh,
        timeouts=decide.ProvisioningTimeouts(factor=settings.provisioning_timeout_factor,
                                             minimum=settings.min_provisioning_timeout))


def _same_snapshot(a: FleetSnapshot, b: FleetSnapshot) -> bool:
    """Do two snapshots show the same fleet? (The fleet model hands out the same tuple of
    nodes while none changed; the rest is a few journal rows.)"""
    return (a.taken_at == b.taken_at and a.nodes is b.nodes and a.facts_fresh == b.facts_fresh
            and a.pending == b.pending and a.drains == b.drains and a.requests == b.requests
            and a.parked == b.parked
            and a.signals == b.signals and a.forecasts == b.forecasts)


def _active_gears(node: Node | None) -> int:
    return node.facts.gears.active if node is not None and node.facts is not None else 0


class Reconciler:
    def __init__(self, *, fleet: FleetModel, policies: PolicyHolder, executor: Executor,
                 journal: Journal, providers: Mapping[str, GuardedProvider], clock: Clock,
                 interval: float, metrics: Metrics | None = None,
                 requests: RequestBook | None = None,
                 signals: Callable[[], list[Signal]] | None = None,
                 spill_rounds: int = 3) -> None:
        self.fleet = fleet
        self.policies = policies
        self.executor = executor
        self.journal = journal
        self.providers = providers
        self.clock = clock
        self.interval = interval
        self.metrics = metrics
        # What the gauges were last set from (skip the refresh when a scrape sees the same).
        self._exported: tuple[FleetSnapshot | None, Mapping[str, PoolEvaluation]] | None = None
        if metrics is not None:
            metrics.on_scrape.append(self._record_metrics)
        self.requests = requests or RequestBook()
        self.signals = signals
        self.spill_rounds = spill_rounds
        self.state = PlannerState()
        self.paused: set[str] = set()
        self.last_plan: Plan | None = None
        self._last_pools: Mapping[str, PoolEvaluation] | None = {}
        self._pools_after: Callable[[], Plan] | None = None  # makes them when first read
        self._pools_before: Mapping[str, PoolEvaluation] = {}  # the acting plan's, if that fails
        self.last_snapshot: FleetSnapshot | None = None
        self._taken: FleetSnapshot | None = None  # the last snapshot taken (see ``snapshot``)
        self.last_success: float | None = None
        self.reconciles = 0
        self._wake = asyncio.Event()
        self.on_reconciled: list[Callable[[Plan], Awaitable[None] | None]] = []
        # Liveness: the loop itself calls ``beat()`` after every reconcile and at least every
        # ``heartbeat_every`` seconds while it waits, so a hung loop stops beating (and the
        # systemd watchdog, fed from ``on_heartbeat``, restarts the daemon).
        self.heartbeat_every: float | None = None
        self.on_heartbeat: list[Callable[[], object]] = []
        self.last_heartbeat: float | None = None
        # Run before every reconcile, never during one (recovery sweeps).
        self.before: list[Callable[[], Awaitable[object]]] = []
        # Run when taking office, after the journal is read back (demand history).
        self.on_restore: list[Callable[[], Awaitable[object]]] = []
        # Each pool's demand forecast, handed to the planner with the snapshot.
        self.forecasts: Callable[[], tuple[Forecast, ...]] | None = None

    @property
    def last_pools(self) -> Mapping[str, PoolEvaluation]:
        """Each pool's evaluation after the last reconcile's actions."""
        if self._last_pools is None:
            assert self._pools_after is not None
            make, self._pools_after = self._pools_after, None
            try:
                self._last_pools = make().pools
            except Exception:  # status is worth less than going on: show the plan before
                log.exception("the plan of the fleet after the last actions failed; showing "
                              "the pools as they were planned")
                self._last_pools = self._pools_before
        return self._last_pools

    @last_pools.setter
    def last_pools(self, pools: Mapping[str, PoolEvaluation]) -> None:
        self._last_pools, self._pools_after = pools, None

    def _record_metrics(self) -> None:
        """On scrape: the pools as last evaluated (by a reconcile, or a follower's
        read-only plan) and the fleet as last seen, into the gauges; nothing when a scrape
        finds both as the last one did."""
        if self.metrics is None:
            return
        snapshot, pools = self._taken, self.last_pools
        if self._exported is not None and self._exported[0] is snapshot \
                and self._exported[1] is pools:
            return
        policies = self.policies.current
        if snapshot is not None:
            self.metrics.record_fleet(snapshot, pools=[p.name for p in policies.pools],
                                      providers=list(self.providers))
        self.metrics.record_pools(
            pools, limits={p.name: (p.size.min, p.size.max) for p in policies.pools},
            bands={p.name: (p.density.scale_up_above, p.density.target,
                            p.density.scale_down_below) for p in policies.pools})
        self._exported = (snapshot, pools)

    def wake(self, reason: str = "") -> None:
        """Run a reconcile as soon as possible."""
        if not self._wake.is_set():
            log.debug("wake", reason=reason)
        self._wake.set()

    async def restore(self) -> None:
        """Read back what the journal remembers for a new leader (see the module docstring)."""
        await self.load_paused()
        restored = preemptions_in_flight(await self.journal.open_operations())
        self.state = replace(self.state, preemptions={**self.state.preemptions, **restored})
        for hook in self.on_restore:
            await hook()

    async def load_paused(self) -> None:
        """The paused pools as the journal has them (a follower shows the leader's)."""
        paused = await self.journal.paused_pools()
        self.paused.clear()
        self.paused.update(paused)

    async def pause(self, pool: str) -> None:
        """Hands off ``pool`` until resumed; journaled first, so it outlives a restart."""
        await self.journal.pause_pool(pool, at=self.clock.now())
        self.paused.add(pool)

    async def resume(self, pool: str) -> None:
        await self.journal.resume_pool(pool)
        self.paused.discard(pool)
        self.wake("pool resumed")

    async def snapshot(self, now: float | None = None) -> FleetSnapshot:
        """The fleet at ``now`` (default: the clock's); the previous snapshot itself when
        nothing it shows has changed (a reconcile looks again, at its own instant, after
        pushing operations forward, and usually nothing moved: the plan then reads the
        snapshot those steps read, its index of nodes included)."""
        now = self.clock.now() if now is None else now
        ops = await self.journal.open_operations()
        taken = self.fleet.snapshot(
            now, machines=await self.journal.machines(), pending=pending_nodes(ops),
            drains=drains_in_flight(ops), requests=self.requests.active(now),
            signals=self.signals() if self.signals else (), parked=parked_machines(ops),
            forecasts=self.forecasts() if self.forecasts else ())
        last = self._taken
        if last is not None and _same_snapshot(last, taken):
            return last
        self._taken = taken
        return taken

    async def dry_run(self) -> Plan:
        """What the planner would do now, without doing it."""
        snapshot = await self.snapshot()
        now = snapshot.taken_at
        in_flight = await self._plan_in_flight(
            snapshot, now=now, skip=lambda i: self.fleet.is_fresh(i, now))  # they register first
        plan = decide.plan(snapshot, self.policies.current, now=now,
                           statuses=provider_statuses(self.providers),
                           state=self.state, paused=frozenset(self.paused))
        return replace(plan, actions=in_flight.actions + plan.actions)

    async def _plan_in_flight(self, snapshot: FleetSnapshot, *, now: float,
                              skip: Callable[[str], bool] = lambda _: False
                              ) -> decide.InFlightPlan:
        return plan_in_flight(await self.journal.open_operations(), snapshot, now=now,
                              providers=self.providers, settings=self.executor.settings,
                              skip=skip)

    async def reconcile_once(self) -> Plan:
        started = time.perf_counter()
        for hook in self.before:
            await hook()
        policies = self.policies.current
        now = self.clock.now()
        snapshot = await self.snapshot(now)
        await self.executor.progress(snapshot, lambda i: self.fleet.is_fresh(i, now),
                                     policies=policies)
        in_flight = await self._plan_in_flight(snapshot, now=now)
        for identity in in_flight.held:
            log.warning("a new node never became fresh but reports active gears: "
                        "not retiring it", node=identity)
        if in_flight.actions:
            await self.executor.execute(
                Plan(at=now, actions=in_flight.actions, pools={}, state=self.state),
                snapshot, policies)
        start_state = self.state
        state = start_state
        plan: Plan | None = None
        for round_ in range(self.spill_rounds):
            # Round 0 plans on the snapshot taken above unless pushing operations forward
            # changed what it shows: one snapshot, one plan on the way to a create call.
            snapshot = await self.snapshot(now if round_ == 0 else None)
            statuses = provider_statuses(self.providers)
            # A spill round plans on from the earlier round's memory: the growth it decided
            # (which the planner finishes at the same instant, cooldown or not), the
            # preemptions and burst-and-return swaps it started.
            candidate = decide.plan(snapshot, policies, now=now, statuses=statuses,
                                    state=start_state if round_ == 0 else state,
                                    paused=frozenset(self.paused))
            if round_ > 0:
                # Spill rounds only place what the first round could not: no second drain.
                candidate = replace(candidate, actions=tuple(
                    a for a in candidate.actions if isinstance(a, ScaleOut)))
                state = _merge_growth(state, candidate.state)
            else:
                state = candidate.state
            plan = candidate if plan is None else replace(
                candidate, actions=plan.actions + candidate.actions)
            report = await self.executor.execute(candidate, snapshot, policies)
            if not report.spill:
                break
            log.info("provider out of quota or capacity: re-planning to spill over",
                     round=round_ + 1)
        assert plan is not None
        self.state = state
        changed = bool(plan.actions)
        plan = replace(plan, state=state, actions=in_flight.actions + plan.actions)
        if changed:
            # Status and metrics show the fleet after the actions (nodes now booting or
            # draining), not the reading that led to them: a second plan, once every
            # action is dispatched, so it never delays a create call; made when first
            # read (by /v1/status or a scrape; ``simulate`` never reads it).
            snapshot = await self.snapshot()
            self._pools_before = plan.pools
            self._last_pools, self._pools_after = None, partial(
                decide.plan, snapshot, policies, now=now,
                statuses=provider_statuses(self.providers), state=state,
                paused=frozenset(self.paused))
        else:
            self.last_pools = plan.pools
        self.last_plan = plan
        self.last_snapshot = snapshot
        self.last_success = now
        self.reconciles += 1
        if self.metrics is not None:
            self.metrics.reconcile_seconds.observe(time.perf_counter() - started)
            self.metrics.reconciles.labels("ok").inc()
            self.metrics.last_success.set(now)
        for callback in self.on_reconciled:
            result = callback(plan)
            if result is not None:
                await result
        return plan

    def beat(self) -> None:
        """The loop is alive: record it and tell whoever listens (the systemd watchdog)."""
        self.last_heartbeat = self.clock.now()
        if self.metrics is not None:
            self.metrics.loop_heartbeat.set(self.last_heartbeat)
        for callback in self.on_heartbeat:
            callback()

    async def idle(self, seconds: float) -> None:
        """Wait for a wake-up or ``seconds``, beating every ``heartbeat_every`` meanwhile."""
        deadline = self.clock.now() + seconds
        while True:
            remaining = deadline - self.clock.now()
            if remaining <= 0:
                return
            step = remaining if not self.heartbeat_every else min(remaining,
                                                                  self.heartbeat_every)
            if await self.clock.wait_for(self._wake, step):
                return
            self.beat()

    async def run(self, stop: asyncio.Event) -> None:
        """Reconcile on every wake-up or timer tick until ``stop`` is set."""

        async def relay_stop() -> None:
            await stop.wait()
            self._wake.set()

        relay = asyncio.create_task(relay_stop())
        try:
            while not stop.is_set():
                try:
                    await self.reconcile_once()
                except Exception:
                    log.exception("reconcile failed; the loop goes on")
                    if self.metrics is not None:
                        self.metrics.reconciles.labels("error").inc()
                self.beat()  # a failed reconcile still proves the loop runs; a hung one won't
                if stop.is_set():
                    break
                await self.idle(self.interval)
                self._wake.clear()
        finally:
            relay.cancel()
