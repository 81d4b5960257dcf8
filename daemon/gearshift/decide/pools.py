"""Split a fleet snapshot into pools: which nodes, booting nodes and drains each pool owns.

A node belongs to the first pool (highest priority) whose selector matches its facts.
Nodes on their way (booting) and drains belong to the pool that asked for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from gearshift.decide.placement import Usage
from gearshift.model import DrainProgress, FleetSnapshot, Node, NodeState, PendingNode
from gearshift.policy.schema import PoolPolicy


@dataclass(frozen=True)
class PoolView:
    """One pool's share of the snapshot, with the sums the planner needs (summed in the one
    pass that splits the fleet: a plan reads them several times, and a pool may hold
    thousands of nodes)."""

    policy: PoolPolicy
    active: tuple[Node, ...]
    draining: tuple[Node, ...]
    unknown: tuple[Node, ...]
    pending: tuple[PendingNode, ...]
    drains: tuple[DrainProgress, ...]
    active_gears: int = 0
    capacity_gears: int = 0
    burst: tuple[Node, ...] = ()  # active nodes of ours on the pool's burst-only providers

    @cached_property
    def booting_gears(self) -> int:
        return sum(p.max_active_gears for p in self.pending)

    @cached_property
    def draining_gears(self) -> int:
        """Active gears on nodes we are draining: they need room on the active nodes."""
        ours = {d.identity for d in self.drains}
        return sum(n.facts.gears.active for n in self.draining if n.facts and n.identity in ours)

    @cached_property
    def size(self) -> int:
        """Nodes that count against min and max: active, on their way, not heard from, or
        out of service without a drain of ours (deactivated by someone else, or saying so
        falsely: either way the machine is there and costs, so max still holds)."""
        ours = {d.identity for d in self.drains}
        others = sum(1 for n in self.draining if n.identity not in ours)
        return len(self.active) + len(self.pending) + len(self.unknown) + others


@dataclass(frozen=True)
class FleetReading:
    """Everything a plan reads from the fleet's nodes, gathered in one pass over them."""

    views: dict[str, PoolView]
    usage: Usage


_UNSEEN = "\0unseen"  # no pool name can be this: "not matched yet"
_COUNTED = (NodeState.ACTIVE, NodeState.DRAINING, NodeState.UNKNOWN)


class _Members:
    """One pool's nodes by state while the pass runs, with the active sums."""

    __slots__ = ("active", "active_gears", "burst", "burst_providers", "capacity",
                 "draining", "unknown")

    def __init__(self, policy: PoolPolicy) -> None:
        self.active: list[Node] = []
        self.draining: list[Node] = []
        self.unknown: list[Node] = []
        self.burst: list[Node] = []
        self.active_gears = 0
        self.capacity = 0
        self.burst_providers = frozenset(p.provider for p in policy.placement if p.burst_only)


def read_fleet(snapshot: FleetSnapshot, pools: Sequence[PoolPolicy]) -> FleetReading:
    """Each pool's view and the usage per provider; ``pools`` ordered by priority (highest
    first). A node belongs to the first pool whose selector matches it (or, matching none,
    to the pool its machine was made for); one pass over the nodes does it all."""
    members = {p.name: _Members(p) for p in pools}
    by_profile: dict[str, list[PoolPolicy]] = {}  # a selector always names its profile
    for policy in pools:
        by_profile.setdefault(policy.selector.node_profile, []).append(policy)
    pending_ids = {p.identity for p in snapshot.pending}
    usage = Usage()
    owned: dict[tuple[str | None, str], int] = {}
    last_made = usage.last_made
    # Nodes share a handful of (profile, district, labels) combinations: match each once.
    owners: dict[tuple[str, str | None, tuple[tuple[str, str], ...]], str | None] = {}
    active, draining, unknown = NodeState.ACTIVE, NodeState.DRAINING, NodeState.UNKNOWN
    owned_get, owners_get, last_get = owned.get, owners.get, last_made.get
    minus_inf = float("-inf")
    for node in snapshot.nodes:
        machine = node.machine
        if pending_ids and node.identity in pending_ids:
            continue
        if machine is not None:
            pair = (machine.pool, machine.provider)
            owned[pair] = owned_get(pair, 0) + 1
            made = machine.created_at
            if made is not None and made > last_get(machine.provider, minus_inf):
                last_made[machine.provider] = made
        facts = node.facts
        if facts is None:
            continue
        labels = facts.labels
        key = (facts.node_profile, facts.district_uuid,
               tuple(sorted(labels.items())) if labels else ())
        owner = owners_get(key, _UNSEEN)
        if owner is _UNSEEN:
            owner = owners[key] = next((p.name for p in by_profile.get(facts.node_profile, ())
                                        if p.selector.matches(facts)), None)
        if owner is None:
            if machine is None or machine.pool not in members:
                continue
            owner = machine.pool
        into = members[owner]
        state = node.state
        if state is active:
            into.active.append(node)
            into.active_gears += facts.gears.active
            into.capacity += facts.max_active_gears
            if machine is not None and machine.provider in into.burst_providers:
                into.burst.append(node)
        elif state is draining:
            into.draining.append(node)
        elif state is unknown:
            into.unknown.append(node)
    for (pool, provider), count in owned.items():
        usage.claim(pool, provider, count)
    pending_by_pool: dict[str, list[PendingNode]] = {}
    for booting in snapshot.pending:
        usage.claim(booting.pool, booting.provider, 1)
        usage.made(booting.provider, booting.requested_at)
        pending_by_pool.setdefault(booting.pool, []).append(booting)
    drains_by_pool: dict[str, list[DrainProgress]] = {}
    for drain in snapshot.drains:
        drains_by_pool.setdefault(drain.pool, []).append(drain)
    views = {}
    for policy in pools:
        m = members[policy.name]
        views[policy.name] = PoolView(
            policy=policy, active=tuple(m.active), draining=tuple(m.draining),
            unknown=tuple(m.unknown), pending=tuple(pending_by_pool.get(policy.name, ())),
            drains=tuple(drains_by_pool.get(policy.name, ())), active_gears=m.active_gears,
            capacity_gears=m.capacity, burst=tuple(m.burst))
    return FleetReading(views=views, usage=usage)


def split_by_pool(snapshot: FleetSnapshot, pools: Sequence[PoolPolicy]) -> dict[str, PoolView]:
    """Each pool's view; ``pools`` must be ordered by priority (highest first)."""
    return read_fleet(snapshot, pools).views
