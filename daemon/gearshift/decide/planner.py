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
from dataclasses import dataclass, field, replace

from gearshift.decide.budget import DrainBudget
from gearshift.decide.burst_return import plan_returns
from gearshift.decide.context import PlanContext, PoolReading
from gearshift.decide.placement import PlacementResult, place
from gearshift.decide.pools import PoolView, read_fleet
from gearshift.decide.preempt import preempt
from gearshift.decide.scale_in import scale_in_order
from gearshift.decide.schedules import scheduled_floor
from gearshift.durations import format_duration
from gearshift.model import (
    Action,
    CancelDrain,
    Drain,
    FleetSnapshot,
    Node,
    NodeCandidate,
    NodeState,
    Plan,
    PlannerState,
    PoolEvaluation,
    PoolMemory,
    ProviderStatus,
    Retire,
    ScaleOut,
)
from gearshift.policy.schema import PolicySet, PoolPolicy, ProvidersFile
from gearshift.records import Phase

_NO_PROVIDERS = ProvidersFile.model_construct(api_version="gearshift/v1", kind="Providers",
                                               providers=[], blueprints=[])


@dataclass
class _Signals:
    """What a pool's extra signals say right now."""

    up: list[str] = field(default_factory=list)  # signals asking for more nodes
    block_down: list[str] = field(default_factory=list)  # signals forbidding scale-in


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


def _read_signals(policy: PoolPolicy, snapshot: FleetSnapshot, now: float) -> _Signals:
    result = _Signals()
    latest = {s.name: s for s in snapshot.signals if s.pool == policy.name}
    for spec in policy.signals:
        signal = latest.get(spec.name)
        fresh = (signal is not None and signal.value is not None and signal.observed_at is not None
                 and now - signal.observed_at <= spec.stale_after)
        if not fresh or signal is None or signal.value is None:
            if spec.on_error == "hold":
                result.block_down.append(f"signal {spec.name} unavailable (on_error: hold)")
            continue
        value = signal.value
        if spec.scale_up_above is not None and value > spec.scale_up_above:
            result.up.append(f"signal {spec.name} {value:g} > {spec.scale_up_above:g}")
        if spec.scale_down_below is not None and value >= spec.scale_down_below:
            result.block_down.append(f"signal {spec.name} {value:g} >= {spec.scale_down_below:g}")
    return result


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


# Drain phases past which a node is never reactivated: it is being taken out of its
# district (``removing``) or its machine destroyed (``retiring``); the retire only resumes.
POINT_OF_NO_RETURN = frozenset({Phase.REMOVING, Phase.RETIRING})


def _finish_drains(view: PoolView, ctx: PlanContext) -> tuple[list[Action], set[str]]:
    """Retire drained nodes; stop drains past their deadline. Returns the drains it ended."""
    policy = view.policy
    now = ctx.now
    actions: list[Action] = []
    ended: set[str] = set()
    for drain in view.drains:
        if drain.phase == Phase.RETIRING:
            continue  # out of its district, its machine being destroyed: the executor finishes
        node = ctx.nodes_by_id.get(drain.identity)
        facts = node.facts if node is not None and node.state is not NodeState.UNKNOWN else None
        machine = node.machine if node is not None else None
        why = _drain_purpose(drain.identity, ctx)
        if facts is not None and machine is not None and facts.gears.total == 0:
            actions.append(Retire(pool=policy.name, identity=drain.identity,
                                  provider=machine.provider, machine_id=machine.machine_id,
                                  reason=f"pool {policy.name}: {drain.identity} is drained "
                                         f"(0 gears left){why}; retiring its machine"))
            ended.add(drain.identity)
        elif now >= drain.deadline and drain.phase not in POINT_OF_NO_RETURN:
            ended.add(drain.identity)
            left = "unknown" if facts is None else str(facts.gears.total)
            overdue = f"drain of {drain.identity}{why} passed its deadline " \
                      f"({format_duration(policy.scale_in.drain_timeout)}) with {left} gears left"
            if (policy.scale_in.on_drain_timeout == "retire" and facts is not None
                    and machine is not None and facts.gears.active == 0):
                actions.append(Retire(pool=policy.name, identity=drain.identity,
                                      provider=machine.provider, machine_id=machine.machine_id,
                                      reason=f"pool {policy.name}: {overdue}, none active; "
                                             f"retiring anyway (on_drain_timeout: retire)"))
            else:
                actions.append(CancelDrain(pool=policy.name, identity=drain.identity,
                                           reason=f"pool {policy.name}: {overdue}; reactivating"))
        if drain.identity in ended:
            ctx.budget.end(policy.name, machine.provider if machine is not None else None)
    return actions, ended


def _drain_purpose(identity: str, ctx: PlanContext) -> str:
    """' (preempted by pool X)' for a preemption drain, else ''."""
    preemption = ctx.preemptions.get(identity)
    return f" (preempted by pool {preemption.by_pool})" if preemption is not None else ""


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
    signals = _read_signals(policy, snapshot, now)
    degraded = bool(view.unknown) or not snapshot.facts_fresh
    # Nodes another pool's preemption took from this one in this plan are leaving.
    size = view.size - ctx.disrupted[name]
    per_node = _gears_per_node(view, ctx.providers)

    figures = (f"{active_gears}/{capacity_now} active gears on {len(view.active)} active nodes"
               + (f", {len(view.pending)} booting (+{view.booting_gears} slots)" if view.pending else "")
               + (f", {requested} gears requested" if requested else "")
               + (f", {len(view.unknown)} unknown" if view.unknown else ""))

    actions, ended = ([], set()) if paused else _finish_drains(view, ctx)
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
        blockers = _scale_in_blockers(view, policy, memory, signals, degraded=degraded,
                                      requested=requested, low_since=low_since or now, now=now,
                                      snapshot=snapshot)
        if timed_out:
            blockers.append(f"a drain just passed its deadline: cooldown down "
                            f"{format_duration(policy.cooldown.down)} first")
        if blockers:
            notes.append(f"density {_fmt_density(projected)} < {band.scale_down_below:.2f} "
                         f"but not shrinking: {'; '.join(blockers)}")
        else:
            drains = _choose_drains(view, policy, ctx, want_gears=want_gears, floor=floor,
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


def _scale_in_blockers(view: PoolView, policy: PoolPolicy, memory: PoolMemory, signals: _Signals,
                       *, degraded: bool, requested: int, low_since: float, now: float,
                       snapshot: FleetSnapshot) -> list[str]:
    """Every reason scale-in must wait; empty when it may go ahead."""
    blockers = []
    if not snapshot.facts_fresh:
        blockers.append("facts are not fresh (fact source lost): scale-in frozen")
    elif degraded:
        blockers.append(f"{len(view.unknown)} node(s) unknown: scale-in frozen")
    if view.pending:
        blockers.append(f"{len(view.pending)} node(s) still booting")
    if requested:
        blockers.append(f"{requested} gears of capacity requests pending")
    blockers.extend(signals.block_down)
    waited = now - low_since
    if waited < policy.stabilization.down:
        blockers.append(f"low for {format_duration(waited)} of "
                        f"{format_duration(policy.stabilization.down)} stabilisation")
    last = max((t for t in (memory.last_scale_up, memory.last_scale_down) if t is not None),
               default=None)
    if last is not None and now - last < policy.cooldown.down:
        blockers.append(f"cooldown down {format_duration(policy.cooldown.down - (now - last))} left")
    return blockers


SHOWN_CANDIDATES = 20  # a drain's explanation lists this many of the nodes weighed


def _choose_drains(view: PoolView, policy: PoolPolicy, ctx: PlanContext, *, want_gears: int,
                   floor: int, size: int, ongoing: int
                   ) -> list[tuple[Node, tuple[NodeCandidate, ...]]]:
    """Scale-in victims, each with every node considered and why it was or was not taken."""
    budget = min(policy.step.max_down, policy.scale_in.max_concurrent_drains - ongoing,
                 size - floor)
    remaining = view.capacity_gears
    chosen: list[Node] = []
    considered: list[NodeCandidate] = []
    for node in scale_in_order(policy, view.active, ctx.providers):
        assert node.facts is not None and node.machine is not None
        if len(chosen) >= budget and len(considered) >= SHOWN_CANDIDATES:
            break  # every node after this one is skipped for the budget, and not shown
        provider = node.machine.provider
        order = f"{node.facts.gears.total} gears, {provider}"
        if node.identity in ctx.taken:
            considered.append(NodeCandidate(node.identity, provider, False,
                                            "skipped: already drained by another action"))
            continue
        if len(chosen) >= budget:
            considered.append(NodeCandidate(
                node.identity, provider, False,
                f"skipped: step/drain budget ({max(budget, 0)}) or floor {floor} reached"))
            continue
        if remaining - node.facts.max_active_gears < want_gears:
            considered.append(NodeCandidate(
                node.identity, provider, False,
                f"skipped: would leave {remaining - node.facts.max_active_gears} < "
                f"{want_gears} slots wanted"))
            continue
        blocked = ctx.budget.allows(policy, provider)
        if blocked is not None:
            considered.append(NodeCandidate(node.identity, provider, False, f"skipped: {blocked}"))
            continue
        considered.append(NodeCandidate(node.identity, provider, True,
                                        f"chosen: {policy.scale_in.strategy} ({order})"))
        chosen.append(node)
        ctx.budget.take(policy.name, provider)
        ctx.taken.add(node.identity)
        remaining -= node.facts.max_active_gears
    shown = tuple(considered[:SHOWN_CANDIDATES])
    return [(node, shown) for node in chosen]
