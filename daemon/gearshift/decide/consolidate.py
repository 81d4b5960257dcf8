"""Consolidation: move a pool's nodes to cheaper capacity of its own, make-before-break.

Two kinds of swap share one machinery, one batch at a time per pool, remembered in
``PlannerState.returns`` (each record says its ``cause``):

* **burst-and-return** (``burst_return`` policy, ``decide.burst_return``): a node on a
  burst-only placement goes back to the first preferred placement with room;
* **consolidation** (``consolidation`` policy, here): a node on any other placement whose
  active-gear slots cost more than the same slots on a cheaper placement of the pool that
  has room (nodes put there by urgency, spillover, or a scale-in that kept the wrong ones).

Each swap runs the same steps:

1. **make**: when the pool is calm (not under pressure, not growing or shrinking now,
   nothing booting, no scale-up for ``stable_for``, facts fresh) nodes older than
   ``min_node_lifetime`` that save at least ``min_savings_per_hour`` each are replaced: a
   ``ScaleOut`` naming the nodes it ``replaces``, within the pool's ``max`` (the extra
   nodes come first) and ``max_concurrent``. A pool that could simply shrink does not
   consolidate: its scale-in drains the dearest slots first.
2. **break**: once nothing the pool asked for on that provider still boots, each replaced
   node is drained, but only if the pool would not be under pressure without it and
   within the drain budgets; the pool never goes below its ``min`` (the replacement is
   already there).
3. **retire**: the drain ends like any other.

A replacement not up within ``replace_timeout``, or a swap drain that was cancelled
(demand came back), abandons the swap and pauses both kinds for ``retry_after``. This
runs after every pool's own planning, on the quota they left: growth beats a cheaper fleet.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import replace

from gearshift.decide.burst_return import make_return, node_cost
from gearshift.decide.context import PlanContext, PoolReading
from gearshift.decide.dear import Priced, dear_nodes, dear_tally, weigh
from gearshift.decide.placement import Option, normal_order, options_for
from gearshift.durations import format_duration
from gearshift.model import Action, Candidate, Drain, Node, NodeCandidate, NodeState, ScaleOut
from gearshift.plan import BurstReturn, PoolMemory
from gearshift.policy.pricing import slot_cost
from gearshift.policy.schema import BurstReturnPolicy, ConsolidationPolicy, PoolPolicy

_LABEL = {"burst_return": "burst-and-return", "consolidation": "consolidate"}


def plan_swaps(policy: PoolPolicy, *, ctx: PlanContext, reading: PoolReading,
               memory: PoolMemory, returns: dict[str, BurstReturn]
               ) -> tuple[list[Action], PoolMemory, list[str]]:
    """This pool's swap actions (both kinds); updates ``returns`` in place."""
    name = policy.name
    view = ctx.views[name]
    actions: list[Action] = []
    notes: list[str] = []
    mine = {i: r for i, r in returns.items() if r.pool == name}
    paused_until = memory.returns_paused_until
    removed = [0]  # slots this pass already drained away

    def abandon(swap: BurstReturn, why: str) -> None:
        nonlocal paused_until
        returns.pop(swap.identity, None)
        retry = settings_of(policy, swap.cause).retry_after
        paused_until = max(paused_until or 0.0, ctx.now + retry)
        notes.append(f"{_LABEL[swap.cause]} of {swap.identity} abandoned ({why}); "
                     f"swaps paused for {format_duration(retry)}")

    # -- follow the swaps in flight ---------------------------------------------------
    for identity, swap in sorted(mine.items()):
        label, settings = _LABEL[swap.cause], settings_of(policy, swap.cause)
        node = ctx.nodes_by_id.get(identity)
        if node is None:
            returns.pop(identity)  # retired: the swap is complete
            continue
        if swap.drained_at is not None:
            if identity not in ctx.draining_ids and swap.drained_at < ctx.now:
                if node.state is NodeState.ACTIVE:
                    abandon(swap, "its drain was cancelled")
                else:
                    returns.pop(identity)
            continue
        if identity in ctx.draining_ids or identity in ctx.taken:
            returns[identity] = replace(swap, drained_at=ctx.now)  # something else drains it
            continue
        booting = sum(1 for p in view.pending if p.provider == swap.provider)
        waited = ctx.now - swap.requested_at
        if not booting and _replacements_up(swap, ctx=ctx, returns=returns) <= 0:
            abandon(swap, f"its replacement on {swap.provider} was not made")
            continue
        if booting:
            if waited > settings.replace_timeout:
                abandon(swap, f"its replacement on {swap.provider} is not up after "
                              f"{format_duration(round(waited))}")
            else:
                notes.append(f"{label}: waiting for {booting} replacement(s) on "
                             f"{swap.provider} before draining {identity}")
            continue
        drain, why = _break(policy, node, swap, ctx=ctx, reading=reading, removed=removed)
        if drain is not None:
            actions.append(drain)
            returns[identity] = replace(swap, drained_at=ctx.now)
        elif waited > settings.replace_timeout:
            abandon(swap, why)
        else:
            notes.append(f"{label}: keeping {identity} for now: {why}")

    # -- start a new swap: burst nodes first, then dear ones ---------------------------
    making = any(r.pool == name and r.drained_at is None for r in returns.values())
    for cause in ("burst_return", "consolidation"):
        settings = settings_of(policy, cause)
        if making or not settings.enabled:
            continue
        if cause == "burst_return" and not view.burst:
            continue
        blockers = _calm(policy, ctx=ctx, reading=reading, memory=memory,
                         paused_until=paused_until, stable_for=settings.stable_for)
        if cause == "consolidation" and not blockers:
            blockers = _could_shrink(policy, ctx=ctx, reading=reading)
        if blockers:
            continue
        if cause == "burst_return":
            action, chosen, note = make_return(policy, ctx=ctx, reading=reading,
                                               returns=returns)
        else:
            # Only a calm pool weighs its nodes: per provider when the tallies tell.
            dear: list[Priced] | None = None
            tally = dear_tally(policy, ctx=ctx, returns=returns)
            if tally is None:
                dear = dear_nodes(policy, ctx=ctx, returns=returns)
                tally = (len(dear), 0.0)  # (_make_cheaper weighs the listed nodes)
            if tally[0] == 0:
                continue
            action, chosen, note = _make_cheaper(policy, ctx=ctx, reading=reading,
                                                 returns=returns, nodes=dear, tally=tally)
        if action is not None:
            actions.append(action)
            making = True
            for identity in chosen:
                returns[identity] = BurstReturn(identity=identity, pool=name,
                                                provider=action.provider,
                                                requested_at=ctx.now, cause=cause)
        if note:
            notes.append(note)
    paused_until = paused_until if paused_until is not None and paused_until > ctx.now else None
    new_memory = (memory if paused_until == memory.returns_paused_until
                  else replace(memory, returns_paused_until=paused_until))
    return actions, new_memory, notes


def settings_of(policy: PoolPolicy, cause: str) -> BurstReturnPolicy | ConsolidationPolicy:
    return policy.burst_return if cause == "burst_return" else policy.consolidation


def _replacements_up(swap: BurstReturn, *, ctx: PlanContext,
                     returns: dict[str, BurstReturn]) -> int:
    """Replacements of ``swap``'s batch that are up and not yet matched by a node drained
    for them: make-before-break needs one for each drain."""
    up = sum(1 for n in ctx.views[swap.pool].active
             if n.machine is not None and n.machine.provider == swap.provider
             and n.machine.created_at is not None and n.machine.created_at >= swap.requested_at)
    broken = sum(1 for r in returns.values()
                 if r.pool == swap.pool and r.provider == swap.provider
                 and r.requested_at == swap.requested_at and r.drained_at is not None)
    return up - broken


def _calm(policy: PoolPolicy, *, ctx: PlanContext, reading: PoolReading, memory: PoolMemory,
          paused_until: float | None, stable_for: float) -> list[str]:
    """Why the pool should not start a swap now (empty: it may)."""
    view = ctx.views[policy.name]
    blockers = []
    if reading.paused:
        blockers.append("paused")
    if reading.degraded or not ctx.snapshot.facts_fresh:
        blockers.append("facts not all fresh")
    if reading.grew or reading.shrank or reading.pressure:
        blockers.append("the pool is resizing")
    if view.pending:
        blockers.append("nodes still booting")
    if paused_until is not None and ctx.now < paused_until:
        blockers.append(f"swaps paused {format_duration(round(paused_until - ctx.now))} more")
    if memory.last_scale_up is not None and ctx.now - memory.last_scale_up < stable_for:
        blockers.append(f"grew {format_duration(round(ctx.now - memory.last_scale_up))} ago "
                        f"(stable_for {format_duration(stable_for)})")
    return blockers


def _could_shrink(policy: PoolPolicy, *, ctx: PlanContext, reading: PoolReading) -> list[str]:
    """A pool below its band that scale-in may shrink loses its dearest slots that way,
    without making new nodes first."""
    band = policy.density
    if reading.capacity <= 0 or reading.demand / reading.capacity >= band.scale_down_below:
        return []
    if reading.size <= reading.floor:
        return []
    smallest = min((n.facts.max_active_gears for n in ctx.views[policy.name].active
                    if n.facts is not None), default=0)
    if reading.capacity_now - smallest < reading.want_gears:
        return []
    return ["the pool is below its band: scale-in removes its dearest slots first"]


def _make_cheaper(policy: PoolPolicy, *, ctx: PlanContext, reading: PoolReading,
                  returns: dict[str, BurstReturn], nodes: Sequence[Priced] | None,
                  tally: tuple[int, float]) -> tuple[ScaleOut | None, list[str], str]:
    """The ScaleOut on the cheapest placement (per slot) with room, the nodes it replaces,
    and a note when something dearer stays and why. ``nodes``: the pool's dear nodes, or
    None when only their ``tally`` (how many, the dearest slot) was read: they are listed
    only if a cheaper placement has room."""
    settings = policy.consolidation
    name = policy.name
    if nodes is None:  # only the placements cheaper than the dearest node matter for now
        cheaper = normal_order(options_for(
            policy, providers=ctx.providers, statuses=ctx.statuses, usage=ctx.usage,
            now=ctx.now, burst=False, slot_below=tally[1]))
        if not any(o.status.available and o.recent_error is None and o.free > 0
                   for o in cheaper):
            return None, [], _no_room(tally[0], cheaper)
    options = normal_order(options_for(policy, providers=ctx.providers, statuses=ctx.statuses,
                                       usage=ctx.usage, now=ctx.now, burst=False))
    if not options:
        return None, [], ""
    cheapest = min(slot_cost(o.spec.cost_per_hour, o.per_node) for o in options)
    # The options' cheapest is the blueprints' (the same placements, the same figures),
    # so every dear node is dearer and the tally holds.
    dearer: list[Priced] = []
    count, dearest = tally
    if nodes is not None:
        dearer, count, dearest = weigh(nodes, cheapest)
    if not count:
        return None, [], ""
    cheaper = [o for o in options if slot_cost(o.spec.cost_per_hour, o.per_node) < dearest]
    usable = [o for o in cheaper if o.status.available and o.recent_error is None
              and o.free > 0]
    if not usable:
        return None, [], _no_room(count, cheaper)
    if nodes is None:
        dearer = weigh(dear_nodes(policy, ctx=ctx, returns=returns), cheapest)[0]
    target = min(usable, key=lambda o: (slot_cost(o.spec.cost_per_hour, o.per_node), o.index))
    spec = target.spec
    target_slot = slot_cost(spec.cost_per_hour, target.per_node)
    young = 0
    scored: list[tuple[float, Node]] = []
    small: list[tuple[float, Node]] = []
    for node, rate in dearer:
        assert node.facts is not None and node.machine is not None
        if node.machine.provider == spec.name:
            continue
        saving = rate - target_slot * node.facts.max_active_gears  # its slots, there
        if saving <= 0:
            continue
        created = node.machine.created_at
        if created is not None and ctx.now - created < settings.min_node_lifetime:
            young += 1
        elif saving < settings.min_savings_per_hour:
            small.append((saving, node))
        else:
            scored.append((saving, node))
    if not scored:
        if small:
            best, node = max(small, key=lambda s: s[0])
            return None, [], (f"consolidate: not worth it: replacing {node.identity} on "
                              f"{spec.name} saves {best:.3g}/h < min_savings_per_hour "
                              f"{settings.min_savings_per_hour:g}")
        if young:
            return None, [], (f"consolidate: {young} node(s) on dearer slots younger than "
                              f"{format_duration(settings.min_node_lifetime)}")
        return None, [], ""
    limit = min(len(scored), target.free, settings.max_concurrent, policy.step.max_up,
                policy.size.max - reading.size)
    if limit <= 0:
        return None, [], (f"consolidate: not now: the pool is at its max {policy.size.max}: "
                          f"no room to make before breaking")
    chosen = heapq.nsmallest(limit, scored, key=lambda s: (
        -s[0], s[1].facts.gears.total if s[1].facts else 0, s[1].identity))
    ctx.usage.claim(name, spec.name, len(chosen))
    candidates = tuple(
        Candidate(o.spec.name, o.blueprint.name, len(chosen) if o is target else 0, o.free,
                  (f"chosen: {len(chosen)} of {o.free} free, "
                   f"{slot_cost(o.spec.cost_per_hour, o.per_node):.3g}/h per slot"
                   if o is target else
                   f"skipped: {slot_cost(o.spec.cost_per_hour, o.per_node):.3g}/h per slot"
                   + ("" if o in usable else ", not cheaper" if o not in cheaper
                      else ", no room or unavailable")),
                  rank=rank, cost_per_hour=o.spec.cost_per_hour, time_to_ready=o.time_to_ready)
        for rank, o in enumerate(options, start=1))
    each = "; ".join(
        f"{n.machine.provider if n.machine else '?'} node {n.identity} "
        f"{node_cost(ctx, n):g}/h, saves {s:.3g}/h" for s, n in chosen)
    total = sum(s for s, _ in chosen)
    reason = (f"pool {name}: consolidate: {spec.name} {spec.cost_per_hour:g}/h has room "
              f"({target.free} free); replacing {each}; {total:.3g}/h saved in all "
              f"({reading.figures}); make-before-break: each is drained only once its "
              f"replacement is up")
    action = ScaleOut(pool=name, provider=spec.name, blueprint=target.blueprint.name,
                      count=len(chosen), reason=reason, candidates=candidates,
                      replaces=tuple(n.identity for _, n in chosen))
    return action, [n.identity for _, n in chosen], ""


def _no_room(count: int, cheaper: list[Option]) -> str:
    """Why ``count`` nodes on dearer slots stay: each cheaper placement's lack of room."""
    why = "; ".join(
        f"{o.spec.name} " + (f"full ({o.limit_note})" if o.free <= 0 else
                             o.recent_error or o.status.why_unavailable or "unavailable")
        for o in cheaper)
    return (f"consolidate: {count} node(s) on dearer slots, no cheaper placement has room "
            f"({why})")


def _break(policy: PoolPolicy, node: Node, swap: BurstReturn, *, ctx: PlanContext,
           reading: PoolReading, removed: list[int]) -> tuple[Drain | None, str]:
    """Drain the replaced node if the pool does not need it any more; else why not."""
    if node.state is not NodeState.ACTIVE or node.facts is None:
        return None, f"{node.identity} is {node.state}"
    if reading.grew or reading.shrank:
        return None, "the pool is resizing"
    provider = node.machine.provider if node.machine else None
    after = reading.capacity - removed[0] - node.facts.max_active_gears
    band = policy.density
    if after <= 0 or reading.demand / after > band.scale_up_above or \
            after - reading.demand < policy.headroom_gears:
        density = reading.demand / after if after > 0 else float("inf")
        return None, (f"without it projected density would be {density:.2f} (> "
                      f"{band.scale_up_above:.2f}) or free slots {after - reading.demand} "
                      f"< headroom {policy.headroom_gears}")
    blocked = ctx.budget.allows(policy, provider)
    if blocked is not None:
        return None, blocked
    ctx.budget.take(policy.name, provider)
    ctx.taken.add(node.identity)
    ctx.disrupted[policy.name] += 1
    removed[0] += node.facts.max_active_gears
    gears = node.facts.gears.total
    kind = "burst node" if swap.cause == "burst_return" else f"{provider} node"
    return Drain(
        pool=policy.name, identity=node.identity, cause=swap.cause,
        reason=(f"pool {policy.name}: {_LABEL[swap.cause]}: its replacement on "
                f"{swap.provider} is up ({reading.figures}); draining {kind} "
                f"{node.identity} ({provider}, {gears} gears to move): without it projected density "
                f"stays {reading.demand / after:.2f} <= {band.scale_up_above:.2f}"),
        candidates=(NodeCandidate(node.identity, provider, True,
                                  f"chosen: replaced on {swap.provider}"),)), ""
