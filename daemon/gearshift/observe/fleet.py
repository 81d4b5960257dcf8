"""The fleet as gearshift last heard it: the latest trusted facts of every node.

Sources (MQTT, the simulator) feed it; the reconciler reads immutable snapshots from it.
It never goes backwards: facts older than what we hold (by the message's ``ts`` and
``seq``) are dropped. It decides trust: a node is *unknown* when its facts are bad, its
agent said ``offline`` (its last will), or it has been silent longer than ``stale_after``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gearshift.model import (
    CapacityRequest,
    DrainProgress,
    FleetSnapshot,
    Machine,
    Node,
    NodeFacts,
    NodeState,
    PendingNode,
    Signal,
)


@dataclass
class _Entry:
    facts: NodeFacts
    last_seen: float
    online: bool = True


def _newer(new: NodeFacts, old: NodeFacts) -> bool:
    """Is ``new`` at least as recent as ``old``? Messages without ts/seq always win."""
    if new.produced_at is not None and old.produced_at is not None:
        if new.produced_at != old.produced_at:
            return new.produced_at > old.produced_at
        if new.seq is not None and old.seq is not None:
            return new.seq >= old.seq
        return True
    if new.seq is not None and old.seq is not None and new.produced_at is None:
        return new.seq >= old.seq
    return True


class FleetModel:
    """Latest facts per node, plus whether the fact source itself can be trusted."""

    def __init__(self, *, stale_after: float) -> None:
        self.stale_after = stale_after
        self._entries: dict[str, _Entry] = {}
        self._offline: dict[str, float] = {}  # identity -> when it went offline (no facts yet)
        self.source_up = True  # the fact source is connected and has caught up

    def __len__(self) -> int:
        return len(self._entries)

    def ingest(self, facts: NodeFacts, *, received_at: float) -> bool:
        """Store ``facts``; False when they are older than what we already hold."""
        entry = self._entries.get(facts.identity)
        if entry is not None and not _newer(facts, entry.facts):
            return False
        seen = received_at if facts.produced_at is None else min(received_at, facts.produced_at)
        online = entry.online if entry is not None else facts.identity not in self._offline
        if entry is not None and seen > entry.last_seen:
            online = True  # a fresh fact after a last will means the agent is back
        self._entries[facts.identity] = _Entry(facts=facts, last_seen=seen, online=online)
        self._offline.pop(facts.identity, None)
        return True

    def touch(self, identity: str, *, at: float) -> None:
        """The node re-published unchanged facts: it is alive as of ``at``."""
        entry = self._entries.get(identity)
        if entry is not None and at > entry.last_seen:
            entry.last_seen = at

    def set_online(self, identity: str, online: bool, *, at: float) -> None:
        entry = self._entries.get(identity)
        if entry is None:
            if not online:
                self._offline[identity] = at
            return
        entry.online = online

    def forget(self, identity: str) -> None:
        self._entries.pop(identity, None)
        self._offline.pop(identity, None)

    def facts(self, identity: str) -> NodeFacts | None:
        entry = self._entries.get(identity)
        return entry.facts if entry else None

    def identities(self) -> Iterable[str]:
        return self._entries.keys()

    def is_fresh(self, identity: str, now: float) -> bool:
        entry = self._entries.get(identity)
        return (entry is not None and entry.online and entry.facts.bad_reason is None
                and now - entry.last_seen <= self.stale_after)

    def _state(self, entry: _Entry, now: float, draining: set[str]) -> tuple[NodeState, str | None]:
        if entry.facts.bad_reason:
            return NodeState.UNKNOWN, f"bad facts: {entry.facts.bad_reason}"
        if not entry.online:
            return NodeState.UNKNOWN, "agent offline (last will)"
        if now - entry.last_seen > self.stale_after:
            return NodeState.UNKNOWN, f"silent for {now - entry.last_seen:.0f}s"
        if entry.facts.identity in draining or not entry.facts.district_active:
            return NodeState.DRAINING, None
        return NodeState.ACTIVE, None

    def snapshot(self, now: float, *, machines: Mapping[str, Machine] | None = None,
                 pending: Iterable[PendingNode] = (), drains: Iterable[DrainProgress] = (),
                 requests: Iterable[CapacityRequest] = (),
                 signals: Iterable[Signal] = ()) -> FleetSnapshot:
        """An immutable view at ``now``, joined with what the journal knows."""
        machines = machines or {}
        drains = tuple(drains)
        draining = {d.identity for d in drains}
        nodes = []
        for identity, entry in self._entries.items():
            state, why = self._state(entry, now, draining)
            nodes.append(Node(identity=identity, state=state, facts=entry.facts,
                              last_seen=entry.last_seen, machine=machines.get(identity),
                              why_unknown=why))
        # A booting node stops being pending once it has published fresh facts.
        still_pending = tuple(p for p in pending if not self.is_fresh(p.identity, now))
        return FleetSnapshot(taken_at=now, nodes=tuple(nodes), pending=still_pending,
                             drains=drains, requests=tuple(requests), signals=tuple(signals),
                             facts_fresh=self.source_up)
