"""The pure planner: ``plan(snapshot, policies, ...) -> Plan``. No I/O, no clock.

For each pool, highest priority first:

1. Finish or stop drains: retire a drained node once fresh facts show it empty; past its
   deadline, reactivate it (or, if the policy says so, retire it when no *active* gears
   are left).
2. Grow when the pool is below its (scheduled) floor, or under pressure: projected active
   density above the band, free slots below the headroom, a pending capacity request,
   or an extra signal above its threshold. Nodes on their way count as capacity, so a
   pool is never scaled twice for the same demand. Draining nodes are reactivated
   before new ones are made; the rest are placed by ``placement.place``.
   When the pool is full *now* (``urgency.full_at``), the nodes that relieve it go to the
   fastest placements first. When no placement has room left, nodes of lower-priority
   ``preemptible`` pools on a contested provider are drained to free their quota
   (``decide.preempt``).
3. Shrink only when every fact is fresh, nothing is booting, density has been below the
   band for the stabilisation window and both cooldowns have passed: drain the victims
   the strategy picks, never below the floor, never more than the drain budgets (pool and
   provider), never so many that the pool would breach its target or headroom.

Then, on the quota every pool left, burst-and-return (``decide.burst_return``) replaces
burst nodes on preferred placements, make-before-break.

Every action carries a reason with the figures behind it; drains and scale-outs carry
the candidates considered and why each was chosen or skipped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from gearshift.decide.budget import DrainBudget
from gearshift.decide.burst_return import plan_returns
from gearshift.decide.context import PlanContext, PoolReading
from gearshift.decide.drains import POINT_OF_NO_RETURN, finish_drains
from gearshift.decide.placement import PlacementResult, place
from gearshift.decide.pools import PoolView, read_fleet
from gearshift.decide.preempt import preempt
from gearshift.decide.schedules import scheduled_floor
from gearshift.decide.shrink import choose_drains, scale_in_blockers
from gearshift.decide.signals import read_signals
from gearshift.durations import format_duration
from gearshift.model import (
    Action,
    CancelDrain,
    Drain,
    FleetSnapshot,
    Plan,
    PlannerState,
    PoolEvaluation,
    PoolMemory,
    ProviderStatus,
    ScaleOut,
)
from gearshift.policy.schema import PolicySet, PoolPolicy, ProvidersFile

_NO_PROVIDERS = ProvidersFile.model_construct(api_version="gearshift/v1", kind="Providers",
                                               providers=[], blueprints=[])


@dataclass
class _Outcome:
    actions: list[Action]
    evaluation: PoolEvaluation
    memory: PoolMemory
    reading: PoolReading


def plan(snapshot: FleetSnapshot, policies: PolicySet, *, now: float,
         statuses: Mapping[str, ProviderStatus] | None = None,
         state: PlannerState | None = None,
         paused: frozenset[str] = frozenset()) -> Plan:
    """Decide what to do at ``now``; see the module docstring for the rules."""
    state = state or PlannerState()
    providers = policies.providers or _NO_PROVIDERS
    fleet = read_fleet(snapshot, policies.pools)
    views = fleet.views
    nodes_by_id = snapshot.by_id
    draining = {d.identity for d in snapshot.drains}
    ctx = PlanContext(
        snapshot=snapshot, providers=providers, statuses=statuses or {}, now=now,
        nodes_by_id=nodes_by_id, views=views, usage=fleet.usage,
        budget=DrainBudget(snapshot, nodes_by_id, providers),
        # A preemption is remembered while its drain runs (or was planned this instant).
        preemptions={i: p for i, p in state.preemptions.items() if i in draining or p.at >= now})
    actions: list[Action] = []
    evaluations: dict[str, PoolEvaluation] = {}
    memories: dict[str, PoolMemory] = dict(state.pools)
    readings: dict[str, PoolReading] = {}
    for policy in policies.pools:  # highest priority first: it claims contested quota first
        outcome = _plan_pool(views[policy.name], ctx=ctx, memory=state.pool(policy.name),
                             paused=policy.name in paused)
        actions.extend(outcome.actions)
        evaluation = outcome.evaluation
        reading = outcome.reading
        if reading.unplaced > 0 and not reading.paused:
            drains, notes = preempt(policy, ctx=ctx, pools=policies.pools,
                                    missing=reading.unplaced, why_missing=reading.unplaced_why,
                                    paused=paused)
            actions.extend(drains)
            if notes:
                evaluation = replace(evaluation,
                                     summary=f"{evaluation.summary}; preemption: {'; '.join(notes)}")
        evaluations[policy.name] = evaluation
        memories[policy.name] = outcome.memory
        readings[policy.name] = reading
    returns = dict(state.returns)
    for policy in policies.pools:  # what is left of the quota: cheaper fleets, highest first
        if policy.name in paused:
            continue
        extra, memory, notes = plan_returns(policy, ctx=ctx, reading=readings[policy.name],
                                            memory=memories[policy.name], returns=returns)
        actions.extend(extra)
        memories[policy.name] = memory
        if notes:
            evaluation = evaluations[policy.name]
            evaluations[policy.name] = replace(
                evaluation, summary=f"{evaluation.summary}; {'; '.join(notes)}")
    return Plan(at=now, actions=tuple(actions), pools=evaluations,
                state=PlannerState(pools=memories, preemptions=ctx.preemptions,
                                   returns=returns))


def _gears_per_node(view: PoolView, providers: ProvidersFile) -> int:
    """What one more node of this pool is expected to hold."""
    if view.active:
        return max(1, round(view.capacity_gears / len(view.active)))
    for placement in view.policy.placement:
        blueprint = providers.blueprint(placement.blueprint)
        if blueprint is not None:
            return blueprint.expected_max_active_gears
    return 60


def _fmt_density(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _placement_text(result: PlacementResult) -> str:
    parts = []
    for c in result.candidates:
        if c.chosen:
            burst = ", burst" if "burst" in c.note else ""
            probe = (f", {c.note[c.note.index('a probe'):].rstrip(')')}"
                     if "a probe" in c.note else "")
            parts.append(f"{c.provider} +{c.chosen} ({c.free} free{burst}{probe})")
        elif c.note != "not needed":
            parts.append(f"{c.provider} {c.note}")
    return "; ".join(parts)


def _urgent_gears(policy: PoolPolicy, *, demand: int, capacity_now: int) -> tuple[int, str]:
    """Slots needed *now* (the pool is full) and why; (0, '') when it is not urgent."""
    urgency = policy.urgency
    if not urgency.enabled or demand <= 0:
        return 0, ""
    if capacity_now > 0 and demand / capacity_now < urgency.full_at:
        return 0, ""
    gears = max(0, math.ceil(demand / policy.density.scale_up_above) - capacity_now)
    density = f"{demand / capacity_now:.2f}" if capacity_now else "n/a (no active node)"
    return gears, (f"urgent: the pool is full now (active density {density} >= "
                   f"{urgency.full_at:.2f}), {gears} slots needed now")


def _plan_pool(view: PoolView, *, ctx: PlanContext, memory: PoolMemory,
               paused: bool) -> _Outcome:
    policy = view.policy
    snapshot, now = ctx.snapshot, ctx.now
    band = policy.density
    name = policy.name
    floor, floor_why = scheduled_floor(policy, now)
    active_gears, capacity_now = view.active_gears, view.capacity_gears
    density = active_gears / capacity_now if capacity_now else None
    requested = sum(r.gears for r in snapshot.requests if r.pool == name and r.expires_at > now)
    demand = active_gears + view.draining_gears + requested
    capacity = capacity_now + view.booting_gears
    projected = demand / capacity if capacity else None
    want_gears = max(math.ceil(demand / band.target), demand + policy.headroom_gears)
    signals = read_signals(policy, snapshot, now)
    degraded = bool(view.unknown) or not snapshot.facts_fresh
    # Nodes another pool's preemption took from this one in this plan are leaving.
    size = view.size - ctx.disrupted[name]
    per_node = _gears_per_node(view, ctx.providers)

    figures = (f"{active_gears}/{capacity_now} active gears on {len(view.active)} active nodes"
               + (f", {len(view.pending)} booting (+{view.booting_gears} slots)" if view.pending else "")
               + (f", {requested} gears requested" if requested else "")
               + (f", {len(view.unknown)} unknown" if view.unknown else ""))

    actions, ended = ([], set()) if paused else finish_drains(view, ctx)
    ongoing_drains = [d for d in view.drains if d.identity not in ended]
    # A drain that ran out of time counts as a scale-down for the cooldown: the next try
    # waits, then the strategy picks the half-drained node again (it resumes) instead of
    # starting fresh drains whose gears would refill the node just reactivated.
    timed_out = any(isinstance(a, CancelDrain) for a in actions)

    # Evidence: do we know enough to act on density and headroom?
    evidence = bool(view.active) or bool(view.pending) or (not view.unknown and snapshot.facts_fresh)
    pressure: list[str] = []
    if evidence and projected is not None and projected > band.scale_up_above:
        pressure.append(f"projected density {projected:.2f} > {band.scale_up_above:.2f}")
    if evidence and capacity - demand < policy.headroom_gears:
        pressure.append(f"free slots {capacity - demand} < headroom {policy.headroom_gears}")
    pressure.extend(signals.up)
    high_since = (memory.high_since if memory.high_since is not None else now) if pressure else None
    stable_up = bool(pressure) and high_since is not None and \
        now - high_since >= policy.stabilization.up
    cooldown_up_left = (policy.cooldown.up - (now - memory.last_scale_up)
                        if memory.last_scale_up is not None else 0.0)
    floor_gap = max(0, floor - size)
    shortfall = max(want_gears - capacity, 1 if signals.up else 0) if pressure else 0
    # A spill round re-plans at the same instant after a provider refused part of a growth:
    # the nodes already made may end the pressure, but the growth decided is finished.
    spill_round = memory.last_scale_up == now and memory.growing_to is not None
    if spill_round and memory.growing_to is not None and capacity < memory.growing_to \
            and not paused:
        pressure.append(f"finishing the growth to {memory.growing_to} slots decided this "
                        f"reconcile (a provider refused part of it)")
        shortfall = max(shortfall, memory.growing_to - capacity)
        cooldown_up_left = 0.0
        stable_up = True

    notes: list[str] = []
    grew = shrank = unplaced = placed_gears = reactivated = 0
    unplaced_why = ""
    desired = size
    if paused:
        notes.append("paused: no actions")
    elif floor_gap > 0 or (stable_up and cooldown_up_left <= 0):
        trigger = "; ".join(
            ([f"{size} nodes < min {floor}" + (f" ({floor_why})" if floor_why else "")]
             if floor_gap else [])
            + (pressure if stable_up and cooldown_up_left <= 0 else []))
        room = max(0, min(policy.step.max_up, policy.size.max - size))
        if spill_round and memory.grown_from is not None:
            # The growth decided earlier at this instant counts against the same step.
            room = max(0, min(room, policy.step.max_up - max(0, size - memory.grown_from)))
        min_nodes = floor_gap
        gear_gap = shortfall if stable_up and cooldown_up_left <= 0 else 0
        # Reactivating a draining node beats provisioning a new one (but not a node drained
        # so that a higher-priority pool gets its quota).
        for drain in ongoing_drains:
            node = ctx.nodes_by_id.get(drain.identity)
            if room <= 0 or (min_nodes <= 0 and gear_gap <= 0) or node is None or node.facts is None:
                continue
            if drain.identity in ctx.preemptions or drain.phase in POINT_OF_NO_RETURN:
                continue
            actions.append(CancelDrain(pool=name, identity=drain.identity,
                                       reason=f"pool {name}: {trigger}; demand returned: "
                                              f"reactivating {drain.identity} beats provisioning"))
            ctx.budget.end(name, node.machine.provider if node.machine is not None else None)
            room -= 1
            min_nodes -= 1
            gear_gap -= node.facts.max_active_gears
            grew += 1
            reactivated += 1
        if min_nodes > 0 or gear_gap > 0:
            if room <= 0:
                notes.append(f"wanted more nodes but the pool is at max {policy.size.max}"
                             if size >= policy.size.max else "wanted more nodes; step limit reached")
            else:
                urgent, urgent_why = _urgent_gears(policy, demand=demand, capacity_now=capacity_now)
                result = place(policy, providers=ctx.providers, statuses=ctx.statuses,
                               usage=ctx.usage, min_nodes=max(min_nodes, 0),
                               shortfall_gears=max(gear_gap, 0), max_nodes=room, now=now,
                               urgent_gears=urgent)
                where = _placement_text(result)
                speed = (f"; {urgent_why}: {result.urgent_note}" if result.urgent_note else "")
                reason = (f"pool {name}: {trigger} ({figures}); want {want_gears} slots "
                          f"(target {band.target:.2f}, headroom {policy.headroom_gears}); "
                          f"+{result.nodes} nodes: {where}{speed}")
                for allocation in result.allocations:
                    actions.append(ScaleOut(pool=name, provider=allocation.provider,
                                            blueprint=allocation.blueprint, count=allocation.count,
                                            reason=reason, candidates=result.candidates))
                grew += result.nodes
                placed_gears += result.gears
                wanted = max(min_nodes, math.ceil(max(gear_gap, 0) / per_node))
                if result.nodes < min(wanted, room):
                    # A victim's node is a real loss: preemption takes what ends the
                    # pressure (under the scale-up edge, headroom kept, floor met), not
                    # what merely reaches the target - unless the pool is full now, when
                    # facts cannot show how much demand is being refused.
                    unplaced = min(wanted, room) - result.nodes
                    if not urgent:
                        after = capacity + result.gears
                        relief = max(math.ceil(demand / band.scale_up_above) - after,
                                     demand + policy.headroom_gears - after, 0)
                        unplaced = min(unplaced, max(min_nodes - result.nodes,
                                                     math.ceil(relief / per_node)))
                    unplaced_why = "; ".join(f"{c.provider} {c.note}" for c in result.candidates
                                             if not c.chosen) or where
                    notes.append(f"wanted +{min(wanted, room)} nodes, placed {result.nodes}: {where}")
        desired = size + grew
        notes.insert(0, f"growing: {trigger}")
    elif pressure:
        why = (f"cooldown up {format_duration(cooldown_up_left)} left" if cooldown_up_left > 0
               else f"stabilising up for {format_duration(policy.stabilization.up)}")
        notes.append(f"under pressure ({'; '.join(pressure)}) but holding: {why}")
        desired = min(policy.size.max, size + math.ceil(shortfall / per_node))

    low = (not pressure and projected is not None and projected < band.scale_down_below
           and not grew)
    low_since = (memory.low_since if memory.low_since is not None else now) if low else None
    if low and not paused:
        blockers = scale_in_blockers(view, policy, memory, signals, degraded=degraded,
                                      requested=requested, low_since=low_since or now, now=now,
                                      snapshot=snapshot)
        if timed_out:
            blockers.append(f"a drain just passed its deadline: cooldown down "
                            f"{format_duration(policy.cooldown.down)} first")
        if blockers:
            notes.append(f"density {_fmt_density(projected)} < {band.scale_down_below:.2f} "
                         f"but not shrinking: {'; '.join(blockers)}")
        else:
            drains = choose_drains(view, policy, ctx, want_gears=want_gears, floor=floor,
                                    size=size, ongoing=len(ongoing_drains))
            for node, candidates in drains:
                assert node.facts is not None
                actions.append(Drain(
                    pool=name, identity=node.identity, candidates=candidates,
                    reason=(f"pool {name}: projected density {_fmt_density(projected)} < "
                            f"{band.scale_down_below:.2f} for "
                            f"{format_duration(now - (low_since or now))} ({figures}); "
                            f"want {want_gears} slots; draining {node.identity} "
                            f"({node.facts.gears.total} gears, strategy "
                            f"{policy.scale_in.strategy})")))
            shrank = len(drains)
            desired = size - shrank
            if shrank:
                notes.append(f"shrinking: draining {shrank} node(s)")
            else:
                notes.append("low density, but no node can go without breaching "
                             "target, headroom, floor or drain budget")

    desired = max(floor, min(policy.size.max, desired))
    if not notes:
        notes.append(f"steady: density {_fmt_density(density)} within "
                     f"[{band.scale_down_below:.2f}, {band.scale_up_above:.2f}]")
    new_memory = replace(
        memory,
        # New nodes only: a reactivated node shows as draining until its next facts.
        growing_to=capacity + placed_gears if grew else memory.growing_to,
        grown_from=(memory.grown_from if spill_round and memory.grown_from is not None
                    else size - reactivated) if grew else memory.grown_from,
        last_scale_up=now if grew else memory.last_scale_up,
        last_scale_down=now if shrank or timed_out else memory.last_scale_down,
        low_since=low_since,
        high_since=high_since,
    )
    evaluation = PoolEvaluation(
        pool=name, active=len(view.active), booting=len(view.pending),
        draining=len(view.draining), unknown=len(view.unknown), active_gears=active_gears,
        capacity_gears=capacity_now, active_density=density, desired_nodes=desired,
        degraded=degraded, summary=f"{figures}; " + "; ".join(notes), paused=paused)
    reading = PoolReading(
        demand=demand, capacity_now=capacity_now, capacity=capacity, want_gears=want_gears,
        floor=floor, size=size, pressure=bool(pressure), degraded=degraded, paused=paused,
        grew=grew, shrank=shrank, unplaced=unplaced, unplaced_why=unplaced_why, figures=figures)
    return _Outcome(actions=actions, evaluation=evaluation, memory=new_memory, reading=reading)
