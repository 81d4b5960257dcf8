"""Which nodes to drain when a pool is too big, in the order the policy's strategy says.

Only nodes gearshift owns (it knows their machine), that are active and have fresh facts,
are candidates: a node we did not make, or cannot see, is never taken away. Nodes on
burst-only placements go first whatever the strategy (they are the expensive stopgap);
the strategy orders the rest, and the identity breaks ties so the order is stable.

The default, ``costliest_per_slot``, weighs cost: the node whose active-gear slots cost
most per hour goes first (what the pool pays for least use), ties by the fewest gears to
move; on a pool with one placement it is ``fewest_gears``. ``oldest``, ``newest``,
``fewest_gears`` and ``costliest_first`` (the dearest node, whatever its size) stay
selectable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from heapq import heapify, heappop

from gearshift.model import Node
from gearshift.policy.schema import PoolPolicy, ProvidersFile


def _sort_key(strategy: str, providers: ProvidersFile
              ) -> Callable[[Node], tuple[float, float, str]]:
    rates = {spec.name: spec.cost_per_hour for spec in providers.providers}  # one lookup each

    def key(node: Node) -> tuple[float, float, str]:
        facts, machine = node.facts, node.machine
        assert facts is not None and machine is not None
        if strategy == "costliest_per_slot":
            per_slot = rates.get(machine.provider, 0.0) / max(1, facts.max_active_gears)
            return (-per_slot, float(facts.gears.total), node.identity)
        if strategy == "oldest":
            value = machine.created_at or 0.0
        elif strategy == "newest":
            value = -(machine.created_at or 0.0)
        elif strategy == "costliest_first":
            value = -rates.get(machine.provider, 0.0)
        else:  # fewest_gears: the fewest gears to move, idle and stopped included
            value = float(facts.gears.total)
        return (value, 0.0, node.identity)

    return key


def scale_in_order(policy: PoolPolicy, nodes: Sequence[Node],
                   providers: ProvidersFile) -> Iterator[Node]:
    """Eligible victims, best first: burst nodes, then the strategy's order. Lazily (a heap,
    not a sort): a scale-in looks at a few of a pool that may hold thousands."""
    burst = {p.provider for p in policy.placement if p.burst_only}
    # Identities are unique in a snapshot: the position only keeps nodes out of comparisons.
    heap: list[tuple[bool, float, float, str, int, Node]]
    strategy = policy.scale_in.strategy
    eligible = [(i, n, n.machine, n.facts) for i, n in enumerate(nodes)
                if n.machine is not None and n.facts is not None]
    if strategy == "fewest_gears":  # the common orders, without a call per node
        heap = [(m.provider not in burst, float(f.gears.total), 0.0, n.identity, i, n)
                for i, n, m, f in eligible]
    elif strategy == "costliest_per_slot":
        rates = {spec.name: spec.cost_per_hour for spec in providers.providers}
        heap = [(m.provider not in burst, -rates.get(m.provider, 0.0) / max(1, f.max_active_gears),
                 float(f.gears.total), n.identity, i, n) for i, n, m, f in eligible]
    else:
        key = _sort_key(strategy, providers)
        heap = [(m.provider not in burst, *key(n), i, n) for i, n, m, f in eligible]
    heapify(heap)
    while heap:
        yield heappop(heap)[-1]
