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
    """The order of ``oldest``, ``newest`` and ``costliest_first`` (``_grouped`` has the
    other two)."""
    rates = {spec.name: spec.cost_per_hour for spec in providers.providers}  # one lookup each

    def key(node: Node) -> tuple[float, float, str]:
        machine = node.machine
        assert machine is not None
        if strategy == "oldest":
            value = machine.created_at or 0.0
        elif strategy == "newest":
            value = -(machine.created_at or 0.0)
        else:  # costliest_first
            value = -rates.get(machine.provider, 0.0)
        return (value, 0.0, node.identity)

    return key


def scale_in_order(policy: PoolPolicy, nodes: Sequence[Node],
                   providers: ProvidersFile) -> Iterator[Node]:
    """Eligible victims, best first: burst nodes, then the strategy's order. Lazily (a heap,
    not a sort): a scale-in looks at a few of a pool that may hold thousands."""
    burst = {p.provider for p in policy.placement if p.burst_only}
    strategy = policy.scale_in.strategy
    if strategy in ("costliest_per_slot", "fewest_gears"):  # the common orders
        yield from _grouped(nodes, burst=burst, providers=providers,
                            by_slots=strategy == "costliest_per_slot")
        return
    key = _sort_key(strategy, providers)
    # Identities are unique in a snapshot: the position only keeps nodes out of comparisons.
    heap = [(n.machine.provider not in burst, *key(n), i, n) for i, n in enumerate(nodes)
            if n.machine is not None and n.facts is not None]
    heapify(heap)
    while heap:
        yield heappop(heap)[-1]


def _grouped(nodes: Sequence[Node], *, burst: set[str], providers: ProvidersFile,
             by_slots: bool) -> Iterator[Node]:
    """The two common orders (``by_slots``: ``costliest_per_slot``, else ``fewest_gears``)
    without ordering the whole pool: burst nodes first, then the dearest slot and the
    fewest gears (or the fewest gears), then the identity. Nodes of one provider and size
    (or gear count) share the leading terms, so they are grouped, and only the groups a
    scale-in reaches are heaped: a pool of 10 000 nodes drains a few from its first groups
    without sorting the rest."""
    rates = {spec.name: spec.cost_per_hour for spec in providers.providers}
    groups: dict[tuple[str, int], list[tuple[float, str, int, Node]]] = {}
    for i, node in enumerate(nodes):
        machine, facts = node.machine, node.facts
        if machine is None or facts is None:
            continue
        total = facts.gears.total
        if by_slots:
            key, entry = (machine.provider, facts.max_active_gears), (float(total),
                                                                      node.identity, i, node)
        else:
            key, entry = (machine.provider, total), (0.0, node.identity, i, node)
        members = groups.get(key)
        if members is None:
            groups[key] = [entry]
        else:
            members.append(entry)
    ranks: dict[tuple[bool, float], list[tuple[float, str, int, Node]]] = {}
    for (provider, size), members in groups.items():  # equal ranks are merged
        lead = -rates.get(provider, 0.0) / max(1, size) if by_slots else float(size)
        ranks.setdefault((provider not in burst, lead), []).extend(members)
    for rank in sorted(ranks):
        heap = ranks[rank]
        heapify(heap)
        while heap:
            yield heappop(heap)[-1]
