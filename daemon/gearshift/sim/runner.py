"""``gearshift simulate``: replay a demand trace against simulated providers, fast.

The real reconciler, planner, executor, guards, journal, recovery and leader lease run
unchanged, wired by the daemon's own composition root (``gearshift.assembly``): the run
takes the in-memory journal's lease, seeds the fleet, and recovers before its first
reconcile, as the daemon does on election. Only the world is simulated (``SimWorld``)
and time is a ``ManualClock`` stepped by ``tick``. Facts reach the fleet model
directly instead of over MQTT, and a pool crossing a policy edge wakes the reconciler at
once, as the daemon's event-driven path does.

Time moves on the ``tick`` grid but jumps over the steps where nothing can happen: when a
step changed nothing in the world, the next step that matters is the first one at or after
the next event (a trace point, a node booting, a gear move ending, the reconcile timer, a
timeline sample). The steps jumped over would have changed only the score, which is
added for them in one go (time-weighted sums, and the per-step violation counts times the
steps). Every node republishes its facts at every step (a heartbeat): touches are made in
one batch only when something reads the fleet, and only those a decision can tell from
the per-step ones (see ``_heartbeat``).

The run counts as it goes; ``sim.report`` turns the counts into the report (the contract in
ARCHITECTURE.md), and ``sim.seed`` gives the pools the nodes they start with.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import structlog

from gearshift.act.providers.guard import GuardedProvider, GuardSettings
from gearshift.assembly import assemble
from gearshift.clock import InstantClock
from gearshift.decide.forecast_need import slowest_time_to_ready
from gearshift.model import Drain, ScaleOut
from gearshift.observe.edges import EdgeWatch
from gearshift.observe.unplaced import parse_unplaced, record_unplaced
from gearshift.plan import Plan
from gearshift.policy.holder import PolicyHolder
from gearshift.policy.schema import PolicySet
from gearshift.reconcile.reconciler import provider_statuses
from gearshift.records import DemandSample
from gearshift.settings import ReconcileSettings, Settings
from gearshift.sim.broker_hook import SimBrokerHook
from gearshift.sim.providers import SimulatedPlatform, SimulatedProvider
from gearshift.sim.report import simulation_report
from gearshift.sim.seed import seed_fleet
from gearshift.sim.trace import Trace, demand_buckets, split_trace
from gearshift.sim.world import SimWorld
from gearshift.store.journal import MemoryJournal

log = structlog.get_logger(component="gearshift.sim")

# Monday 2026-11-23 00:00 UTC: traces start on a Monday so weekday schedules mean something.
DEFAULT_START = datetime(2026, 11, 23, tzinfo=UTC).timestamp()


@dataclass(frozen=True)
class SimOptions:
    seed: int = 0
    tick: float = 10.0
    interval: float = 30.0
    stale_after: float = 180.0
    start: float = DEFAULT_START
    duration: float | None = None  # default: the trace's last point + 1h
    move_time: float = 20.0
    move_failure_rate: float = 0.05
    samples: int = 2000  # timeline points kept for the plot
    # The trace's first this-many seconds are not simulated: they are the demand history
    # the journal holds when the run starts, so predictive scaling forecasts from it.
    warmup: float = 0.0
    # The broker-side hook reports the gears the broker could not place (off: the planner
    # sees only what fits, as without a hook).
    broker_hook: bool = True


@dataclass
class Sample:
    t: float
    pool: str
    demand: int
    capacity: int
    nodes: dict[str, int]
    # Predictive scaling's forecast (central, upper), made at ``t`` for ``t +
    # forecast_lead``: the pool's slowest time-to-ready, the lead the planner orders on.
    forecast: tuple[float, float] | None = None
    forecast_lead: float = 0.0


@dataclass
class SimulationResult:
    report: dict[str, Any]
    timeline: list[Sample] = field(default_factory=list)
    plans: int = 0


class Simulation:
    """One run: the world, the daemon's parts, and the score."""

    def __init__(self, policies: PolicySet, trace: Trace, options: SimOptions) -> None:
        if policies.providers is None:
            raise ValueError("simulate needs a Providers file")
        self.history: Trace | None = None
        if options.warmup > 0:
            if options.warmup >= trace.duration:
                raise ValueError(f"simulate: the warm-up ({options.warmup:g}s) leaves nothing "
                                 f"of the trace ({trace.duration:g}s) to simulate")
            self.history, trace = split_trace(trace, options.warmup)
            options = replace(options, start=options.start + options.warmup)
        self.policies = policies
        self.trace = trace
        self.options = options
        self.clock = InstantClock(start=options.start)
        self.world = SimWorld(seed=options.seed, start=options.start,
                              move_time=options.move_time,
                              move_failure_rate=options.move_failure_rate)
        rng = random.Random(options.seed + 1)
        guard = GuardSettings(call_timeout=60, retry_deadline=30, retry_initial=1, retry_max=5)
        self.providers = {
            spec.name: GuardedProvider(
                SimulatedProvider(spec, world=self.world, clock=self.clock, rng=rng),
                clock=self.clock, settings=guard, boot_time=spec.boot_time)
            for spec in policies.providers.providers}
        self.journal = MemoryJournal()
        ids = itertools.count(1)
        # The daemon's own composition, leader lease and recovery included; facts reach
        # the fleet model directly (no fact source), and nothing vouches (no task runs).
        self.parts = assemble(
            Settings(reconcile=ReconcileSettings(interval=options.interval,
                                                 stale_after=options.stale_after)),
            policies=PolicyHolder.fixed(policies), providers=self.providers,
            platform=SimulatedPlatform(self.world), journal=self.journal, clock=self.clock,
            vouch=False, new_id=lambda: f"{options.seed:08x}{next(ids):024x}")
        self.fleet = self.parts.fleet
        self.executor = self.parts.executor
        self.reconciler = self.parts.reconciler
        self.edges = EdgeWatch()
        self.hook = SimBrokerHook(self.world) if options.broker_hook else None
        self.breaches: dict[str, list[float]] = defaultdict(list)
        self.reactions: dict[str, list[float]] = defaultdict(list)
        self.max_nodes: Counter[str] = Counter()
        self.preemptions: Counter[tuple[str, str]] = Counter()  # (preempting, victim pool)
        self.burst_returns: Counter[str] = Counter()  # burst nodes a pool set out to replace
        self._heard_at: float | None = None  # when the nodes were last touched
        self._round_at: float | None = None  # when every ready node was last touched
        # Publishing and scoring depend only on the world's nodes and who is ready: while
        # its version is the same and no node boots, they repeat (world version, until).
        self._published: tuple[int, float] | None = None
        self._scored: tuple[int, float, tuple[int, int]] | None = None
        self.consolidations: Counter[str] = Counter()  # dearer nodes a pool set out to replace

    def _publish(self, now: float) -> bool:
        """Ingest the facts of every ready node whose facts changed (in the world's order)."""
        world = self.world
        if self._published is not None and self._published[0] == world.version \
                and now < self._published[1]:
            return False  # no node changed or booted since the last walk: none is dirty
        changed = False
        fleet = self.fleet
        for node in world.nodes.values():
            if node.dirty and node.powered and now >= node.ready_at:
                node.dirty = False
                fleet.ingest(node.facts(now), received_at=now)
                changed = True
        self._published = (world.version, self._until())
        return changed

    def _report_unplaced(self, now: float) -> bool:
        """The hook's reports, through the parser HTTP and MQTT use; True when one says
        gears are unplaced (a report over HTTP wakes the reconciler)."""
        if self.hook is None:
            return False
        pools = {p.name for p in self.policies.pools}
        wake = False
        for body in self.hook.due(now):
            report = parse_unplaced(body, pools=pools)
            record_unplaced(self.reconciler.requests, report, now=now)
            wake = wake or report.gears > 0
        return wake

    def _until(self) -> float:
        upcoming = self.world.next_event()
        return math.inf if upcoming is None else upcoming

    def _heartbeat(self, now: float) -> None:
        """Nodes re-publish unchanged facts: touch them, just before the fleet is read.

        The simulated agents publish at every step, and what the daemon decides reads
        ``last_seen`` only through two rules: a node silent longer than ``stale_after`` is
        unknown, and a drained node is retired only on facts newer than its drain's last
        step. So the touches that change nothing are skipped: every ready node is touched
        once more than ``stale_after - tick`` has passed since the last full round (none is
        ever silent for ``stale_after`` at a read, as before), and a node out of its district (being
        drained) at every read (its facts are as new as the read, as before). Fewer
        touched nodes means fewer ``Node`` records rebuilt per snapshot; the pinned
        reports (tests/test_simulate_golden.py) prove the decisions are the same.
        """
        if self._heard_at == now:
            return
        self._heard_at = now
        ready = self.world.ready_nodes()
        if self._round_at is None or (
                now - self._round_at > self.options.stale_after - self.options.tick):
            self._round_at = now
            self.fleet.touch_many([n.identity for n in ready], at=now)
        else:
            self.fleet.touch_many([n.identity for n in ready if not n.district_active], at=now)

    def _score(self, now: float) -> tuple[int, int]:
        """Score one step; returns the (above max, below min) counts it added."""
        violations = self.world.violations
        scored = self._scored
        if scored is not None and scored[0] == self.world.version and now < scored[1]:
            # Same nodes, gears and ready set as last time: the same counts, no breach
            # starts or ends, no new peak.
            violations.above_max += scored[2][0]
            violations.below_min += scored[2][1]
            return scored[2]
        above_max = below_min = 0
        for policy in self.policies.pools:
            every = self.world.pool_nodes(policy.name)
            self.max_nodes[policy.name] = max(self.max_nodes[policy.name], len(every))
            nodes = [n for n in every if n.district_active]
            if len(nodes) > policy.size.max:
                above_max += 1
            if len(nodes) < policy.size.min:
                below_min += 1
            capacity = active = 0
            for n in nodes:
                if n.powered and now >= n.ready_at:
                    capacity += n.max_active_gears
                    active += n.active
            above = capacity > 0 and active / capacity > policy.density.scale_up_above
            history = self.breaches[policy.name]
            if above and (not history or history[-1] < 0):
                history.append(now)  # a new breach starts
            elif not above and history and history[-1] >= 0:
                history.append(-now)  # the breach ended
        violations.above_max += above_max
        violations.below_min += below_min
        self._scored = (self.world.version, self._until(), (above_max, below_min))
        return above_max, below_min

    def _note_decisions(self, plan: Plan) -> None:
        for action in plan.actions:
            if isinstance(action, Drain) and action.preempted_by is not None:
                self.preemptions[(action.preempted_by, action.pool)] += 1
            elif isinstance(action, ScaleOut) and action.replaces:
                for identity in action.replaces:
                    swap = plan.state.returns.get(identity)
                    counter = (self.consolidations if swap is not None
                               and swap.cause == "consolidation" else self.burst_returns)
                    counter[action.pool] += 1

    def _note_reactions(self, plan: Plan, now: float) -> None:
        grown = {a.pool for a in plan.actions if a.kind in ("scale_out", "cancel_drain")}
        for pool in grown:
            history = self.breaches[pool]
            if history and history[-1] >= 0 and len(self.reactions[pool]) < sum(
                    1 for t in history if t >= 0):
                self.reactions[pool].append(now - history[-1])

    async def run(self) -> SimulationResult:
        options = self.options
        if not await self.parts.leadership.try_acquire():
            raise RuntimeError("simulate: the in-memory journal's lease is taken")
        if self.history is not None:  # the demand history the journal starts with
            await self.journal.record_demand([
                DemandSample(pool=pool, minute=minute, gears=gears)
                for pool, minute, gears in demand_buckets(
                    self.history, start=options.start - options.warmup, end=options.start)])
        await seed_fleet(self.world, self.journal, self.policies,
                         {p: self.trace.initial(p) for p in self.trace.pools}, start=options.start)
        end = options.start + (options.duration if options.duration is not None
                               else self.trace.duration + 3600)
        points = self.trace.points
        times = [options.start + p.t for p in points]
        applied = 0
        next_reconcile = options.start
        sample_every = max(options.tick, (end - options.start) / options.samples)
        next_sample = options.start
        result = SimulationResult(report={})
        steps = math.ceil((end - options.start) / options.tick)
        step = 0
        while step <= steps:
            now = options.start + step * options.tick
            self.clock.set(now)
            before = self.world.version
            upto = bisect.bisect_right(times, now)
            for point in points[applied:upto]:
                self.world.set_demand(point.pool, point.active_gears)
            applied = upto
            self.world.advance(now)
            changed = self._publish(now)
            crossed: list[str] = []
            if changed:
                self._heartbeat(now)
                crossed = self.edges.check(self.fleet, self.policies, now)
            reported = self._report_unplaced(now)
            counted = self._score(now)
            if step == 0:  # facts are in: recover and read the journal back, as on election
                self._heartbeat(now)
                await self.parts.take_office()
            if now >= next_reconcile or crossed or reported:
                self._heartbeat(now)
                plan = await self.reconciler.reconcile_once()
                result.plans += 1
                self._note_reactions(plan, now)
                self._note_decisions(plan)
                next_reconcile = now + options.interval
                if plan.actions:
                    self.world.advance(now)  # drains and reactivations change placement now
            if now >= next_sample:
                self._sample(result, now)
                next_sample = now + sample_every
            if self.world.version != before or step == steps:
                step += 1  # the world moved: the next step may move it again
                continue
            # Nothing changed: every step before the next event would score the same.
            events = [next_reconcile, next_sample, self.world.next_event(),
                      self.hook.next_due() if self.hook is not None else None]
            if applied < len(times):
                events.append(times[applied])
            following = min(steps, *(self._step_at(t) for t in events if t is not None))
            following = max(step + 1, following)
            skipped = following - step - 1
            self.world.violations.above_max += counted[0] * skipped
            self.world.violations.below_min += counted[1] * skipped
            step = following
        owned = set(await self.journal.machines())
        self.world.violations.leaked_nodes = sum(
            1 for n in self.world.nodes.values() if n.identity not in owned)
        result.report = simulation_report(
            world=self.world, policies=self.policies, counts=self.executor.counts,
            max_nodes=self.max_nodes, breaches=self.breaches, reactions=self.reactions,
            preemptions=self.preemptions, burst_returns=self.burst_returns,
            consolidations=self.consolidations, simulated_seconds=end - options.start,
            reconciles=result.plans, seed=options.seed,
            unplaced_reports=self.hook.reports if self.hook is not None else 0)
        return result

    def _step_at(self, t: float) -> int:
        """The first step whose time is at or after ``t`` (as ``now >= t`` compares)."""
        start, tick = self.options.start, self.options.tick
        step = max(0, math.ceil((t - start) / tick))
        while step > 0 and start + (step - 1) * tick >= t:
            step -= 1
        while start + step * tick < t:
            step += 1
        return step

    def _sample(self, result: SimulationResult, now: float) -> None:
        forecasts = {f.pool: f for f in self.parts.forecaster.forecasts()}
        statuses = provider_statuses(self.providers) if forecasts else {}
        assert self.policies.providers is not None  # checked in __init__
        for policy in self.policies.pools:
            made = forecasts.get(policy.name)
            # What the planner reads: the forecast for now + time-to-ready (forecast_need).
            lead = (slowest_time_to_ready(policy, self.policies.providers, statuses)
                    if made is not None else 0.0)
            upper = made.upper_at(now + lead) if made is not None else None
            capacity = 0
            by_provider: dict[str, int] = {}
            for n in self.world.pool_nodes(policy.name):
                by_provider[n.provider] = by_provider.get(n.provider, 0) + 1
                if n.district_active and n.powered and now >= n.ready_at:
                    capacity += n.max_active_gears
            result.timeline.append(Sample(
                t=now - self.options.start, pool=policy.name,
                demand=self.world.demand.get(policy.name, 0),
                capacity=capacity, nodes=by_provider,
                forecast=(made.point_at(now + lead) or 0.0, upper)
                if made is not None and upper is not None else None,
                forecast_lead=lead))
