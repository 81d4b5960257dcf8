"""What a trace could have cost at best, and how little demand it had to leave unmet.

``gearshift simulate`` says what a policy cost and how many gear-seconds it left unmet,
not how far either is from what was possible. This module computes the two yardsticks
the simulator's figures are divided by (``bench/compare.py``), from the same policies,
providers and trace files ``gearshift simulate`` reads. Both are exact integrals over a
piecewise-constant timeline (no ticks), over the simulator's span: ``[0, duration]``
with ``duration`` the trace's last point + 1 h unless given, as ``SimOptions``.

**Sizing** (both): at every moment each pool holds the nodes it needs for its demand the
way the planner sizes a pool: enough slots for ``max(ceil(demand / density.target),
demand + headroom_gears)`` gears, at least ``size.min`` raised by any open schedule's
``min`` (the planner's own ``scheduled_floor``), at most ``size.max``. Whole nodes, each
placement within its ``max_nodes`` and its provider's quota (the real one:
``simulation.quota_max_nodes`` when lower), chosen for all pools together at every moment
(``allocate``, an integer program): every pool is served if the quotas allow it, however
the pools' placements overlap; if they do not, higher priorities are served first. A
pool's demand before its first trace point is that point's, as the simulator seeds it.
Pools in the trace but in no policy count as unmet.

**Clairvoyant bound** (cost): the cheapest nodes that serve every pool (burst-only
placements too; preference order breaks ties), there exactly while needed (no boot, no
drain), paid per node-second at the provider's ``cost_per_hour``. This is the simulator's
cost model: ``SimWorld`` charges every node that exists, per second (summed per tick),
``node_seconds / 3600 * cost_per_hour`` per provider, no rounding to whole hours. What
the bound does *not* pay and the simulator does: booting nodes, draining nodes, nodes kept
through ``stabilization.down`` and cooldowns. Not a strict lower bound: the density band
lets a pool sit between ``target`` and ``scale_up_above`` for free. ``cost / bound``
below 1 means the policy ran hotter than its target.

**Reactive floor** (unmet): an autoscaler that sees true demand the moment it changes,
orders at once on the fastest placements that serve every pool (the provider's
``simulation.boot_time`` or ``boot_time``, jitter ignored; then preference), releases
what it no longer needs at once, newest (still booting) nodes first, and whose nodes serve
``boot_time`` after the order; no limits but quotas and max. A placement's ready nodes at ``t`` are then the
least it held over ``[t - boot_time, t]``; the pool's starting fleet is ready at 0.
Unmet is ``max(0, demand - ready slots)``. A policy that keeps nodes after a drop pays
for them and can beat the floor on the next rise (``unmet / floor`` below 1); so can the
simulator's idle gears waking where they sleep, past a node's ``max_active_gears``.
Not modelled: provider errors, capacity errors, gear moves, reconcile interval and tick.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from gearshift.decide.schedules import scheduled_floor
from gearshift.policy.cron import parse_cron, parse_timezone
from gearshift.policy.schema import PolicySet, PoolPolicy, ProvidersFile, ProviderSpec
from gearshift.sim.runner import DEFAULT_START
from gearshift.sim.trace import Trace

Order = Literal["cheapest", "fastest"]


@dataclass(frozen=True)
class Slot:
    """One placement of one pool: what sizing, cost and boot need to know of it."""

    provider: str
    blueprint: str
    gears: int
    cost_per_hour: float
    boot_time: float
    max_nodes: int
    preference: int


@dataclass(frozen=True)
class Bound:
    cost: float
    node_seconds: dict[str, float]  # per provider, like the simulator's report
    cost_by_pool: dict[str, float]


@dataclass(frozen=True)
class Floor:
    unmet_gear_seconds: float
    by_pool: dict[str, float]


def effective_quotas(providers: ProvidersFile) -> dict[str, int]:
    """Each provider's quota as the simulated provider enforces it."""
    quotas: dict[str, int] = {}
    for spec in providers.providers:
        real = spec.simulation.quota_max_nodes if spec.simulation is not None else None
        quotas[spec.name] = spec.quota.max_nodes if real is None else min(spec.quota.max_nodes, real)
    return quotas


def boot_time(spec: ProviderSpec) -> float:
    sim = spec.simulation
    return sim.boot_time if sim is not None and sim.boot_time is not None else spec.boot_time


def slots(policy: PoolPolicy, providers: ProvidersFile, *, order: Order) -> list[Slot]:
    """The pool's placements, cheapest or fastest first, preference order breaking ties."""
    found: list[Slot] = []
    for index, placement in enumerate(policy.placement):
        spec = providers.provider(placement.provider)
        blueprint = providers.blueprint(placement.blueprint)
        if spec is None or blueprint is None:
            raise ValueError(f"pool {policy.name}: placement {index} names an unknown "
                             f"provider or blueprint")
        found.append(Slot(
            provider=spec.name, blueprint=blueprint.name,
            gears=blueprint.expected_max_active_gears, cost_per_hour=spec.cost_per_hour,
            boot_time=boot_time(spec), preference=index,
            max_nodes=spec.quota.max_nodes if placement.max_nodes is None else placement.max_nodes))
    if order == "cheapest":
        return sorted(found, key=lambda s: (s.cost_per_hour / s.gears, s.preference))
    return sorted(found, key=lambda s: (s.boot_time, s.preference))


def want_gears(policy: PoolPolicy, demand: int) -> int:
    """The slots the planner sizes a pool for (``decide.planner``: target and headroom)."""
    return max(math.ceil(demand / policy.density.target), demand + policy.headroom_gears)


def allocate(pools: Sequence[PoolPolicy], placements: Mapping[str, Sequence[Slot]], *,
             demand: Mapping[str, int], floors: Mapping[str, int], quotas: Mapping[str, int],
             order: Order) -> dict[str, tuple[int, ...]]:
    """Nodes per placement of every pool at one moment (``placements`` in ``order``).

    An integer program (scipy's ``milp``, HiGHS): whole nodes per placement, within each
    placement's ``max_nodes``, each provider's quota and each pool's ``size.max``; each
    pool's slots at least what it wants and its nodes at least its floor. When the quotas
    cannot serve every pool, the shortfall goes to the lowest priorities: priority level by
    level, highest first, each level's shortfall is made as small as it can be and then held.
    Of what is left, the cheapest nodes (``order="cheapest"``: cost per hour) or the fastest
    (``"fastest"``: boot time), the earlier placement in ``order`` breaking ties.
    """
    index = [(name, k, slot) for name in (p.name for p in pools)
             for k, slot in enumerate(placements[name])]
    count, size = len(index), len(index) + 2 * len(pools)  # nodes, short slots, short nodes
    rows: list[np.ndarray] = []
    low: list[float] = []
    high: list[float] = []
    upper = np.full(size, np.inf)
    for i, (_, _, slot) in enumerate(index):
        upper[i] = min(slot.max_nodes, quotas[slot.provider])
    for j, policy in enumerate(pools):
        mine = [i for i, (name, _, _) in enumerate(index) if name == policy.name]
        gears, nodes, cap = np.zeros(size), np.zeros(size), np.zeros(size)
        gears[mine] = [index[i][2].gears for i in mine]
        nodes[mine] = cap[mine] = 1
        gears[count + j] = 1  # slots it goes short of
        nodes[count + len(pools) + j] = 1  # nodes below its floor
        rows += [gears, nodes, cap]  # wanted slots, floor, size.max
        low += [want_gears(policy, demand.get(policy.name, 0)),
                floors.get(policy.name, policy.size.min), 0]
        high += [np.inf, np.inf, policy.size.max]
    for provider, quota in quotas.items():
        row = np.zeros(size)
        row[[i for i, (_, _, slot) in enumerate(index) if slot.provider == provider]] = 1
        rows.append(row)
        low.append(0)
        high.append(quota)
    constraints = LinearConstraint(np.array(rows), low, high)
    integral = np.r_[np.ones(count), np.zeros(size - count)]

    def solve(objective: np.ndarray) -> np.ndarray:
        found = milp(objective, constraints=constraints, integrality=integral,
                     bounds=Bounds(np.zeros(size), upper), options={"mip_rel_gap": 0})
        if found.x is None:
            raise RuntimeError(f"the bound's allocation has no solution: {found.message}")
        return np.asarray(found.x)

    short = np.zeros(size)
    short[count:] = 1
    if solve(short)[count:].sum() > 1e-6:  # the quotas cannot serve every pool
        for level in sorted({p.priority for p in pools}, reverse=True):
            mine = [j for j, p in enumerate(pools) if p.priority == level]
            objective = np.zeros(size)
            for j in mine:
                objective[count + j] = 1
                objective[count + len(pools) + j] = max(s.gears for s in placements[pools[j].name])
            held = solve(objective)
            for j in mine:
                for k in (count + j, count + len(pools) + j):
                    upper[k] = held[k] + 1e-6
    else:
        upper[count:] = 0
    objective = np.zeros(size)
    for i, (_, k, slot) in enumerate(index):  # ties: the earlier placement in order
        primary = slot.cost_per_hour * 1e4 if order == "cheapest" else slot.boot_time
        objective[i] = primary + k * 1e-3
    chosen = solve(objective)
    return {p.name: tuple(round(float(chosen[i])) for i, (name, _, _) in enumerate(index)
                          if name == p.name) for p in pools}


def schedule_edges(policy: PoolPolicy, *, start: float, end: float) -> list[float]:
    """Seconds from ``start`` at which one of the pool's schedules opens or closes."""
    edges: list[float] = []
    for schedule in policy.schedules:
        expr, zone = parse_cron(schedule.cron), parse_timezone(schedule.timezone)
        day = datetime.fromtimestamp(start - schedule.duration, UTC).astimezone(zone).date()
        last = datetime.fromtimestamp(end, UTC).astimezone(zone).date() + timedelta(days=1)
        day -= timedelta(days=1)
        while day <= last:
            if expr.matches_day(day):
                for hour in expr.hours:
                    for minute in expr.minutes:
                        fired = datetime(day.year, day.month, day.day, hour, minute,
                                         tzinfo=zone).timestamp()
                        edges += [fired - start, fired + schedule.duration - start]
            day += timedelta(days=1)
    return edges


@dataclass(frozen=True)
class Timeline:
    """Demand and held nodes on segments ``[edges[i], edges[i+1])``, the last up to ``end``."""

    pools: tuple[PoolPolicy, ...]
    placements: dict[str, list[Slot]]
    edges: list[float]
    end: float
    demand: list[dict[str, int]]
    held: list[dict[str, tuple[int, ...]]]

    def span(self, i: int) -> float:
        return (self.edges[i + 1] if i + 1 < len(self.edges) else self.end) - self.edges[i]


def timeline(policies: PolicySet, trace: Trace, *, order: Order, duration: float | None = None,
             start: float = DEFAULT_START) -> Timeline:
    if policies.providers is None:
        raise ValueError("the bound needs a Providers file")
    providers = policies.providers
    end = duration if duration is not None else trace.duration + 3600
    pools = tuple(sorted(policies.pools, key=lambda p: -p.priority))
    placements = {p.name: slots(p, providers, order=order) for p in pools}
    cuts = {p.t for p in trace.points}
    for policy in pools:
        cuts.update(schedule_edges(policy, start=start, end=start + end))
    edges = [0.0, *sorted(t for t in cuts if 0 < t < end)]
    series: dict[str, tuple[list[float], list[int]]] = {}
    for point in trace.points:
        times, values = series.setdefault(point.pool, ([], []))
        times.append(point.t)
        values.append(point.active_gears)
    demand: list[dict[str, int]] = []
    held: list[dict[str, tuple[int, ...]]] = []
    quotas = effective_quotas(providers)
    known: dict[tuple[tuple[tuple[str, int], ...], ...], dict[str, tuple[int, ...]]] = {}
    for i, at in enumerate(edges):
        now = {pool: values[max(0, bisect.bisect_right(times, at) - 1)]
               for pool, (times, values) in series.items()}
        middle = start + (at + (edges[i + 1] if i + 1 < len(edges) else end)) / 2
        floors = {p.name: scheduled_floor(p, middle)[0] for p in pools}
        demand.append(now)
        key = (tuple(sorted(now.items())), tuple(sorted(floors.items())))
        if key not in known:
            known[key] = allocate(pools, placements, demand=now, floors=floors,
                                  quotas=quotas, order=order)
        held.append(known[key])
    return Timeline(pools=pools, placements=placements, edges=edges, end=end, demand=demand,
                    held=held)


def clairvoyant_bound(policies: PolicySet, trace: Trace, *, duration: float | None = None,
                      start: float = DEFAULT_START) -> Bound:
    """The cost of holding exactly the nodes the demand needs, cheapest first, no boot."""
    line = timeline(policies, trace, order="cheapest", duration=duration, start=start)
    assert policies.providers is not None
    node_seconds = {spec.name: 0.0 for spec in policies.providers.providers}
    by_pool = {p.name: 0.0 for p in line.pools}
    for i in range(len(line.edges)):
        span = line.span(i)
        for policy in line.pools:
            for slot, count in zip(line.placements[policy.name], line.held[i][policy.name],
                                   strict=True):
                node_seconds[slot.provider] += count * span
                by_pool[policy.name] += count * span * slot.cost_per_hour / 3600
    rates = {spec.name: spec.cost_per_hour for spec in policies.providers.providers}
    return Bound(cost=sum(node_seconds[n] / 3600 * rates[n] for n in rates),
                 node_seconds=node_seconds, cost_by_pool=by_pool)


def _ready(line: Timeline, pool: str, *, at: float) -> int:
    """Slots of ``pool`` ready at ``at``: per placement, the least held over its boot time."""
    last = bisect.bisect_right(line.edges, at) - 1
    ready = 0
    for k, slot in enumerate(line.placements[pool]):
        first = max(0, bisect.bisect_right(line.edges, at - slot.boot_time) - 1)
        ready += min(line.held[i][pool][k] for i in range(first, last + 1)) * slot.gears
    return ready


def reactive_floor(policies: PolicySet, trace: Trace, *, duration: float | None = None,
                   start: float = DEFAULT_START) -> Floor:
    """The least unmet gear-seconds of an autoscaler that reacts at once but waits for boots."""
    line = timeline(policies, trace, order="fastest", duration=duration, start=start)
    boots = {s.boot_time for placed in line.placements.values() for s in placed}
    cuts = sorted({e + b for e in line.edges for b in (0.0, *boots) if e + b < line.end})
    known = {p.name for p in line.pools}
    by_pool = {name: 0.0 for name in sorted(known | trace.pools)}
    for i, at in enumerate(cuts):
        span = (cuts[i + 1] if i + 1 < len(cuts) else line.end) - at
        middle = at + span / 2
        wanted = line.demand[bisect.bisect_right(line.edges, middle) - 1]
        for pool in by_pool:
            ready = _ready(line, pool, at=middle) if pool in known else 0
            by_pool[pool] += max(0, wanted.get(pool, 0) - ready) * span
    return Floor(unmet_gear_seconds=sum(by_pool.values()), by_pool=by_pool)
