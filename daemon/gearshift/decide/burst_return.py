"""Burst-and-return: the swap that sends burst-only nodes home to a preferred placement.

The swap machinery (follow, break, retire, abandon) is shared with consolidation and lives
in ``decide.consolidate``; this module decides the *make* of a burst-and-return: burst
nodes older than ``burst_return.min_node_lifetime`` are replaced on the first preferred
placement that has room, is healthy and saves at least ``min_savings_per_hour`` per node,
within ``max_concurrent``, ``step.max_up`` and the pool's ``max`` (the replacements come
before the burst nodes go). Policy: the ``burst_return`` block, unchanged.
"""

from __future__ import annotations

from dataclasses import replace

from gearshift.decide.context import PlanContext, PoolReading
from gearshift.decide.placement import normal_order, options_for
from gearshift.model import Candidate, Node, ScaleOut
from gearshift.plan import BurstReturn
from gearshift.policy.schema import PoolPolicy


def make_return(policy: PoolPolicy, *, ctx: PlanContext, reading: PoolReading,
          returns: dict[str, BurstReturn]) -> tuple[ScaleOut | None, list[str], str]:
    """The replacement ScaleOut, the burst nodes it replaces, and a note."""
    settings = policy.burst_return
    name = policy.name
    old_enough: list[Node] = []
    for node in ctx.views[policy.name].burst:
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
    burst_costs = {n.identity: node_cost(ctx, n) for n in old_enough}
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


def node_cost(ctx: PlanContext, node: Node) -> float:
    spec = ctx.providers.provider(node.machine.provider) if node.machine else None
    return spec.cost_per_hour if spec is not None else 0.0
