"""Preemption: a higher-priority pool takes quota from lower-priority ``preemptible`` pools.

Only when the pool cannot otherwise get capacity: every placement it has was tried (burst
included) and nodes are still missing. Then, on its placements in the usual order, a
provider whose quota is full (contested) and available gives up nodes of preemptible pools
of lower priority, lowest priority first, victims in the victim pool's own scale-in order.
A victim is never taken by force: it is *drained* (gears moved away, then retired), and
its quota goes to the preempting pool when the machine is gone. Never below the victim
pool's (scheduled) floor, never beyond either disruption budget, never beyond the
preempting pool's own ``max_nodes`` on that placement.

Preemptions in flight are remembered in ``PlannerState.preemptions`` so that the same
shortfall is not preempted twice while the first victims drain, and so that the victim
pool does not reactivate a node drained for someone else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from gearshift.decide.context import PlanContext
from gearshift.decide.placement import normal_order, options_for
from gearshift.decide.scale_in import scale_in_order
from gearshift.decide.schedules import scheduled_floor
from gearshift.model import Drain, NodeCandidate
from gearshift.plan import Preemption
from gearshift.policy.schema import PoolPolicy


def preempt(policy: PoolPolicy, *, ctx: PlanContext, pools: Sequence[PoolPolicy],
            missing: int, why_missing: str, paused: frozenset[str] = frozenset()
            ) -> tuple[list[Drain], list[str]]:
    """Drains that free quota for ``missing`` more nodes of ``policy``, and notes for its
    summary. ``why_missing`` says why placement could not find them. A paused pool, or
    one with nodes it cannot see, is never a victim; nothing is taken while the fact
    source itself is not fresh."""
    name = policy.name
    inflight = [p for p in ctx.preemptions.values() if p.by_pool == name]
    need = missing - len(inflight)
    notes = []
    if inflight:
        notes.append(f"{len(inflight)} node(s) of "
                     f"{', '.join(sorted({p.victim_pool for p in inflight}))} draining to "
                     f"free quota for it")
    victims = sorted((p for p in pools if p.preemptible and p.priority < policy.priority
                      and p.name not in paused and not ctx.views[p.name].unknown),
                     key=lambda p: (p.priority, p.name))
    if need <= 0 or not victims:
        return [], notes
    if not ctx.snapshot.facts_fresh:
        return [], [*notes, "no preemption while facts are not fresh"]
    drains: list[Drain] = []
    considered: list[NodeCandidate] = []
    options = options_for(policy, providers=ctx.providers, statuses=ctx.statuses,
                          usage=ctx.usage, now=ctx.now)
    for option in normal_order(options):
        if need <= 0:
            break
        provider = option.spec.name
        if not option.status.available or option.recent_error is not None:
            continue  # preempting does not help a provider that cannot make nodes
        if ctx.usage.by_provider[provider] < option.spec.quota.max_nodes:
            continue  # not contested: the pool's own max_nodes is what stops it there
        room = need
        if option.placement.max_nodes is not None:
            pending = sum(1 for p in inflight if p.provider == provider)
            room = min(room, option.placement.max_nodes - pending
                       - ctx.usage.by_pool_provider[(name, provider)])
        for victim in victims:
            view = ctx.views[victim.name]
            floor, _ = scheduled_floor(victim, ctx.now)
            for node in scale_in_order(victim, view.active, ctx.providers):
                if node.machine is None or node.machine.provider != provider:
                    continue
                if node.identity in ctx.taken:
                    continue
                left = view.size - ctx.disrupted[victim.name]
                blocked = ("not needed" if room <= 0 or need <= 0 else
                           f"would take pool {victim.name} below its min {floor} "
                           f"({left} nodes)" if left - 1 < floor else
                           ctx.budget.allows(victim, provider))
                if blocked is not None:
                    considered.append(NodeCandidate(node.identity, provider, False,
                                                    f"skipped: {blocked}"))
                    continue
                facts = node.facts
                gears = facts.gears.total if facts is not None else 0
                considered.append(NodeCandidate(
                    node.identity, provider, True,
                    f"chosen: pool {victim.name} (priority {victim.priority}, preemptible) "
                    f"node on {provider}, {gears} gears to move"))
                drains.append(Drain(
                    pool=victim.name, identity=node.identity, cause="preemption",
                    preempted_by=name,
                    reason=(f"preempted by pool {name} (priority {policy.priority} > "
                            f"{victim.priority}): it needs {missing} more node(s) and "
                            f"cannot get them elsewhere ({why_missing}); draining "
                            f"{node.identity} of preemptible pool {victim.name} frees its "
                            f"{provider} quota for {name}; {victim.name} keeps {left - 1} "
                            f"node(s) (min {floor})")))
                ctx.taken.add(node.identity)
                ctx.disrupted[victim.name] += 1
                ctx.budget.take(victim.name, provider)
                ctx.preemptions[node.identity] = Preemption(
                    identity=node.identity, victim_pool=victim.name, by_pool=name,
                    provider=provider, at=ctx.now)
                need -= 1
                room -= 1
    if drains:
        notes.append(f"preempting {len(drains)} node(s): "
                     f"{', '.join(f'{d.identity} ({d.pool})' for d in drains)}")
    elif need > 0:
        notes.append("no preemptible node of a lower-priority pool can be taken"
                     + (f" ({considered[0].note.removeprefix('skipped: ')})" if considered else ""))
    shown = tuple(considered[:20])
    return [replace(d, candidates=shown) for d in drains], notes
