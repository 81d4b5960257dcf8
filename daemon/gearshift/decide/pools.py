"""Split a fleet snapshot into pools: which nodes, booting nodes and drains each pool owns.

A node belongs to the first pool (highest priority) whose selector matches its facts.
Nodes on their way (booting) and drains belong to the pool that asked for them.

``read_fleet`` is the one loop over the fleet's nodes a plan always makes (at 100k nodes
a plan must stay within a few plain passes over them): it splits the pools, sums their
gears, lists burst nodes and tallies each pool's active machines per provider
(``ProviderShare``: how many, and the fewest and most slots among them), with as few dict
lookups per node as it can (a profile that decides its pool alone is one lookup, the
provider one more). Consolidation weighs every calm pool's dearer slots on every plan:
the tallies let it do so per provider instead of per node, and they give the machines per
provider and pool (``Usage``) whenever every machine of ours is an active node of the pool
it was made for, or the few that are not were counted on the side. When that does not
hold, ``Usage`` counts them when first read, in one more pass; the newest machine per
provider (``Usage.newest``: a provider that refused capacity recently) is always counted
that way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

from gearshift.decide.placement import Usage
from gearshift.model import DrainProgress, FleetSnapshot, Node, NodeState, PendingNode
from gearshift.policy.schema import PoolPolicy


class PoolView(NamedTuple):
    """One pool's share of the snapshot, with the sums the planner needs (summed once, when
    the fleet is split: a plan reads them several times, and a pool may hold thousands of
    nodes). Immutable; a named tuple, as a frozen dataclass costs several times more to
    build and a plan builds one per pool."""

    policy: PoolPolicy
    active: tuple[Node, ...]
    draining: tuple[Node, ...]
    unknown: tuple[Node, ...]
    pending: tuple[PendingNode, ...]
    drains: tuple[DrainProgress, ...]
    active_gears: int = 0
    capacity_gears: int = 0
    burst: tuple[Node, ...] = ()  # active nodes of ours on the pool's burst-only providers
    booting_gears: int = 0  # slots on the nodes on their way
    draining_gears: int = 0  # active gears on nodes we drain: they need room on the active ones
    # Nodes that count against min and max: active, on their way, not heard from, or out of
    # service without a drain of ours (deactivated by someone else, or saying so falsely:
    # either way the machine is there and costs, so max still holds).
    size: int = 0
    # The active machines of ours in the pool, per provider (read-only once built).
    shares: Mapping[str, ProviderShare] = {}


class ProviderShare:
    """The active nodes of one pool on machines of one provider: how many, and the fewest
    and most slots (``max_active_gears``) any of them has. Built during the pass; read-only
    after it."""

    __slots__ = ("burst", "count", "least", "most", "off", "slots")

    def __init__(self, slots: int, *, burst: bool) -> None:
        self.burst = burst  # the pool's burst-only provider
        self.count = 0
        self.slots = slots  # the first node's: most nodes of a provider have the same
        self.least = slots
        self.most = slots
        self.off = 0  # the other nodes' slots minus the first one's, summed

    def saw(self, slots: int) -> None:
        """A node with other slots than the first one's (the only per-node branch taken)."""
        self.least = min(self.least, slots)
        self.most = max(self.most, slots)
        self.off += slots - self.slots

    @property
    def capacity(self) -> int:
        """The slots of all its nodes."""
        return self.count * self.slots + self.off


@dataclass(frozen=True)
class FleetReading:
    """Everything a plan reads from the fleet's nodes, gathered in one pass over them."""

    views: dict[str, PoolView]
    usage: Usage


_UNSEEN = "\0unseen"  # no pool name can be this: "not matched yet"


class _Members:
    """One pool's nodes by state while the pass runs, with the active sums."""

    __slots__ = ("active", "active_gears", "burst_providers", "capacity", "draining", "name",
                 "shares", "unknown")

    def __init__(self, policy: PoolPolicy) -> None:
        self.name = policy.name
        self.active: list[Node] = []
        self.draining: list[Node] = []
        self.unknown: list[Node] = []
        self.active_gears = 0
        self.capacity = 0
        self.burst_providers = frozenset(p.provider for p in policy.placement if p.burst_only)
        self.shares: dict[str, ProviderShare] = {}

    def share(self, provider: str, slots: int) -> ProviderShare:
        share = self.shares[provider] = ProviderShare(
            slots, burst=provider in self.burst_providers)
        return share


def _routes(pools: Sequence[PoolPolicy], members: dict[str, _Members]
            ) -> tuple[dict[str, _Members], dict[str, list[PoolPolicy]]]:
    """The pools of each node profile, and the members of the pool a profile alone decides
    (its first pool selects on the profile only: no district, no labels)."""
    by_profile: dict[str, list[PoolPolicy]] = {}  # a selector always names its profile
    for policy in pools:
        by_profile.setdefault(policy.selector.node_profile, []).append(policy)
    routes = {profile: members[candidates[0].name]
              for profile, candidates in by_profile.items()
              if candidates[0].selector.district is None and not candidates[0].selector.labels}
    return routes, by_profile


def read_fleet(snapshot: FleetSnapshot, pools: Sequence[PoolPolicy]) -> FleetReading:
    """Each pool's view and the usage per provider (counted when first read); ``pools``
    ordered by priority (highest first). A node belongs to the first pool whose selector
    matches it (or, matching none, to the pool its machine was made for)."""
    members = {p.name: _Members(p) for p in pools}
    routes, by_profile = _routes(pools, members)
    pending_ids = {p.identity for p in snapshot.pending}
    # Nodes share a handful of (profile, district, labels) combinations: match each once.
    owners: dict[tuple[str, str | None, tuple[tuple[str, str], ...]], str | None] = {}
    active, draining, unknown = NodeState.ACTIVE, NodeState.DRAINING, NodeState.UNKNOWN
    owners_get, routes_get, members_get = owners.get, routes.get, members.get
    # Machines the shares do not count (not active, no facts, in no pool): (provider, pool
    # made for) -> count; and those a share counts for another pool than the one they were
    # made for: (pool matched, pool made for, provider) -> count.
    aside: Counter[tuple[str, str | None]] = Counter()
    moved: Counter[tuple[str, str | None, str]] = Counter()
    for node in snapshot.nodes:
        machine = node.machine
        if pending_ids and node.identity in pending_ids:
            continue
        facts = node.facts
        if facts is None:
            if machine is not None:
                aside[(machine.provider, machine.pool)] += 1
            continue
        into = routes_get(facts.node_profile)
        if into is None:  # the pool depends on more than the profile, or none selects it
            owner = None
            candidates = by_profile.get(facts.node_profile)
            if candidates is not None:
                labels = facts.labels
                key = (facts.node_profile, facts.district_uuid,
                       tuple(sorted(labels.items())) if labels else ())
                owner = owners_get(key, _UNSEEN)
                if owner is _UNSEEN:
                    owner = owners[key] = next((p.name for p in candidates
                                                if p.selector.matches(facts)), None)
            if owner is not None:
                into = members[owner]
            elif machine is not None and machine.pool is not None:
                into = members_get(machine.pool)  # the pool its machine was made for
            if into is None:
                if machine is not None:
                    aside[(machine.provider, machine.pool)] += 1
                continue
        state = node.state
        if state is active:
            into.active.append(node)
            into.active_gears += facts.gears.active
            slots = facts.max_active_gears
            if machine is None:
                into.capacity += slots  # (a machine's slots: its share's capacity)
                continue
            try:
                share = into.shares[machine.provider]
            except KeyError:
                share = into.share(machine.provider, slots)
            share.count += 1
            if slots != share.slots:
                share.saw(slots)
            if machine.pool != into.name:
                moved[(into.name, machine.pool, machine.provider)] += 1
            continue
        if machine is not None:
            aside[(machine.provider, machine.pool)] += 1
        if state is draining:
            into.draining.append(node)
        elif state is unknown:
            into.unknown.append(node)
    usage = Usage(nodes=snapshot.nodes, pending=snapshot.pending,
                  machines=partial(_machines, members.values(), aside, moved))
    pending_by_pool: dict[str, list[PendingNode]] = {}
    for booting in snapshot.pending:
        pending_by_pool.setdefault(booting.pool, []).append(booting)
    drains_by_pool: dict[str, list[DrainProgress]] = {}
    for drain in snapshot.drains:
        drains_by_pool.setdefault(drain.pool, []).append(drain)
    views = {}
    for policy in pools:
        m = members[policy.name]
        capacity, burst = m.capacity, False
        for share in m.shares.values():
            capacity += share.count * share.slots + share.off  # (its capacity)
            burst = burst or share.burst
        pending = tuple(pending_by_pool.get(policy.name, ()))
        drains = tuple(drains_by_pool.get(policy.name, ()))
        draining_gears = others = 0
        if m.draining:
            ours = {d.identity for d in drains}
            draining_gears = sum(n.facts.gears.active for n in m.draining
                                 if n.facts and n.identity in ours)
            others = sum(1 for n in m.draining if n.identity not in ours)
        views[policy.name] = PoolView(
            policy=policy, active=tuple(m.active), draining=tuple(m.draining),
            unknown=tuple(m.unknown), pending=pending, drains=drains,
            active_gears=m.active_gears, capacity_gears=capacity,
            burst=tuple(n for n in m.active if n.machine is not None  # (rare, for a while)
                        and n.machine.provider in m.burst_providers) if burst else (),
            booting_gears=sum(p.max_active_gears for p in pending) if pending else 0,
            draining_gears=draining_gears, shares=m.shares,
            size=len(m.active) + len(pending) + len(m.unknown) + others)
    return FleetReading(views=views, usage=usage)


def _machines(members: Iterable[_Members], aside: Counter[tuple[str, str | None]],
              moved: Counter[tuple[str, str | None, str]]
              ) -> tuple[Counter[str], Counter[tuple[str, str]]]:
    """Machines of ours per provider and per (pool made for, provider), from the shares and
    the machines counted aside (booting nodes left out, as ``Usage`` counts them)."""
    by_provider: Counter[str] = Counter()
    by_pool_provider: Counter[tuple[str, str]] = Counter()
    for m in members:
        for provider, share in m.shares.items():
            by_provider[provider] += share.count
            by_pool_provider[(m.name, provider)] += share.count
    for (matched, made_for, provider), count in moved.items():
        by_pool_provider[(matched, provider)] -= count
        if made_for is not None:
            by_pool_provider[(made_for, provider)] += count
    for (provider, made), count in aside.items():
        by_provider[provider] += count
        if made is not None:
            by_pool_provider[(made, provider)] += count
    return by_provider, +by_pool_provider


def split_by_pool(snapshot: FleetSnapshot, pools: Sequence[PoolPolicy]) -> dict[str, PoolView]:
    """Each pool's view; ``pools`` must be ordered by priority (highest first)."""
    return read_fleet(snapshot, pools).views
