"""``gearshift simulate``: replay a demand trace against simulated providers, fast.

The real reconciler, planner, executor, guards, journal, recovery and leader lease run
unchanged, wired by the daemon's own composition root (``gearshift.assembly``): the run
takes the in-memory journal's lease, seeds the fleet, and recovers before its first
reconcile, as the daemon does on election. Only the world is simulated (``SimWorld``)
and time is a ``ManualClock`` stepped by ``tick``. Facts reach the fleet model
directly instead of over MQTT, and a pool crossing a policy edge wakes the reconciler at
once, as the daemon's event-driven path does.

The report is the contract in ARCHITECTURE.md (``unmet_gear_seconds``, ``node_seconds``,
``cost``, ``actions``, ``max_nodes``, ``violations``) plus figures that explain them.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from gearshift.act.providers.guard import GuardedProvider, GuardSettings
from gearshift.assembly import assemble
from gearshift.clock import InstantClock
from gearshift.model import Drain, Machine, Plan, ScaleOut
from gearshift.observe.edges import EdgeWatch
from gearshift.policy.holder import PolicyHolder
from gearshift.policy.schema import PolicySet, PoolPolicy
from gearshift.records import Journal
from gearshift.settings import ReconcileSettings, Settings
from gearshift.sim.providers import SimulatedPlatform, SimulatedProvider
from gearshift.sim.trace import Trace
from gearshift.sim.world import SimNode, SimWorld
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


@dataclass
class Sample:
    t: float
    pool: str
    demand: int
    capacity: int
    nodes: dict[str, int]


@dataclass
class SimulationResult:
    report: dict[str, Any]
    timeline: list[Sample] = field(default_factory=list)
    plans: int = 0


def _initial_nodes(policy: PoolPolicy, policies: PolicySet, demand: int) -> list[tuple[str, str]]:
    """(provider, blueprint) of the nodes a pool starts with: enough for its initial demand
    at the target density, at least ``min``, in placement order."""
    assert policies.providers is not None
    result: list[tuple[str, str]] = []
    gears = 0
    for placement in [p for p in policy.placement if not p.burst_only] or policy.placement:
        blueprint = policies.providers.blueprint(placement.blueprint)
        spec = policies.providers.provider(placement.provider)
        if blueprint is None or spec is None:
            continue
        room = min(spec.quota.max_nodes, placement.max_nodes or spec.quota.max_nodes)
        for _ in range(room):
            if len(result) >= policy.size.min and gears >= max(
                    demand / policy.density.target, demand + policy.headroom_gears):
                return result
            if len(result) >= policy.size.max:
                return result
            result.append((spec.name, blueprint.name))
            gears += blueprint.expected_max_active_gears
    return result


async def seed_fleet(world: SimWorld, journal: Journal, policies: PolicySet,
                     demand: dict[str, int], *, start: float) -> None:
    """Give every pool the nodes it starts with, ready at ``start`` and owned by us."""
    assert policies.providers is not None
    for policy in policies.pools:
        world.set_demand(policy.name, demand.get(policy.name, 0))
        for i, (provider, blueprint_name) in enumerate(
                _initial_nodes(policy, policies, demand.get(policy.name, 0))):
            blueprint = policies.providers.blueprint(blueprint_name)
            assert blueprint is not None
            node = SimNode(identity=f"{policy.name}-seed-{i}", pool=policy.name,
                           profile=blueprint.node_profile,
                           max_active_gears=blueprint.expected_max_active_gears,
                           provider=provider, machine_id=f"{provider}-seed-{policy.name}-{i}",
                           key=f"seed-{policy.name}-{i}", created_at=start - 86400,
                           ready_at=start)
            world.add_node(node)
            await journal.adopt(Machine(provider=provider, machine_id=node.machine_id,
                                        name=node.identity, blueprint=blueprint_name,
                                        pool=policy.name, created_at=node.created_at,
                                        key=node.key))


class Simulation:
    """One run: the world, the daemon's parts, and the score."""

    def __init__(self, policies: PolicySet, trace: Trace, options: SimOptions) -> None:
        if policies.providers is None:
            raise ValueError("simulate needs a Providers file")
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
        self.breaches: dict[str, list[float]] = defaultdict(list)
        self.reactions: dict[str, list[float]] = defaultdict(list)
        self.max_nodes: Counter[str] = Counter()
        self.preemptions: Counter[tuple[str, str]] = Counter()  # (preempting, victim pool)
        self.burst_returns: Counter[str] = Counter()  # burst nodes a pool set out to replace
        self.consolidations: Counter[str] = Counter()  # dearer nodes a pool set out to replace

    def _publish(self, now: float) -> bool:
        changed = False
        for node in self.world.ready_nodes():
            if node.dirty:
                node.dirty = False
                self.fleet.ingest(node.facts(now), received_at=now)
                changed = True
            else:
                self.fleet.touch(node.identity, at=now)
        return changed

    def _score(self, now: float) -> None:
        violations = self.world.violations
        for policy in self.policies.pools:
            every = self.world.pool_nodes(policy.name)
            self.max_nodes[policy.name] = max(self.max_nodes[policy.name], len(every))
            nodes = [n for n in every if n.district_active]
            if len(nodes) > policy.size.max:
                violations.above_max += 1
            if len(nodes) < policy.size.min:
                violations.below_min += 1
            ready = [n for n in nodes if n.ready(now)]
            capacity = sum(n.max_active_gears for n in ready)
            active = sum(n.active for n in ready)
            above = capacity > 0 and active / capacity > policy.density.scale_up_above
            history = self.breaches[policy.name]
            if above and (not history or history[-1] < 0):
                history.append(now)  # a new breach starts
            elif not above and history and history[-1] >= 0:
                history.append(-now)  # the breach ended

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
        for step in range(steps + 1):
            now = options.start + step * options.tick
            self.clock.set(now)
            upto = bisect.bisect_right(times, now)
            for point in points[applied:upto]:
                self.world.set_demand(point.pool, point.active_gears)
            applied = upto
            self.world.advance(now)
            changed = self._publish(now)
            crossed = self.edges.check(self.fleet, self.policies, now) if changed else []
            self._score(now)
            if step == 0:  # facts are in: recover and read the journal back, as on election
                await self.parts.take_office()
            if now >= next_reconcile or crossed:
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
        result.report = self._report(end, result.plans, set(await self.journal.machines()))
        return result

    def _sample(self, result: SimulationResult, now: float) -> None:
        for policy in self.policies.pools:
            nodes = self.world.pool_nodes(policy.name)
            ready = [n for n in nodes if n.ready(now) and n.district_active]
            by_provider = Counter(n.provider for n in nodes)
            result.timeline.append(Sample(
                t=now - self.options.start, pool=policy.name,
                demand=self.world.demand.get(policy.name, 0),
                capacity=sum(n.max_active_gears for n in ready), nodes=dict(by_provider)))

    def _report(self, end: float, plans: int, owned: set[str]) -> dict[str, Any]:
        assert self.policies.providers is not None
        leaked = [n for n in self.world.nodes.values() if n.identity not in owned]
        self.world.violations.leaked_nodes = len(leaked)
        counts = self.executor.counts
        actions = {k: counts[(k, "ok")] for k in ("scale_out", "drain", "cancel_drain", "retire")}
        failures = {f"{k}_{o}": n for (k, o), n in sorted(counts.items()) if o != "ok"}
        costs = {spec.name: spec.cost_per_hour for spec in self.policies.providers.providers}
        node_seconds = {name: round(self.world.node_seconds.get(name, 0.0), 1) for name in costs}
        max_nodes = {p.name: self.max_nodes[p.name] for p in self.policies.pools}
        reactions = {pool: {"breaches": sum(1 for t in self.breaches[pool] if t >= 0),
                            "max_seconds": max(values, default=None),
                            "all_seconds": values}
                     for pool, values in self.reactions.items()}
        return {
            "unmet_gear_seconds": round(sum(self.world.unmet_gear_seconds.values()), 1),
            "unmet_gear_seconds_by_pool": {p.name: round(self.world.unmet_gear_seconds.get(p.name, 0.0), 1)
                                           for p in self.policies.pools},
            "node_seconds": node_seconds,
            "cost": round(sum(node_seconds[n] / 3600 * costs[n] for n in costs), 2),
            "cost_by_provider": {n: round(node_seconds[n] / 3600 * costs[n], 2) for n in costs},
            "actions": actions,
            "failed_actions": failures,
            "max_nodes": max_nodes,
            "violations": self.world.violations.as_dict(),
            "breach_reactions": reactions,
            "gear_moves": dict(self.world.move_stats),
            # Drains planned to free quota for a higher-priority pool: {preempting: {victim: n}}
            "preemptions": {by: {victim: n for (b, victim), n in sorted(self.preemptions.items())
                                 if b == by}
                            for by in sorted({b for b, _ in self.preemptions})},
            # Burst nodes each pool set out to replace on a preferred placement.
            "burst_returns": dict(sorted(self.burst_returns.items())),
            # Nodes on dearer slots each pool set out to replace on a cheaper placement.
            "consolidations": dict(sorted(self.consolidations.items())),
            "simulated_seconds": end - self.options.start,
            "reconciles": plans,
            "seed": self.options.seed,
        }
