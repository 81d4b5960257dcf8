"""Each snapshot's ``Node`` records, rebuilt only where something they show changed.

A reconcile takes several snapshots in a row, and at 10k nodes (or over a simulated week
of 2 000) building every node's record each time was most of a snapshot's cost. Nothing a
snapshot shows changes unless a message arrived (the fleet's version and its dirty
nodes), a machine was made or released, a drain or a parking began or ended, a node was
forgotten, or time passed the instant until which a node's record holds (its facts turn
stale). Each of those names the nodes it touched, so only theirs are rebuilt, in place,
and new nodes are appended in the order a whole build would give them; a whole build
happens only when the platform's vouched set changed, a dispute began or ended, or much
of the fleet changed at once. ``tests/test_observe_units.py`` checks, on random
histories, that the result equals a build from scratch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import replace
from itertools import islice

from gearshift.model import Machine, Node, NodeState
from gearshift.observe.fleet_records import Entry, SnapshotCache, node_state

REBUILD_WHOLE_ABOVE = 0.2  # share of the fleet changed since the last snapshot


class NodeBuilder:
    """The last snapshot's nodes, and what changed since (for ``FleetModel`` only)."""

    __slots__ = ("cache", "removed")

    def __init__(self) -> None:
        self.cache: SnapshotCache | None = None
        self.removed: set[str] = set()  # nodes forgotten since the cache was built

    def reset(self) -> None:
        """The next snapshot is built whole (a dispute, a new vouched set)."""
        self.cache = None

    def forget(self, identity: str) -> None:
        if self.cache is not None:
            self.removed.add(identity)  # the next snapshot drops it from the cached nodes

    def index_of(self, nodes: tuple[Node, ...]) -> dict[str, int] | None:
        """identity -> position in ``nodes``, when they are the last ones built."""
        cache = self.cache
        return cache.index if cache is not None and cache.nodes is nodes else None

    def nodes(self, now: float, *, machines: Mapping[str, Machine], draining: frozenset[str],
              parked: frozenset[str], entries: dict[str, Entry], dirty: set[str],
              version: int, vouched: frozenset[str] | None,
              disputed: Mapping[str, tuple[float, str]], stale_after: float
              ) -> tuple[Node, ...]:
        """Every entry's ``Node`` at ``now``, in ``entries``' order; ``dirty``: the entries
        changed since the last call, ``version``: the fleet's change counter."""
        cache = self.cache
        same_inputs = (cache is not None and now <= cache.valid_until
                       and cache.draining == draining and cache.parked == parked
                       and cache.vouched is vouched
                       and (cache.machines is machines or cache.machines == machines))
        if cache is not None and same_inputs and cache.version == version:
            return cache.nodes
        if self.removed:
            if cache is not None:
                cache = _drop(cache, self.removed)
                dirty = {i for i in dirty if i in entries}  # the rest were forgotten
                same_inputs = False  # their machines left the journal too: see below
            self.removed = set()
        if cache is not None and not same_inputs and cache.vouched is vouched:
            # A create, a retire or a drain changed a few nodes' inputs, time passed some
            # node's expiry: those are dirty too.
            dirty = dirty | _affected(cache, machines, draining, parked, entries)
            if now > cache.valid_until:
                cached = cache.nodes
                dirty |= {cached[i].identity for i, expires in enumerate(cache.expiries)
                          if expires < now}
            same_inputs = True

        def build(identity: str, entry: Entry) -> tuple[Node, float]:
            return _node(identity, entry, now, machines, draining, parked=parked,
                         vouched=vouched, disputed=disputed, stale_after=stale_after)

        if (cache is not None and same_inputs
                and len(dirty) <= REBUILD_WHOLE_ABOVE * len(entries)
                and all(i in entries for i in dirty)):
            nodes = list(cache.nodes)
            expiries = list(cache.expiries)
            index = cache.index
            if len(entries) > len(nodes):
                # New nodes: apart from the forgotten ones dropped above, entries only
                # grow, so they are the ones past the cached count, in the order a whole
                # build would put them.
                index = dict(index)  # the last snapshot holds the old one
                for identity, entry in islice(entries.items(), len(nodes), None):
                    node, expires = build(identity, entry)
                    index[identity] = len(nodes)
                    nodes.append(node)
                    expiries.append(expires)
                dirty = {i for i in dirty if i in cache.index}
            for identity in dirty:
                position = index[identity]
                nodes[position], expiries[position] = build(identity, entries[identity])
        else:
            nodes, expiries, index = [], [], {}
            for identity, entry in entries.items():
                node, expires = build(identity, entry)
                index[identity] = len(nodes)
                nodes.append(node)
                expiries.append(expires)
        built = tuple(nodes)
        # Journals hand out the same read-only mapping while nothing changed: keep it.
        self.cache = SnapshotCache(version=version, valid_until=min(expiries, default=math.inf),
                                   draining=draining, parked=parked, machines=machines,
                                   vouched=vouched, nodes=built, index=index,
                                   expiries=tuple(expiries))
        return built


def _drop(cache: SnapshotCache, removed: AbstractSet[str]) -> SnapshotCache:
    """``cache`` without the nodes in ``removed`` (the survivors keep their order)."""
    kept = [i for i, n in enumerate(cache.nodes) if n.identity not in removed]
    nodes = tuple(cache.nodes[i] for i in kept)
    return replace(cache, nodes=nodes, index={n.identity: i for i, n in enumerate(nodes)},
                   expiries=tuple(cache.expiries[i] for i in kept), version=-1)


def _affected(cache: SnapshotCache, machines: Mapping[str, Machine], draining: frozenset[str],
              parked: frozenset[str], entries: Mapping[str, Entry]) -> set[str]:
    """The nodes whose machine, drain or parking differs from ``cache``'s."""
    changed = set(draining ^ cache.draining) | (parked ^ cache.parked)
    if cache.machines is not machines:
        changed.update(identity for identity, _ in machines.items() ^ cache.machines.items())
    return {identity for identity in changed if identity in entries}


def _node(identity: str, entry: Entry, now: float, machines: Mapping[str, Machine],
          draining: AbstractSet[str], *, parked: AbstractSet[str],
          vouched: AbstractSet[str] | None, disputed: Mapping[str, tuple[float, str]],
          stale_after: float) -> tuple[Node, float]:
    """The node's ``Node`` at ``now`` (reused when unchanged), and until when it holds."""
    machine = machines.get(identity)
    node = entry.node
    if (node is not None and node.state is NodeState.ACTIVE and node.facts is entry.facts
            and node.machine is machine and entry.online
            and now - entry.last_seen <= stale_after and identity not in draining
            and identity not in disputed
            and (machine is not None or vouched is None or identity in vouched)):
        # Active on these very facts and still fresh (an agent re-published them): what
        # ``node_state`` would say again, as of its new ``last_seen``.
        if node.last_seen != entry.last_seen:
            node = entry.node = Node(identity=identity, state=NodeState.ACTIVE,
                                     facts=entry.facts, last_seen=entry.last_seen,
                                     machine=machine)
        return node, entry.last_seen + stale_after
    state, why = node_state(entry, now=now, draining=draining, owned=machine is not None,
                            vouched=vouched, disputed=disputed, stale_after=stale_after,
                            parked=parked)
    expires = math.inf
    if state is NodeState.PARKED:
        pass  # parked until its facts (a resume) or its warm-pool phase change
    elif state is not NodeState.UNKNOWN:  # until it goes stale
        expires = entry.last_seen + stale_after
    elif why is not None and why.startswith("silent"):
        # "silent for Ns" shows the rounded seconds: it holds until just before they
        # round up (``now + 1`` let a snapshot one second later show the old text).
        shown = round(now - entry.last_seen)
        expires = math.nextafter(entry.last_seen + shown + 0.5, -math.inf)
    held = disputed.get(identity)
    if held is not None:  # a dispute holds while ``until > now``: its record, just before
        expires = min(expires, math.nextafter(held[0], -math.inf))
    # Reuse the Node built last time when nothing it says has changed.
    if (node is None or node.state is not state or node.why_unknown != why
            or (node.machine is not machine and node.machine != machine)
            or node.last_seen != entry.last_seen):
        node = Node(identity=identity, state=state, facts=entry.facts,
                    last_seen=entry.last_seen, machine=machine, why_unknown=why)
        entry.node = node
    return node, expires
