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
   Unplaced gears a broker-side hook reports count as demand, so one scale-out covers
   them (within ``step.max_up``, ``size.max`` and quotas). With no hook reporting, a pool
   full *now* (``urgency.full_at``) hides how much is refused: each time it is still full
   once the nodes of its last step are up, the step doubles; it resets once not full.
   When the pool is full now, the nodes that relieve it go to the placements ready within
   ``urgency.max_wait``, then to the fastest (``decide.placement``). When no placement
   has room left, nodes of lower-priority ``preemptible`` pools on a contested provider
   are drained to free their quota (``decide.preempt``).
3. Shrink only when every fact is fresh, nothing is booting, density has been below the
   band for the stabilisation window and both cooldowns have passed: drain the victims
   the strategy picks, never below the floor, never more than the drain budgets (pool and
   provider), never so many that the pool would breach its target or headroom.

Then, on the quota every pool left, swaps (``decide.consolidate``) replace burst nodes on
preferred placements (burst-and-return) and nodes on dearer slots on the pool's cheapest
placement with room (consolidation), make-before-break.

Every action carries a reason with the figures behind it; drains and scale-outs carry
the candidates considered and why each was chosen or skipped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from functools import partial
from typing import NamedTuple

from gearshift.decide.budget import DrainBudget
from gearshift.decide.consolidate import plan_swaps
from gearshift.decide.context import PlanContext, PoolReading
from gearshift.decide.drains import finish_drains
from gearshift.decide.forecast_need import ahead, slowest_time_to_ready
from gearshift.decide.grow import grow
from gearshift.decide.pools import PoolView, read_fleet
from gearshift.decide.preempt import preempt
from gearshift.decide.schedules import scheduled_floor
from gearshift.decide.shrink import fmt_density, shrink
from gearshift.decide.signals import read_signals
from gearshift.decide.warm import fill_warm_pools, tend_warm_pools
from gearshift.durations import format_duration
from gearshift.model import Action, CancelDrain, FleetSnapshot, ProviderStatus
from gearshift.plan import Plan, PlannerState, PoolEvaluation, PoolMemory
from gearshift.policy.schema import PolicySet, ProvidersFile

_NO_PROVIDERS = ProvidersFile.model_construct(api_version="gearshift/v1", kind="Providers",
                                               providers=[], blueprints=[])


class _Outcome(NamedTuple):
    actions: list[Action]
    evaluation: partial[PoolEvaluation]  # all but its summary: made once the notes are in
    summary: str
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
    for made in snapshot.parked:  # machines being made for a warm pool hold quota too
        if made.phase == "filling" and made.identity not in snapshot.by_id:
            fleet.usage.claim(made.pool, made.provider, 1)
    views = fleet.views
    nodes_by_id = snapshot.by_id
    draining = {d.identity for d in snapshot.drains}
    ctx = PlanContext(
        snapshot=snapshot, providers=providers, statuses=statuses or {}, now=now,
        nodes_by_id=nodes_by_id, views=views, usage=fleet.usage,
        budget=DrainBudget(snapshot, nodes_by_id, providers,
                           sizes={name: view.size for name, view in views.items()}),
        # A preemption is remembered while its drain runs (or was planned this instant).
        preemptions={i: p for i, p in state.preemptions.items() if i in draining or p.at >= now},
        cheapest_slots=policies.cheapest_slots)
    actions: list[Action] = []
    evaluations: dict[str, partial[PoolEvaluation]] = {}
    summaries: dict[str, str] = {}
    memories: dict[str, PoolMemory] = dict(state.pools)
    readings: dict[str, PoolReading] = {}
    for policy in policies.pools:  # highest priority first: it claims contested quota first
        outcome = _plan_pool(views[policy.name], ctx=ctx, memory=state.pool(policy.name),
                             paused=policy.name in paused)
        actions.extend(outcome.actions)
        summary = outcome.summary
        reading = outcome.reading
        if reading.unplaced > 0 and not reading.paused:
            drains, notes = preempt(policy, ctx=ctx, pools=policies.pools,
                                    missing=reading.unplaced, why_missing=reading.unplaced_why,
                                    paused=paused)
            actions.extend(drains)
            if notes:
                summary = f"{summary}; preemption: {'; '.join(notes)}"
        evaluations[policy.name] = outcome.evaluation
        summaries[policy.name] = summary
        memories[policy.name] = outcome.memory
        readings[policy.name] = reading
    returns = dict(state.returns)
    for policy in policies.pools:  # what is left of the quota: cheaper fleets, highest first
        if policy.name in paused:
            continue
        extra, memory, notes = plan_swaps(policy, ctx=ctx, reading=readings[policy.name],
                                          memory=memories[policy.name], returns=returns)
        actions.extend(extra)
        memories[policy.name] = memory
        if notes:
            summaries[policy.name] = f"{summaries[policy.name]}; {'; '.join(notes)}"
    return Plan(at=now, actions=tuple(actions),
                pools={name: make(summary=summaries[name]) for name, make in evaluations.items()},
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


def _plan_pool(view: PoolView, *, ctx: PlanContext, memory: PoolMemory,
               paused: bool) -> _Outcome:
    policy = view.policy
    snapshot, now = ctx.snapshot, ctx.now
    band = policy.density
    name = policy.name
    floor, floor_why = scheduled_floor(policy, now)
    active_gears, capacity_now = view.active_gears, view.capacity_gears
    density = active_gears / capacity_now if capacity_now else None
    requested = unplaced_reported = 0
    hook_reports = False  # a broker-side hook reports on this pool (0 included)
    for r in snapshot.requests:  # (usually none: the loop costs nothing then)
        if r.pool == name and r.expires_at > now:
            if r.unplaced:
                unplaced_reported += r.gears
                hook_reports = True
            else:
                requested += r.gears
    demand = active_gears + view.draining_gears + requested + unplaced_reported
    capacity = capacity_now + view.booting_gears
    projected = demand / capacity if capacity else None
    want_gears = max(math.ceil(demand / band.target), demand + policy.headroom_gears)
    signals = read_signals(policy, snapshot, now)
    degraded = bool(view.unknown) or not snapshot.facts_fresh
    # Nodes another pool's preemption took from this one in this plan are leaving.
    size = view.size - ctx.disrupted[name]
    per_node = _gears_per_node(view, ctx.providers)
    # Predictive scaling (decide.forecast_need): the need at the forecast for now +
    # time-to-ready raises the wanted slots; its peak within the horizon holds scale-in.
    pool_forecast = next((f for f in snapshot.forecasts if f.pool == name),
                         None) if snapshot.forecasts else None
    # (Read only for a pool with a forecast: the forecast's figures are None without one.)
    ready_in = (slowest_time_to_ready(
        policy, ctx.providers, ctx.statuses,
        parked={p.provider for p in snapshot.parked if p.pool == name and p.phase == "parked"})
        if pool_forecast is not None else 0.0)
    forecast = ahead(policy, pool_forecast, now=now, ready_in=ready_in, want_gears=want_gears,
                     capacity=capacity, per_node=per_node)
    if forecast.acting:
        want_gears = max(want_gears, forecast.want_gears)

    figures = (f"{active_gears}/{capacity_now} active gears on {len(view.active)} active nodes"
               + (f", {len(view.pending)} booting (+{view.booting_gears} slots)" if view.pending else "")
               + (f", {requested} gears requested" if requested else "")
               + (f", {unplaced_reported} unplaced reported by broker"
                  if unplaced_reported else "")
               + (f", {len(view.unknown)} unknown" if view.unknown else ""))

    # (Most pools have no drain in flight: nothing to finish, nothing ongoing.)
    actions, ended = ([], set()) if paused or not view.drains else finish_drains(view, ctx)
    ongoing_drains = [d for d in view.drains if d.identity not in ended] if view.drains else []
    # A drain that ran out of time counts as a scale-down for the cooldown: the next try
    # waits, then the strategy picks the half-drained node again (it resumes) instead of
    # starting fresh drains whose gears would refill the node just reactivated.
    timed_out = bool(actions) and any(isinstance(a, CancelDrain) for a in actions)
    warm = any(p.warm for p in policy.placement)
    if not paused and (snapshot.parked or warm):
        actions.extend(tend_warm_pools(policy, ctx=ctx))  # (a reactivation is no timeout)

    # Evidence: do we know enough to act on density and headroom?
    evidence = bool(view.active) or bool(view.pending) or (not view.unknown and snapshot.facts_fresh)
    pressure: list[str] = []
    if evidence and projected is not None and projected > band.scale_up_above:
        pressure.append(f"projected density {projected:.2f} > {band.scale_up_above:.2f} "
                        f"(with booting nodes)")
    if evidence and capacity - demand < policy.headroom_gears:
        pressure.append(f"free slots {capacity - demand} < headroom {policy.headroom_gears}")
    pressure.extend(signals.up)
    if forecast.up:
        pressure.append(forecast.up)
    # Full now, nothing on its way and no broker saying how much it refuses: the last
    # step was not enough, so double it. (While nodes boot they count as capacity.)
    full_at = policy.urgency.full_at
    full_now = capacity_now > 0 and active_gears / capacity_now >= full_at
    geometric = full_now and not hook_reports and evidence and not view.pending
    full_step = max(1, 2 * memory.full_step) if geometric else 0
    if geometric:
        pressure.append(f"full now (active density now {active_gears / capacity_now:.2f} >= "
                        f"{full_at:.2f}) and no unplaced gears reported: step "
                        + (f"{full_step} nodes (twice the last)" if memory.full_step
                           else "1 node at least"))
    demand_seen = demand - unplaced_reported
    short_seen = max(0, max(math.ceil(demand_seen / band.target),
                            demand_seen + policy.headroom_gears) - capacity)
    sizing = (f"{short_seen} gears short + {unplaced_reported} unplaced reported by broker"
              if unplaced_reported else "")
    high_since = (memory.high_since if memory.high_since is not None else now) if pressure else None
    stable_up = bool(pressure) and high_since is not None and \
        now - high_since >= policy.stabilization.up
    cooldown_up_left = (policy.cooldown.up - (now - memory.last_scale_up)
                        if memory.last_scale_up is not None else 0.0)
    floor_gap = max(0, floor - size)
    seen_short = max(want_gears - capacity, 1 if signals.up else 0) if pressure else 0
    shortfall = max(seen_short, full_step * per_node) if pressure else 0
    guessed = shortfall - seen_short  # a guess: never worth preempting another pool for
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
        growth = grow(view, ctx=ctx, memory=memory, trigger=trigger, size=size,
                      floor_gap=floor_gap,
                      gear_gap=shortfall if stable_up and cooldown_up_left <= 0 else 0,
                      spill_round=spill_round, ongoing_drains=ongoing_drains, demand=demand,
                      capacity_now=capacity_now, capacity=capacity, want_gears=want_gears,
                      per_node=per_node, figures=figures, guessed=guessed,
                      sizing=sizing or (f"full, no broker report: {full_step} node step"
                                        if full_step else ""))
        actions.extend(growth.actions)
        notes.extend(growth.notes)
        grew, placed_gears, reactivated = growth.grew, growth.placed_gears, growth.reactivated
        unplaced, unplaced_why = growth.unplaced, growth.unplaced_why
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
        shrinking = shrink(view, ctx=ctx, memory=memory, signals=signals, degraded=degraded,
                           requested=requested, low_since=low_since or now, timed_out=timed_out,
                           projected=projected, figures=figures,
                           want_gears=max(want_gears, forecast.hold_gears) if forecast.acting
                           else want_gears,
                           floor=floor, size=size, ongoing=len(ongoing_drains))
        actions.extend(shrinking.drains)
        notes.append(shrinking.note)
        if not shrinking.blocked:
            shrank = len(shrinking.drains)
            desired = size - shrank

    if warm and not paused and not pressure and not grew:
        actions.extend(fill_warm_pools(policy, ctx=ctx))
    desired = max(floor, min(policy.size.max, desired))
    if not notes:
        notes.append(f"steady: projected density {fmt_density(projected)} within "
                     f"[{band.scale_down_below:.2f}, {band.scale_up_above:.2f}] (with booting "
                     f"nodes; active density now {fmt_density(density)})")
    # A step taken while full is remembered for doubling; not full resets it.
    full_step = ((grew if grew else memory.full_step) if geometric
                 else memory.full_step if full_now and not hook_reports else 0)
    new_memory = memory
    if grew or shrank or timed_out or low_since != memory.low_since \
            or high_since != memory.high_since \
            or full_step != memory.full_step:  # else nothing to remember anew
        new_memory = replace(
            memory,
            # New nodes only: a reactivated node shows as draining until its next facts.
            growing_to=capacity + placed_gears if grew else memory.growing_to,
            grown_from=(memory.grown_from if spill_round and memory.grown_from is not None
                        else size - reactivated) if grew else memory.grown_from,
            last_scale_up=now if grew else memory.last_scale_up,
            last_scale_down=now if shrank or timed_out else memory.last_scale_down,
            drain_timed_out_at=now if timed_out else memory.drain_timed_out_at,
            low_since=low_since,
            high_since=high_since,
            full_step=full_step,
        )
    if forecast.note:  # what predictive scaling read (forecast_only: what it would do)
        notes.append(forecast.note)
    evaluation = partial(
        PoolEvaluation,
        pool=name, active=len(view.active), booting=len(view.pending),
        draining=len(view.draining), unknown=len(view.unknown), active_gears=active_gears,
        capacity_gears=capacity_now, active_density=density, desired_nodes=desired,
        degraded=degraded, paused=paused,
        forecast_gears=forecast.gears, forecast_extra_nodes=forecast.extra_nodes,
        forecast_at=None if forecast.gears is None else now + ready_in,
        demand_gears=demand)
    reading = PoolReading(
        demand=demand, capacity_now=capacity_now, capacity=capacity, want_gears=want_gears,
        floor=floor, size=size, pressure=bool(pressure), degraded=degraded, paused=paused,
        grew=grew, shrank=shrank, unplaced=unplaced, unplaced_why=unplaced_why, figures=figures)
    return _Outcome(actions=actions, evaluation=evaluation,
                    summary=f"{figures}; " + "; ".join(notes),
                    memory=new_memory, reading=reading)
