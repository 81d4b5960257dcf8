"""Keep the fleet honest over time: who vouches for which node, who is forgotten, who is held.

Three small jobs the daemon wires around the fleet model:

* ``Vouching.run`` asks the platform every ``trust.vouch_interval`` which nodes are district
  members; the fleet then counts a node that is not ours only when the platform lists it.
  A platform that cannot tell (``none``) leaves every node counted; a listing that fails
  keeps the last good one (and says so in the log).
* ``Vouching.expire`` (before each reconcile) forgets nodes that are not ours and have been
  silent for ``trust.forget_after``, and exports how many nodes are held and why some count
  for nothing.
* ``untrusted`` is what ``/v1/status`` shows: every node that counts for no pool now, and
  every identity whose last message was refused, each with its reason.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import Any

import structlog

from gearshift.act.platform.base import Platform
from gearshift.clock import Clock
from gearshift.errors import PlatformError
from gearshift.metrics import Metrics
from gearshift.model import FleetSnapshot, Node, NodeState
from gearshift.observe.fleet import FleetModel
from gearshift.records import Journal, pending_nodes
from gearshift.settings import TrustSettings

log = structlog.get_logger(component="gearshift.trust")

SHOWN = 200  # at most this many nodes of each kind in /v1/status
EXPIRE_EVERY = 10.0


class Vouching:
    def __init__(self, *, fleet: FleetModel, platform: Platform, journal: Journal,
                 clock: Clock, settings: TrustSettings, metrics: Metrics | None = None) -> None:
        self.fleet = fleet
        self.platform = platform
        self.journal = journal
        self.clock = clock
        self.settings = settings
        self.metrics = metrics
        self.last_listed: float | None = None
        self.last_expired: float | None = None
        self.failing = False

    async def refresh(self) -> None:
        """Ask the platform for its members once; a failure keeps the last good answer."""
        try:
            members = await self.platform.members()
        except PlatformError as exc:
            if not self.failing:
                log.warning("cannot list district members; the last list stays in force",
                            error=str(exc)[:300])
            self.failing = True
            return
        if self.failing:
            log.info("district members listed again")
        self.failing = False
        self.last_listed = self.clock.now()
        self.fleet.set_vouched(members)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.refresh()
            await self.clock.wait_for(stop, self.settings.vouch_interval)

    async def expire(self) -> None:
        """At most every ``EXPIRE_EVERY`` seconds: it walks the fleet, and runs before a
        reconcile, on the way from a fact to a decision."""
        now = self.clock.now()
        if self.last_expired is not None and now - self.last_expired < EXPIRE_EVERY:
            return
        self.last_expired = now
        keep = set(await self.journal.machines())
        keep.update(p.identity for p in pending_nodes(await self.journal.open_operations()))
        self.fleet.set_owned(frozenset(keep))
        gone = self.fleet.expire(now, keep=keep)
        if gone:
            log.info("forgot nodes that are not ours and silent for trust.forget_after",
                     count=len(gone), first=gone[:5])
        if self.metrics is not None:
            self.metrics.nodes_forgotten.inc(len(gone))
            self.metrics.fleet_nodes.set(len(self.fleet))


def _counting_for_nothing(snapshot: FleetSnapshot | None) -> Iterator[tuple[Node, str]]:
    """Each node that counts for no pool now, with its reason."""
    for node in snapshot.nodes if snapshot is not None else ():
        if node.state in (NodeState.UNKNOWN, NodeState.UNVOUCHED):
            yield node, node.why_unknown or node.state.value


def untrusted(fleet: FleetModel, snapshot: FleetSnapshot | None, *,
              now: float) -> dict[str, Any]:
    """Nodes that count for nothing now, and refused messages, each with the reason."""
    nodes: list[dict[str, Any]] = []
    why: Counter[str] = Counter()
    for node, reason in _counting_for_nothing(snapshot):
        why[_why(reason)] += 1
        if len(nodes) < SHOWN:
            nodes.append({"identity": node.identity, "state": node.state.value,
                          "reason": reason, "ours": node.machine is not None,
                          "last_seen": node.last_seen})
    refused = [{"identity": identity, "reason": r.reason, "detail": r.detail, "at": r.at}
               for identity, r in reversed(fleet.refusals.items())][:SHOWN]
    return {"nodes": nodes, "counts": dict(why), "refused": refused,
            "disputed": fleet.disputes(now)}


UNTRUSTED_WHY = ("silent", "agent offline (last will)", "bad facts",
                 "facts disputed by the platform", "not ours and not a district member")


def _why(reason: str) -> str:
    """A bounded label for a reason ("silent for 312s" -> "silent")."""
    return reason.split(":", maxsplit=1)[0].split(" for ", maxsplit=1)[0]


def count_untrusted(metrics: Metrics, snapshot: FleetSnapshot | None) -> None:
    counts = dict.fromkeys(UNTRUSTED_WHY, 0)
    for _, reason in _counting_for_nothing(snapshot):
        label = _why(reason)
        counts[label] = counts.get(label, 0) + 1
    for label, count in counts.items():
        metrics.untrusted_nodes.labels(label).set(count)
