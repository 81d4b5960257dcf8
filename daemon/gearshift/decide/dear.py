"""Which of a pool's nodes sit on dearer slots than its cheapest placement offers.

Consolidation (``decide.consolidate``) weighs every calm pool on every plan, so this is
on the path of a steady plan at 100k nodes. A slot costs the provider's ``cost_per_hour``
over the node's *own* slots (its facts' ``max_active_gears``), not its blueprint's: a
node that holds fewer gears than its blueprint says pays more per slot, and may be dearer
than every blueprint of the pool. ``dear_tally`` reads how many nodes are dear, and the
dearest slot, off the tallies per provider that the planner's one pass keeps
(``PoolView.shares``), exactly as ``dear_nodes`` (one look at each node) would give them,
or says it cannot tell; the nodes themselves are listed only when a swap may be made.
"""

from __future__ import annotations

from collections.abc import Sequence

from gearshift.decide.context import PlanContext
from gearshift.model import Node, NodeState
from gearshift.plan import BurstReturn
from gearshift.policy.pricing import cheapest_slot, slot_cost
from gearshift.policy.schema import PoolPolicy

Priced = tuple[Node, float]  # a node and what it costs per hour


def cheapest_blueprint(policy: PoolPolicy, ctx: PlanContext) -> float | None:
    """What a slot costs on the pool's cheapest non-burst placement (by its blueprint);
    None when it has fewer than two: nothing is dearer then. (The plan's policy set
    worked it out once, when the context has it.)"""
    if ctx.cheapest_slots is not None and policy.name in ctx.cheapest_slots:
        return ctx.cheapest_slots[policy.name]
    return cheapest_slot(policy, ctx.providers)


def dear_tally(policy: PoolPolicy, *, ctx: PlanContext,
               returns: dict[str, BurstReturn]) -> tuple[int, float] | None:
    """How many nodes ``dear_nodes`` would list and the dearest slot among them, read off
    the pool's tallies per provider (``PoolView.shares``) instead of its nodes; None when
    they cannot tell, and the nodes must be weighed one by one.

    A slot costs the provider's rate over the node's *own* slots, so a node on the
    cheapest provider with fewer slots than its blueprint is dearer too: a bound from the
    blueprints alone would miss it. Per provider the tally has the fewest and most slots
    of its nodes; ``rate / max(1, slots)`` only falls as the slots grow (rates are not
    negative), so when its most-slotted node is dearer all its nodes are (the
    fewest-slotted is the dearest), when its fewest-slotted node is not, none is, and
    otherwise some are: None. None too when a node of the fleet being swapped or drained
    now is active (``dear_nodes`` leaves those out; the tallies cannot)."""
    cheapest = cheapest_blueprint(policy, ctx)
    if cheapest is None:
        return 0, 0.0
    if returns or ctx.taken:
        for identity in (*returns, *ctx.taken):
            node = ctx.nodes_by_id.get(identity)
            if node is not None and node.state is NodeState.ACTIVE and node.machine is not None:
                return None
    rates = ctx.providers.rates
    count, dearest = 0, 0.0
    for provider, share in ctx.views[policy.name].shares.items():
        if share.burst:
            continue
        rate = rates.get(provider, 0.0)
        if not rate >= 0.0:  # (a NaN too)
            return None
        if slot_cost(rate, share.most) > cheapest:
            count += share.count
            dearest = max(dearest, slot_cost(rate, share.least))
        elif slot_cost(rate, share.least) > cheapest:
            return None
    return count, dearest


def dear_nodes(policy: PoolPolicy, *, ctx: PlanContext,
               returns: dict[str, BurstReturn]) -> list[Priced]:
    """Active nodes of ours on the pool's non-burst placements whose slots cost more than
    the pool's cheapest placement's (by its blueprint), not already being swapped or
    drained: the ones consolidation may weigh. One pass, one dict lookup per node; a
    pool with one non-burst placement has none."""
    cheapest = cheapest_blueprint(policy, ctx)
    if cheapest is None:
        return []
    burst = {p.provider for p in policy.placement if p.burst_only}
    rates = ctx.providers.rates
    dear: list[Priced] = []
    for n in ctx.views[policy.name].active:
        machine, facts = n.machine, n.facts
        if machine is None or facts is None or machine.provider in burst:
            continue
        rate = rates.get(machine.provider, 0.0)
        if slot_cost(rate, facts.max_active_gears) > cheapest and n.identity not in returns \
                and n.identity not in ctx.taken:
            dear.append((n, rate))
    return dear


def weigh(nodes: Sequence[Priced], cheapest: float) -> tuple[list[Priced], int, float]:
    """The nodes whose slots cost more than ``cheapest``, how many, and the dearest slot."""
    dearer: list[Priced] = []
    dearest = 0.0
    for priced in nodes:
        node, rate = priced
        cost = slot_cost(rate, node.facts.max_active_gears if node.facts else 0)
        if cost > cheapest:
            dearer.append(priced)
            dearest = max(dearest, cost)
    return dearer, len(dearer), dearest
