"""Split a fleet snapshot into pools: which nodes, booting nodes and drains each pool owns.

A node belongs to the first pool (highest priority) whose selector matches its facts.
Nodes on their way (booting) and drains belong to the pool that asked for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from gearshift.model import DrainProgress, FleetSnapshot, Node, NodeState, PendingNode
from gearshift.policy.schema import PoolPolicy


@dataclass(frozen=True)
class PoolView:
    """One pool's share of the snapshot, with the sums the planner needs (each summed once:
    a plan reads them several times, and a pool may hold thousands of nodes)."""

    policy: PoolPolicy
    active: tuple[Node, ...]
    draining: tuple[Node, ...]
    unknown: tuple[Node, ...]
    pending: tuple[PendingNode, ...]
    drains: tuple[DrainProgress, ...]

    @cached_property
    def active_gears(self) -> int:
        return sum(n.facts.gears.active for n in self.active if n.facts)

    @cached_property
    def capacity_gears(self) -> int:
        return sum(n.facts.max_active_gears for n in self.active if n.facts)

    @cached_property
    def booting_gears(self) -> int:
        return sum(p.max_active_gears for p in self.pending)

    @cached_property
    def draining_gears(self) -> int:
        """Active gears on nodes we are draining: they need room on the active nodes."""
        ours = {d.identity for d in self.drains}
        return sum(n.facts.gears.active for n in self.draining if n.facts and n.identity in ours)

    @property
    def size(self) -> int:
        """Nodes that count against min and max: active, on their way, or not heard from."""
        return len(self.active) + len(self.pending) + len(self.unknown)


_UNSEEN = "\0unseen"  # no pool name can be this: "not matched yet"


def split_by_pool(snapshot: FleetSnapshot, pools: Sequence[PoolPolicy]) -> dict[str, PoolView]:
    """Each pool's view; ``pools`` must be ordered by priority (highest first)."""
    # pool -> state -> its nodes, in one pass (this runs on every plan, at 10k nodes)
    members: dict[str, dict[NodeState, list[Node]]] = {
        p.name: {state: [] for state in NodeState} for p in pools}
    pending_ids = {p.identity for p in snapshot.pending}
    # Nodes share a handful of (profile, district, labels) combinations: match each once.
    owners: dict[tuple[str, str | None, tuple[tuple[str, str], ...]], str | None] = {}
    for node in snapshot.nodes:
        facts = node.facts
        if facts is None or (pending_ids and node.identity in pending_ids):
            continue
        labels = facts.labels
        key = (facts.node_profile, facts.district_uuid,
               tuple(sorted(labels.items())) if labels else ())
        owner = owners.get(key, _UNSEEN)
        if owner is _UNSEEN:
            owner = owners[key] = next((p.name for p in pools if p.selector.matches(facts)),
                                       None)
        if owner is None and node.machine is not None and node.machine.pool in members:
            owner = node.machine.pool
        if owner is not None:
            members[owner][node.state].append(node)
    views = {}
    for policy in pools:
        nodes = members[policy.name]
        views[policy.name] = PoolView(
            policy=policy,
            active=tuple(nodes[NodeState.ACTIVE]),
            draining=tuple(nodes[NodeState.DRAINING]),
            unknown=tuple(nodes[NodeState.UNKNOWN]),
            pending=tuple(p for p in snapshot.pending if p.pool == policy.name),
            drains=tuple(d for d in snapshot.drains if d.pool == policy.name),
        )
    return views
