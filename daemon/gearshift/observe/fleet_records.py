"""The records ``FleetModel`` keeps: one entry per node, refusals, the snapshot cache.

Plain data and the one ordering rule (which of two facts messages is newer), kept apart
from ``fleet.py`` so the model there reads as the trust rules it applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gearshift.model import Machine, Node, NodeFacts


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
    machines: Mapping[str, Machine]
    vouched: frozenset[str] | None
    nodes: tuple[Node, ...]
    index: dict[str, int]  # identity -> its position in ``nodes``
