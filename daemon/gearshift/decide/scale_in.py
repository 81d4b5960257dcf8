"""Which nodes to drain when a pool is too big, in the order the policy's strategy says.

Only nodes gearshift owns (it knows their machine), that are active and have fresh facts,
are candidates: a node we did not make, or cannot see, is never taken away. Nodes on
burst-only placements go first whatever the strategy (they are the expensive stopgap);
the strategy orders the rest, and the identity breaks ties so the order is stable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from heapq import heapify, heappop

from gearshift.model import Node
from gearshift.policy.schema import PoolPolicy, ProvidersFile


def _sort_key(strategy: str, providers: ProvidersFile) -> Callable[[Node], tuple[float, str]]:
    def key(node: Node) -> tuple[float, str]:
        facts, machine = node.facts, node.machine
        assert facts is not None and machine is not None
        if strategy == "oldest":
            value = machine.created_at or 0.0
        elif strategy == "newest":
            value = -(machine.created_at or 0.0)
        elif strategy == "costliest_first":
            spec = providers.provider(machine.provider)
            value = -(spec.cost_per_hour if spec else 0.0)
        else:  # fewest_gears: the fewest gears to move, idle and stopped included
            value = float(facts.gears.total)
        return (value, node.identity)

    return key


def scale_in_order(policy: PoolPolicy, nodes: Sequence[Node],
                   providers: ProvidersFile) -> Iterator[Node]:
    """Eligible victims, best first: burst nodes, then the strategy's order. Lazily (a heap,
    not a sort): a scale-in looks at a few of a pool that may hold thousands."""
    burst = {p.provider for p in policy.placement if p.burst_only}
    # Identities are unique in a snapshot: the position only keeps nodes out of comparisons.
    heap: list[tuple[bool, float, str, int, Node]]
    if policy.scale_in.strategy == "fewest_gears":  # the default, without a call per node
        heap = [(n.machine.provider not in burst, n.facts.gears.total, n.identity, i, n)
                for i, n in enumerate(nodes) if n.machine is not None and n.facts is not None]
    else:
        key = _sort_key(policy.scale_in.strategy, providers)
        heap = [(n.machine.provider not in burst, *key(n), i, n) for i, n in enumerate(nodes)
                if n.machine is not None and n.facts is not None]
    heapify(heap)
    while heap:
        yield heappop(heap)[-1]
