"""Burst-and-return: move a pool off its burst-only placements once a preferred one has room.

Make-before-break, one batch at a time per pool, remembered in ``PlannerState.returns``:

1. **make**: when the pool is calm (not growing or shrinking now, nothing booting, no
   scale-up for ``burst_return.stable_for``, facts fresh), burst nodes older than
   ``min_node_lifetime`` are replaced on the first preferred placement that has room, is
   healthy and saves at least ``min_savings_per_hour`` per node: a ``ScaleOut`` naming the
   nodes it ``replaces``. It needs room under the pool's ``max`` for the extra nodes.
2. **break**: once nothing the pool asked for on that provider is still booting, each
   burst node is drained, but only if the pool would not be under pressure without it
   (density at or below ``scale_up_above``, headroom kept), and within the drain budgets.
3. **retire**: the drain ends like any other (``Retire`` once the node is empty).

A replacement that does not come up within ``replace_timeout``, or a return drain that was
cancelled (demand came back), abandons the swap and pauses returns for ``retry_after``.
This runs after every pool's own planning, on the quota they left: growth always beats
a cheaper fleet.
"""

from __future__ import annotations

from dataclasses import replace

from gearshift.decide.context import PlanContext, PoolReading
from gearshift.decide.placement import normal_order, options_for
from gearshift.durations import format_duration
from gearshift.model import (
    Action,
    BurstReturn,
    Candidate,
    Drain,
    Node,
    NodeCandidate,
    NodeState,
    PoolMemory,
    ScaleOut,
)
from gearshift.policy.schema import PoolPolicy


def plan_returns(policy: PoolPolicy, *, ctx: PlanContext, reading: PoolReading,
                 memory: PoolMemory, returns: dict[str, BurstReturn]
                 ) -> tuple[list[Action], PoolMemory, list[str]]:
    """This pool's burst-and-return actions; updates ``returns`` in place."""
    settings = policy.burst_return
    name = policy.name
    view = ctx.views[name]
    actions: list[Action] = []
    notes: list[str] = []
    mine = {i: r for i, r in returns.items() if r.pool == name}
    paused_until = memory.returns_paused_until
    removed = [0]  # slots this pass already drained away

    def abandon(identity: str, why: str) -> None:
        nonlocal paused_until
        returns.pop(identity, None)
        paused_until = ctx.now + settings.retry_after
        notes.append(f"burst-and-return of {identity} abandoned ({why}); "
                     f"returns paused for {format_duration(settings.retry_after)}")

    # -- follow the swaps in flight ---------------------------------------------------
    for identity, swap in sorted(mine.items()):
        node = ctx.nodes_by_id.get(identity)
        if node is None:
            returns.pop(identity)  # retired: the swap is complete
            continue
        if swap.drained_at is not None:
            if identity not in ctx.draining_ids and swap.drained_at < ctx.now:
                if node.state is NodeState.ACTIVE:
                    abandon(identity, "its drain was cancelled")
                else:
                    returns.pop(identity)
            continue
        if identity in ctx.draining_ids or identity in ctx.taken:
            returns[identity] = replace(swap, drained_at=ctx.now)  # something else drains it
            continue
        booting = sum(1 for p in view.pending if p.provider == swap.provider)
        waited = ctx.now - swap.requested_at
        if not booting and _replacements_up(swap, ctx=ctx, returns=returns) <= 0:
            abandon(identity, f"its replacement on {swap.provider} was not made")
            continue
        if booting:
            if waited > settings.replace_timeout:
                abandon(identity, f"its replacement on {swap.provider} is not up after "
                                  f"{format_duration(round(waited))}")
            else:
                notes.append(f"burst-and-return: waiting for {booting} replacement(s) on "
                             f"{swap.provider} before draining {identity}")
            continue
        drain, why = _break(policy, node, swap, ctx=ctx, reading=reading, removed=removed)
        if drain is not None:
            actions.append(drain)
            returns[identity] = replace(swap, drained_at=ctx.now)
        elif waited > settings.replace_timeout:
            abandon(identity, why)
        else:
            notes.append(f"burst-and-return: keeping {identity} for now: {why}")

    # -- start a new swap -------------------------------------------------------------
    making = any(r.pool == name and r.drained_at is None for r in returns.values())
    if not making and settings.enabled:
        blockers = _calm(policy, ctx=ctx, reading=reading, memory=memory,
                         paused_until=paused_until)
        if not blockers:
            action, chosen, note = _make(policy, ctx=ctx, reading=reading, returns=returns)
            if action is not None:
                actions.append(action)
                for identity in chosen:
                    returns[identity] = BurstReturn(identity=identity, pool=name,
                                                    provider=action.provider,
                                                    requested_at=ctx.now)
            if note:
                notes.append(note)
    paused_until = paused_until if paused_until is not None and paused_until > ctx.now else None
    new_memory = (memory if paused_until == memory.returns_paused_until
                  else replace(memory, returns_paused_until=paused_until))
    return actions, new_memory, notes


def _replacements_up(swap: BurstReturn, *, ctx: PlanContext,
                     returns: dict[str, BurstReturn]) -> int:
    """Replacements of ``swap``'s batch that are up and not yet matched by a burst node
    drained for them: make-before-break needs one for each drain."""
    up = sum(1 for n in ctx.views[swap.pool].active
             if n.machine is not None and n.machine.provider == swap.provider
             and n.machine.created_at is not None and n.machine.created_at >= swap.requested_at)
    broken = sum(1 for r in returns.values()
                 if r.pool == swap.pool and r.provider == swap.provider
                 and r.requested_at == swap.requested_at and r.drained_at is not None)
    return up - broken


def _burst_nodes(policy: PoolPolicy, ctx: PlanContext) -> tuple[Node, ...]:
    return ctx.views[policy.name].burst


def _calm(policy: PoolPolicy, *, ctx: PlanContext, reading: PoolReading, memory: PoolMemory,
          paused_until: float | None) -> list[str]:
    """Why the pool should not start a swap now (empty: it may)."""
    view = ctx.views[policy.name]
    if not _burst_nodes(policy, ctx):
        return ["no burst nodes"]
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
        blockers.append(f"returns paused {format_duration(round(paused_until - ctx.now))} more")
    stable_for = policy.burst_return.stable_for
    if memory.last_scale_up is not None and ctx.now - memory.last_scale_up < stable_for:
        blockers.append(f"grew {format_duration(round(ctx.now - memory.last_scale_up))} ago "
                        f"(stable_for {format_duration(stable_for)})")
    return blockers


def _make(policy: PoolPolicy, *, ctx: PlanContext, reading: PoolReading,
          returns: dict[str, BurstReturn]) -> tuple[ScaleOut | None, list[str], str]:
    """The replacement ScaleOut, the burst nodes it replaces, and a note."""
    settings = policy.burst_return
    name = policy.name
    old_enough: list[Node] = []
    for node in _burst_nodes(policy, ctx):
        assert node.machine is not None
        created = node.machine.created_at
        if node.identity in returns or node.identity in ctx.taken:
            continue
        if created is not None and ctx.now - created >= settings.min_node_lifetime:
            old_enough.append(node)
    if not old_enough:
        return None, [], ""
    options = options_for(policy, providers=ctx.providers, statuses=ctx.statuses,
                          usage=ctx.usage, now=ctx.now)
    candidates: list[Candidate] = []
    target = None
    burst_costs = {n.identity: _cost(ctx, n) for n in old_enough}
    dearest = max(burst_costs.values())
    for rank, option in enumerate(normal_order(options), start=1):
        spec = option.spec
        saving = dearest - spec.cost_per_hour
        why = ("burst placement" if option.burst else
               f"skipped: {option.status.why_unavailable or 'unavailable'}"
               if not option.status.available else
               f"skipped: {option.recent_error}" if option.recent_error else
               f"skipped: full ({option.limit_note})" if option.free <= 0 else
               f"skipped: saves {saving:.3g}/h per node < {settings.min_savings_per_hour:g}"
               if saving < settings.min_savings_per_hour else
               "not needed" if target is not None else None)
        if why is None:
            target = option
        candidates.append(Candidate(spec.name, option.blueprint.name, 0, option.free,
                                    why or "chosen", rank=rank, cost_per_hour=spec.cost_per_hour,
                                    time_to_ready=option.time_to_ready))
    if target is None:
        best = next((c.note for c in candidates if c.note != "burst placement"), "no placement")
        return None, [], f"burst-and-return: no preferred placement to return to ({best})"
    spec = target.spec
    movable = [n for n in old_enough
               if burst_costs[n.identity] - spec.cost_per_hour >= settings.min_savings_per_hour]
    limit = min(len(movable), target.free, settings.max_concurrent, policy.step.max_up,
                policy.size.max - reading.size)
    if limit <= 0:
        why = (f"the pool is at its max {policy.size.max}: no room to make before breaking"
               if policy.size.max <= reading.size else "nothing to move")
        return None, [], f"burst-and-return: not now: {why}"
    chosen = sorted(movable, key=lambda n: (n.facts.gears.total if n.facts else 0,
                                            n.identity))[:limit]
    ctx.usage.claim(name, spec.name, len(chosen))
    candidates = [replace(c, chosen=len(chosen), note=f"chosen: {len(chosen)} of {c.free} free, "
                          f"{c.cost_per_hour:g}/h") if c.provider == spec.name else c
                  for c in candidates]
    burst_where = sorted({n.machine.provider for n in chosen if n.machine is not None})
    saving = sum(burst_costs[n.identity] - spec.cost_per_hour for n in chosen)
    reason = (f"pool {name}: burst-and-return: {spec.name} has room again; replacing "
              f"{len(chosen)} burst node(s) on {', '.join(burst_where)} "
              f"({', '.join(n.identity for n in chosen)}) with {spec.name} nodes "
              f"({spec.cost_per_hour:g}/h), saving {saving:.3g}/h; make-before-break: each "
              f"burst node is drained only once its replacement is up")
    action = ScaleOut(pool=name, provider=spec.name, blueprint=target.blueprint.name,
                      count=len(chosen), reason=reason, candidates=tuple(candidates),
                      replaces=tuple(n.identity for n in chosen))
    return action, [n.identity for n in chosen], ""


def _cost(ctx: PlanContext, node: Node) -> float:
    spec = ctx.providers.provider(node.machine.provider) if node.machine else None
    return spec.cost_per_hour if spec is not None else 0.0


def _break(policy: PoolPolicy, node: Node, swap: BurstReturn, *, ctx: PlanContext,
           reading: PoolReading, removed: list[int]) -> tuple[Drain | None, str]:
    """Drain the burst node if the pool does not need it any more; else why not."""
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
        return None, (f"without it density would be {density:.2f} (> "
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
    return Drain(
        pool=policy.name, identity=node.identity, cause="burst_return",
        reason=(f"pool {policy.name}: burst-and-return: its replacement on {swap.provider} "
                f"is up ({reading.figures}); draining burst node {node.identity} "
                f"({provider}, {gears} gears to move): without it density stays "
                f"{reading.demand / after:.2f} <= {band.scale_up_above:.2f}"),
        candidates=(NodeCandidate(node.identity, provider, True,
                                  f"chosen: replaced on {swap.provider}"),)), ""
