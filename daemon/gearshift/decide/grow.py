"""Growing a pool: reactivate draining nodes first (cheaper than new ones, never a node
drained for a preemption or past its point of no return), then resume parked machines of
its warm pools (``decide.warm``), then place new nodes
(``decide.placement``), sized by the floor and the gear shortfall within the step and the
pool's max. What no placement could take is reported, for preemption to find."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from gearshift.decide.context import PlanContext
from gearshift.decide.drains import POINT_OF_NO_RETURN
from gearshift.decide.placement import PlacementResult, place
from gearshift.decide.pools import PoolView
from gearshift.decide.warm import reclaim_quota, resume_parked
from gearshift.model import Action, CancelDrain, DrainProgress, ScaleOut
from gearshift.plan import PoolMemory
from gearshift.policy.schema import PoolPolicy


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
    # demand (requests and draining gears included) over the active nodes' slots: not the
    # active density, nor the projected one (booting nodes do not help now)
    return gears, (f"urgent: the pool is full now (demand / active nodes' slots {density} "
                   f">= {urgency.full_at:.2f}), {gears} slots needed now")


@dataclass
class Growth:
    """What growing a pool decided: reactivations and scale-outs, and what could not be placed."""

    actions: list[Action] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    grew: int = 0  # nodes: reactivated and new
    placed_gears: int = 0
    reactivated: int = 0
    unplaced: int = 0  # nodes wanted that no placement could take (preemption may)
    unplaced_why: str = ""


def grow(view: PoolView, *, ctx: PlanContext, memory: PoolMemory, trigger: str, size: int,
         floor_gap: int, gear_gap: int, spill_round: bool, ongoing_drains: list[DrainProgress],
         demand: int, capacity_now: int, capacity: int, want_gears: int, per_node: int,
         figures: str, sizing: str = "", guessed: int = 0) -> Growth:
    """Grow a pool: reactivate draining nodes first, then place new ones."""
    policy, name, now, band = view.policy, view.policy.name, ctx.now, view.policy.density
    out = Growth()
    actions, notes = out.actions, out.notes
    grew = placed_gears = reactivated = unplaced = 0
    unplaced_why = ""
    room = max(0, min(policy.step.max_up, policy.size.max - size))
    if spill_round and memory.grown_from is not None:
        # The growth decided earlier at this instant counts against the same step.
        room = max(0, min(room, policy.step.max_up - max(0, size - memory.grown_from)))
    min_nodes = floor_gap
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
    urgent, urgent_why = _urgent_gears(policy, demand=demand, capacity_now=capacity_now)
    if room > 0 and (min_nodes > 0 or gear_gap > 0) and ctx.snapshot.parked:
        # Then a parked machine of a warm pool: started again, faster than a new one.
        resumes, nodes, slots = resume_parked(view, ctx=ctx, room=room, min_nodes=min_nodes,
                                              gear_gap=gear_gap, trigger=trigger,
                                              urgent=urgent > 0)
        actions.extend(resumes)
        room -= nodes
        min_nodes -= nodes
        gear_gap -= slots
        grew += nodes
        placed_gears += slots
    if min_nodes > 0 or gear_gap > 0:
        if room <= 0:
            notes.append(f"wanted more nodes but the pool is at max {policy.size.max}"
                         if size >= policy.size.max else "wanted more nodes; step limit reached")
        else:
            if ctx.snapshot.parked:  # other pools' parked machines may hold the quota
                actions.extend(reclaim_quota(policy, ctx=ctx, wanted=min(room, max(
                    min_nodes, math.ceil(max(gear_gap, 0) / per_node)))))
            result = place(policy, providers=ctx.providers, statuses=ctx.statuses,
                           usage=ctx.usage, min_nodes=max(min_nodes, 0),
                           shortfall_gears=max(gear_gap, 0), max_nodes=room, now=now,
                           urgent_gears=urgent)
            where = _placement_text(result)
            speed = (f"; {urgent_why}: {result.urgent_note}" if result.urgent_note else "")
            reason = (f"pool {name}: {trigger} ({figures}); want {want_gears} slots "
                      f"(target {band.target:.2f}, headroom {policy.headroom_gears}); "
                      + (f"+{result.nodes}: {sizing}; " if sizing else "")
                      + f"+{result.nodes} nodes: {where}{speed}")
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
                # A geometric step's guess (``guessed`` gears) is no evidence of demand.
                unplaced = max(0, min(wanted, room, max(min_nodes, math.ceil(
                    max(gear_gap - guessed, 0) / per_node))) - result.nodes)
                if not urgent and unplaced > 0:
                    after = capacity + result.gears
                    relief = max(math.ceil(demand / band.scale_up_above) - after,
                                 demand + policy.headroom_gears - after, 0)
                    unplaced = min(unplaced, max(min_nodes - result.nodes,
                                                 math.ceil(relief / per_node)))
                unplaced_why = "; ".join(f"{c.provider} {c.note}" for c in result.candidates
                                         if not c.chosen) or where
                notes.append(f"wanted +{min(wanted, room)} nodes, placed {result.nodes}: {where}")
    out.grew, out.placed_gears, out.reactivated = grew, placed_gears, reactivated
    out.unplaced, out.unplaced_why = unplaced, unplaced_why
    return out
