"""The records ``FleetModel`` keeps: one entry per node, refusals, the snapshot cache.

Plain data and the two rules read straight off a record (which of two facts messages is
newer; what state a node's record puts it in), kept apart from ``fleet.py`` so the model
there reads as the trust rules it applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from gearshift.model import Machine, Node, NodeFacts, NodeState


@dataclass(slots=True)  # one per node: no per-instance __dict__ (~100 bytes less each)
class Entry:
    facts: NodeFacts
    last_seen: float  # when the facts were produced (or received, when they carry no ts)
    online: bool = True
    offline_at: float | None = None  # when its agent said ``offline`` (None: online)
    node: Node | None = None  # the last Node built for a snapshot, reused while unchanged


def newer(new: NodeFacts, old: NodeFacts) -> bool:
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


@dataclass(frozen=True)
class Refusal:
    """Why the last message for an identity was refused (shown in status), and when."""

    reason: str
    detail: str
    at: float


@dataclass(frozen=True)
class SnapshotCache:
    """The last snapshot's nodes, reused while nothing they depend on changed."""

    version: int
    valid_until: float
    draining: frozenset[str]
    parked: frozenset[str]
    machines: Mapping[str, Machine]
    vouched: frozenset[str] | None
    nodes: tuple[Node, ...]
    index: dict[str, int]  # identity -> its position in ``nodes``
    expiries: tuple[float, ...] = ()  # until when each node's record holds (``valid_until``
    # is their least)


def node_state(entry: Entry, *, now: float, draining: AbstractSet[str], owned: bool,
               vouched: AbstractSet[str] | None, disputed: Mapping[str, tuple[float, str]],
               stale_after: float, parked: AbstractSet[str] = frozenset()
               ) -> tuple[NodeState, str | None]:
    """The state ``entry`` puts its node in at ``now``, and why when it counts for nothing.
    A node whose machine a warm pool stopped (``parked``) is expected to be silent: parked,
    not unknown, while it is."""
    if not owned and vouched is not None and entry.facts.identity not in vouched:
        return NodeState.UNVOUCHED, "not ours and not a district member"
    held = disputed.get(entry.facts.identity)
    if held is not None and held[0] > now:
        return NodeState.UNKNOWN, f"facts disputed by the platform: {held[1]}"
    if entry.facts.bad_reason:
        return NodeState.UNKNOWN, f"bad facts: {entry.facts.bad_reason}"
    if entry.facts.identity in parked and (
            not entry.online or now - entry.last_seen > stale_after):
        return NodeState.PARKED, None
    if not entry.online:
        return NodeState.UNKNOWN, "agent offline (last will)"
    if now - entry.last_seen > stale_after:
        return NodeState.UNKNOWN, f"silent for {now - entry.last_seen:.0f}s"
    if entry.facts.identity in draining or not entry.facts.district_active:
        return NodeState.DRAINING, None
    return NodeState.ACTIVE, None
