"""Warm pools: stopped machines resumed before new ones are made.

A placement with ``warm: {min, max, max_idle}`` keeps up to ``max`` machines of its
blueprint stopped (disk kept, quota held) instead of destroying them:

* **Fill**: while it keeps fewer than ``min`` (made, being made or parked) and its pool is
  calm (no pressure, no growth), new machines are made for it (a ``ScaleOut`` with
  ``warm``): drained as soon as they are up, never counted as the pool's capacity, then
  parked.
* **Park**: a node drained by a scale-in, once empty, has its machine stopped instead of
  destroyed while its placement keeps fewer than ``max`` (never a node drained to free
  quota, to return from a burst or to move to a cheaper placement: those must go; nor
  while the pool runs nodes on dearer slots that consolidation would move to this
  placement: a stopped machine would hold the quota they need).
* **Resume**: a pool that grows starts its parked machines before placing new nodes,
  scored like placements (``resume_parked``): in the policy's order, the most recently
  parked first, never a later placement's while an earlier one has room for new nodes;
  when the pool is full now, all of them, fastest to resume first. A resumed
  node counts as booting until it publishes facts newer than its start; then it is
  reactivated in its district. One that does not come back within its timeout is retired.
* **Idle**: a machine parked longer than ``max_idle`` is destroyed, oldest first, unless
  that leaves its placement fewer than ``min``; one more than ``max`` (the policy changed),
  or on a placement that no longer keeps a warm pool, is destroyed at once.

Pure, like the rest of ``decide``: the parked machines come in the snapshot (the journal's
``parking``/``parked``/``resuming`` drains), the time is ``ctx.now``.
"""

from __future__ import annotations

import math
from collections import Counter

from gearshift.decide.context import PlanContext
from gearshift.decide.placement import room_left, time_to_ready, time_to_resume
from gearshift.decide.pools import PoolView
from gearshift.durations import format_duration
from gearshift.model import (
    Action,
    CancelDrain,
    DrainProgress,
    Machine,
    NodeState,
    Park,
    ParkedMachine,
    Resume,
    RetireParked,
    ScaleOut,
)
from gearshift.policy.pricing import slot_cost
from gearshift.policy.schema import Placement, PoolPolicy
from gearshift.policy.warm import WarmPool

# A resumed machine that publishes no facts for this long (or 3 x its provider's measured
# time-to-ready, if longer) is retired rather than waited for.
MIN_RESUME_TIMEOUT = 600.0

Key = tuple[str, str, str]  # (pool, provider, blueprint)


def warm_pool(policy: PoolPolicy, *, provider: str, blueprint: str) -> WarmPool | None:
    """The warm pool of the pool's placement on (provider, blueprint), if it keeps one."""
    for placement in policy.placement:
        if placement.provider == provider and placement.blueprint == blueprint:
            return placement.warm
    return None


def _kept(ctx: PlanContext) -> Counter[Key]:
    """Machines each placement keeps stopped, is stopping, or is making for its warm pool
    (made and draining, or being made), and those this plan parks."""
    kept: Counter[Key] = Counter(ctx.parking)
    for p in ctx.snapshot.parked:
        if p.phase in ("filling", "parking", "parked"):
            kept[(p.pool, p.provider, p.blueprint)] += 1
    for drain in ctx.snapshot.drains:
        if drain.cause == "warm":
            node = ctx.nodes_by_id.get(drain.identity)
            machine = node.machine if node is not None else None
            if machine is not None and machine.blueprint is not None:
                kept[(drain.pool, machine.provider, machine.blueprint)] += 1
    return kept


def park_instead(policy: PoolPolicy, *, drain: DrainProgress, machine: Machine,
                 ctx: PlanContext, why: str) -> Park | None:
    """A ``Park`` for a drained, empty node whose placement keeps a warm pool with room;
    None when it is to be retired."""
    if drain.cause not in (None, "scale_in", "warm") or machine.blueprint is None:
        return None
    warm = warm_pool(policy, provider=machine.provider, blueprint=machine.blueprint)
    if warm is None:
        return None
    if _dearer_running(policy, ctx=ctx, provider=machine.provider,
                       blueprint=machine.blueprint):
        return None
    key = (policy.name, machine.provider, machine.blueprint)
    # (a machine made for the pool is counted there already, as it drains)
    kept = _kept(ctx)[key] - (1 if drain.cause == "warm" else 0)
    if kept >= warm.max:
        return None
    ctx.parking[key] += 1
    return Park(pool=policy.name, identity=drain.identity, provider=machine.provider,
                machine_id=machine.machine_id,
                reason=f"pool {policy.name}: {drain.identity} is drained (0 gears left){why}; "
                       f"parking its machine in the {machine.provider}/{machine.blueprint} "
                       f"warm pool ({kept + 1} of at most {warm.max}) instead of retiring it")


def _dearer_running(policy: PoolPolicy, *, ctx: PlanContext, provider: str,
                    blueprint: str) -> bool:
    """Does the pool run nodes on dearer slots (not burst-only) than this placement's, that
    consolidation would move here? Then its quota is worth more to them than to a stopped
    machine: a drained node there is destroyed (consolidation makes its replacement)
    rather than parked, and no machine is made to be parked."""
    if not policy.consolidation.enabled:
        return False
    spec = ctx.providers.blueprint(blueprint)
    if spec is None:
        return False
    here = slot_cost(ctx.providers.rates.get(provider, 0.0), spec.expected_max_active_gears)
    rates = ctx.providers.rates
    return any(not share.burst and share.count > 0
               and slot_cost(rates.get(name, 0.0), share.most) > here
               for name, share in ctx.views[policy.name].shares.items())


def resume_parked(view: PoolView, *, ctx: PlanContext, room: int, min_nodes: int,
                  gear_gap: int, trigger: str, urgent: bool) -> tuple[list[Action], int, int]:
    """Start parked machines for a pool that grows: (actions, nodes, slots) resumed.

    Scored as ``decide.placement`` scores placements. Normally in the policy's order
    (burst-only last), the most recently parked first: a placement's parked machines go
    before its new nodes, but once a placement has room for new nodes, the parked machines
    of later (dearer, or burst-only) placements stay parked: a new node where the policy
    prefers it beats a running one elsewhere, and a stopped machine costs only its
    ``stopped_cost_per_hour``. When the pool is ``urgent`` (full now) every parked machine
    may go, fastest to resume first: that is what a warm pool is for."""
    policy = view.policy
    by_placement: dict[tuple[str, str], list[ParkedMachine]] = {}
    for p in ctx.snapshot.parked:
        if (p.pool == policy.name and p.phase == "parked" and p.identity not in ctx.taken
                and ctx.statuses.get(p.provider) is not None
                and ctx.statuses[p.provider].available):
            by_placement.setdefault((p.provider, p.blueprint), []).append(p)
    placements = sorted(policy.placement, key=lambda p: p.burst_only)  # stable: policy order
    if urgent:
        placements.sort(key=lambda p: _resume_time(ctx, p.provider))
    actions: list[Action] = []
    nodes = slots = 0
    for placement in placements:
        # (pop: a placement listed twice resumes its machines once)
        for machine in sorted(by_placement.pop((placement.provider, placement.blueprint), []),
                              key=lambda p: (-p.since, p.identity)):
            if nodes >= room or (min_nodes - nodes <= 0 and gear_gap - slots <= 0):
                return actions, nodes, slots
            actions.append(_resume(machine, ctx=ctx, trigger=trigger))
            nodes += 1
            slots += machine.max_active_gears
        if not urgent and _room_for_new(policy.name, placement=placement, ctx=ctx):
            break
    return actions, nodes, slots


def _resume_time(ctx: PlanContext, provider: str) -> float:
    spec = ctx.providers.provider(provider)
    return math.inf if spec is None else time_to_resume(spec, ctx.statuses.get(provider))


def _room_for_new(pool: str, *, placement: Placement, ctx: PlanContext) -> bool:
    """Would ``decide.placement`` put a new node of the pool on this placement now?"""
    spec = ctx.providers.provider(placement.provider)
    status = ctx.statuses.get(placement.provider)
    if placement.burst_only or spec is None or status is None or not status.available:
        return False
    return room_left(pool, placement=placement, spec=spec, usage=ctx.usage)[0] > 0


def _resume(machine: ParkedMachine, *, ctx: PlanContext, trigger: str) -> Resume:
    spec = ctx.providers.provider(machine.provider)
    status = ctx.statuses.get(machine.provider)
    speed = stopped = ""
    if spec is not None:
        speed = (f"; ready in about {format_duration(time_to_resume(spec, status))}, a new "
                 f"node in {format_duration(time_to_ready(spec, status))}")
        stopped = f"; stopped it cost {spec.stopped_cost_per_hour:g}/h"
    return Resume(
        pool=machine.pool, identity=machine.identity, provider=machine.provider,
        machine_id=machine.machine_id,
        reason=f"pool {machine.pool}: {trigger}; resuming {machine.identity} from the "
               f"{machine.provider}/{machine.blueprint} warm pool (parked "
               f"{format_duration(max(0.0, ctx.now - machine.since))}{stopped}{speed})")


def reclaim_quota(policy: PoolPolicy, *, ctx: PlanContext, wanted: int) -> list[Action]:
    """Destroy other pools' parked machines that hold the quota of a provider this pool
    prefers and would otherwise spill past: a stopped machine serves no one, a pool that
    needs the room does (the other pool's warm pool refills once quota is free again).
    The quota freed is counted in this plan, so the new nodes go there at once (the
    destroys run before the creates)."""
    actions: list[Action] = []
    usage = ctx.usage
    for placement in policy.placement:
        if wanted <= 0 or placement.burst_only:
            break
        spec = ctx.providers.provider(placement.provider)
        status = ctx.statuses.get(placement.provider)
        if spec is None or status is None or not status.available:
            continue
        free = max(0, spec.quota.max_nodes - usage.by_provider[spec.name])
        room = wanted
        if placement.max_nodes is not None:
            room = min(room, placement.max_nodes - usage.by_pool_provider[(policy.name,
                                                                            spec.name)])
        short = room - free
        if short <= 0:
            wanted -= max(0, room)
            continue
        idle = sorted((p for p in ctx.snapshot.parked
                       if p.provider == spec.name and p.pool != policy.name
                       and p.phase == "parked" and p.identity not in ctx.taken),
                      key=lambda p: (p.since, p.identity))[:short]
        for machine in idle:
            ctx.taken.add(machine.identity)
            usage.by_provider[spec.name] -= 1
            usage.by_pool_provider[(machine.pool, spec.name)] -= 1
            actions.append(RetireParked(
                pool=machine.pool, identity=machine.identity, provider=spec.name,
                machine_id=machine.machine_id,
                reason=f"pool {machine.pool}: {machine.identity} parked in the warm pool "
                       f"holds {spec.name} quota that pool {policy.name} needs now "
                       f"({spec.name} full: {spec.quota.max_nodes} nodes); destroying it"))
        wanted -= free + len(idle)
    return actions


def tend_warm_pools(policy: PoolPolicy, *, ctx: PlanContext) -> list[Action]:
    """The pool's parked machines this plan moves on: stops to finish, resumed nodes to
    reactivate (or retire), idle and surplus machines to destroy."""
    mine = [p for p in ctx.snapshot.parked if p.pool == policy.name]
    if not mine:
        return []
    actions: list[Action] = []
    name = policy.name
    for machine in mine:
        if machine.phase == "parking":  # a stop that did not finish (a failure, a restart)
            actions.append(Park(pool=name, identity=machine.identity, provider=machine.provider,
                                machine_id=machine.machine_id,
                                reason=f"pool {name}: finishing the stop of {machine.identity} "
                                       f"(parking in the warm pool)"))
        elif machine.phase == "resuming":
            actions.extend(_follow_resume(machine, ctx=ctx))
    by_key: dict[Key, list[ParkedMachine]] = {}
    for machine in mine:
        if machine.phase == "parked":
            by_key.setdefault((name, machine.provider, machine.blueprint), []).append(machine)
    for (_, provider, blueprint), machines in by_key.items():
        warm = warm_pool(policy, provider=provider, blueprint=blueprint)
        keep_max = warm.max if warm is not None else 0
        keep_min = warm.min if warm is not None else 0
        machines.sort(key=lambda p: (p.since, p.identity))  # oldest first
        left = len(machines)
        for machine in machines:
            idle = ctx.now - machine.since
            if left > keep_max:
                why = (f"more than its warm pool keeps ({left} > max {keep_max})"
                       if warm is not None else "its placement keeps no warm pool any more")
            elif warm is not None and idle > warm.max_idle and left > keep_min:
                why = (f"parked {format_duration(idle)}, longer than max_idle "
                       f"{format_duration(warm.max_idle)} ({left} kept > min {keep_min})")
            else:
                continue
            left -= 1
            ctx.taken.add(machine.identity)  # not to be resumed in this plan
            actions.append(RetireParked(
                pool=name, identity=machine.identity, provider=provider,
                machine_id=machine.machine_id,
                reason=f"pool {name}: {machine.identity} in the {provider}/{blueprint} warm "
                       f"pool: {why}; destroying it"))
    return actions


def fill_warm_pools(policy: PoolPolicy, *, ctx: PlanContext) -> list[Action]:
    """New machines for the warm pools that keep fewer than their ``min`` (within the
    placement's and the provider's quota; never on a provider that is unavailable). The
    planner asks only while the pool is calm: a machine made to be parked holds quota that
    a growing pool would rather use."""
    if not any(p.warm is not None and p.warm.min > 0 for p in policy.placement):
        return []
    kept = _kept(ctx)
    actions: list[Action] = []
    for placement in policy.placement:
        warm = placement.warm
        if warm is None or warm.min <= 0:
            continue
        key = (policy.name, placement.provider, placement.blueprint)
        missing = warm.min - kept[key]
        if missing > 0 and _dearer_running(policy, ctx=ctx, provider=placement.provider,
                                           blueprint=placement.blueprint):
            continue
        status = ctx.statuses.get(placement.provider)
        spec = ctx.providers.provider(placement.provider)
        if missing <= 0 or status is None or not status.available or spec is None:
            continue
        room = min(missing, room_left(policy.name, placement=placement, spec=spec,
                                      usage=ctx.usage)[0])
        if room <= 0:
            continue
        ctx.usage.claim(policy.name, placement.provider, room)
        actions.append(ScaleOut(
            pool=policy.name, provider=placement.provider, blueprint=placement.blueprint,
            count=room, warm=True,
            reason=f"pool {policy.name}: the {placement.provider}/{placement.blueprint} warm "
                   f"pool keeps {kept[key]} of min {warm.min}: making {room} to park"))
    return actions


def _follow_resume(machine: ParkedMachine, *, ctx: PlanContext) -> list[Action]:
    """A resumed machine: reactivated once its node publishes facts newer than the start,
    retired if it does not within its timeout."""
    node = ctx.nodes_by_id.get(machine.identity)
    if (node is not None and node.state is NodeState.DRAINING and node.last_seen is not None
            and node.last_seen > machine.since and node.facts is not None):
        return [CancelDrain(pool=machine.pool, identity=machine.identity,
                            reason=f"pool {machine.pool}: {machine.identity} resumed from the "
                                   f"warm pool and publishes facts again; reactivating it")]
    status = ctx.statuses.get(machine.provider)
    boot = status.boot_time if status is not None and status.boot_time else 0.0
    timeout = max(MIN_RESUME_TIMEOUT, 3 * boot)
    waited = ctx.now - machine.since
    if waited > timeout and ctx.snapshot.facts_fresh:
        return [RetireParked(pool=machine.pool, identity=machine.identity,
                             provider=machine.provider, machine_id=machine.machine_id,
                             reason=f"pool {machine.pool}: {machine.identity} was resumed "
                                    f"{format_duration(waited)} ago and publishes no facts "
                                    f"(timeout {format_duration(timeout)}); destroying it")]
    return []
