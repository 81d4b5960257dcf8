"""The fleet as gearshift last heard it: the latest trusted facts of every node.

Sources (MQTT, the simulator) feed it; the reconciler reads immutable snapshots from it.
It never goes backwards: facts older than what we hold (by the message's ``ts`` and
``seq``) are dropped. It decides trust: a node is *unknown* when its facts are bad, its
agent said ``offline`` (its last will), it has been silent longer than ``stale_after``, or
the platform contradicted its facts (a dispute, held for a while). A node that is neither
a machine of ours nor a district member the platform vouches for is *unvouched*: shown,
never counted. A node that is not ours and silent for ``forget_after`` is forgotten, and
the table is bounded: whoever can publish cannot grow it without limit.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet

from gearshift.forecast.result import Forecast
from gearshift.model import (
    CapacityRequest,
    DrainProgress,
    FleetSnapshot,
    Machine,
    Node,
    NodeFacts,
    ParkedMachine,
    PendingNode,
    Signal,
)
from gearshift.observe.fleet_nodes import NodeBuilder
from gearshift.observe.fleet_records import Entry, Refusal, newer

MAX_OFFLINE_WITHOUT_FACTS = 10_000
MAX_REFUSED = 1_000  # identities whose last message was refused, kept to show why


class FleetModel:
    """Latest facts per node, plus whether the fact source itself can be trusted.

    ``source_up`` is what snapshots report as ``facts_fresh``: the fact source sets it.
    After a broker loss the source calls ``await_fresh(lost_at)`` and keeps it down until
    ``recovered()``: every node has sent facts produced after the loss (by their ``ts``;
    facts without one count when they arrive live), or has become unknown anyway (stale,
    offline, bad facts). Retained facts replayed on re-subscribing with an old ``ts`` are
    not evidence that a node is alive.
    """

    def __init__(self, *, stale_after: float, forget_after: float = 3600.0,
                 max_nodes: int = 100_000, max_unvouched: int = 1_000) -> None:
        self.stale_after = stale_after
        self.forget_after = forget_after
        self.max_nodes = max_nodes
        self.max_unvouched = max_unvouched
        self.owned: frozenset[str] = frozenset()  # ours (the journal's machines), kept fresh
        self._unvouched: set[str] = set()  # held nodes neither ours nor vouched for
        # Members the platform vouches for (None: it cannot tell, every node counts).
        self.vouched: frozenset[str] | None = None
        self._disputed: dict[str, tuple[float, str]] = {}  # identity -> (until, why)
        self.refusals: OrderedDict[str, Refusal] = OrderedDict()
        self._entries: dict[str, Entry] = {}
        self._offline: dict[str, float] = {}  # identity -> when it went offline (no facts yet)
        self.source_up = True  # the fact source is connected and has caught up
        self._listeners: list[Callable[[str], None]] = []
        self._version = 0  # bumped by every change a snapshot could show
        self._dirty: set[str] = set()  # nodes changed since the last snapshot was built
        self._built = NodeBuilder()  # the last snapshot's nodes, rebuilt where changed
        self._since: float | None = None  # recovering from a loss at this time
        self._waiting: set[str] = set()  # nodes not heard from since that loss

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, identity: object) -> bool:
        return identity in self._entries

    def room_for(self, identity: str) -> str | None:
        """None when facts of a new ``identity`` may be held, else why not: the table is
        full, or (once the platform vouches) too many nodes nobody vouches for are held."""
        if identity in self._entries:
            return None
        if len(self._entries) >= self.max_nodes:
            return f"{len(self._entries)} nodes held: trust.max_nodes"
        if (self.vouched is not None and identity not in self.vouched
                and identity not in self.owned and len(self._unvouched) >= self.max_unvouched):
            return f"{len(self._unvouched)} unvouched nodes held: trust.max_unvouched"
        return None

    def _recount_unvouched(self) -> None:
        vouched = self.vouched
        self._unvouched = (set() if vouched is None else
                           {i for i in self._entries if i not in vouched and i not in self.owned})

    def set_owned(self, owned: frozenset[str]) -> None:
        if owned != self.owned:
            self.owned = owned
            self._recount_unvouched()

    def refused(self, identity: str, reason: str, detail: str, *, at: float) -> None:
        """Remember why a message for ``identity`` was refused (bounded, newest kept)."""
        self.refusals.pop(identity, None)
        self.refusals[identity] = Refusal(reason, detail[:200], at)
        while len(self.refusals) > MAX_REFUSED:
            self.refusals.popitem(last=False)

    def dispute(self, identity: str, why: str, *, until: float) -> None:
        """The platform contradicted this node's facts: hold it unknown until ``until``."""
        self._disputed[identity] = (until, why[:300])
        entry = self._entries.get(identity)
        if entry is not None:
            entry.node = None
        self._built.reset()
        self._changed(identity)

    def disputes(self, now: float) -> dict[str, str]:
        """Nodes held unknown after a dispute, with why (expired ones dropped)."""
        for identity in [i for i, (until, _) in self._disputed.items() if until <= now]:
            del self._disputed[identity]
            self._built.reset()
        return {identity: why for identity, (_, why) in self._disputed.items()}

    def set_vouched(self, members: frozenset[str] | None) -> None:
        """The district members the platform lists now (None: it cannot say)."""
        if members != self.vouched:
            self.vouched = members
            self._built.reset()
            self._version += 1
            self._recount_unvouched()

    def expire(self, now: float, *, keep: AbstractSet[str]) -> list[str]:
        """Forget nodes that are not in ``keep`` (ours) and silent for ``forget_after``."""
        cutoff = now - self.forget_after
        gone = [identity for identity, entry in self._entries.items()
                if entry.last_seen < cutoff and identity not in keep]
        for identity in gone:
            self.forget(identity)
        for identity in [i for i, at in self._offline.items() if at < cutoff]:
            del self._offline[identity]
        return gone

    def add_listener(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(identity)`` whenever a node's facts or status change."""
        self._listeners.append(listener)

    def _changed(self, identity: str) -> None:
        self._version += 1
        self._dirty.add(identity)
        for listener in self._listeners:
            listener(identity)

    def ingest(self, facts: NodeFacts, *, received_at: float, retained: bool = False) -> bool:
        """Store ``facts``; False when they are older than what we already hold.

        ``retained`` marks a broker's replay of a retained message on (re)subscribing:
        it gives the node's last facts but is no sign that the node is alive now.
        """
        identity = facts.identity
        entry = self._entries.get(identity)
        if entry is not None and not newer(facts, entry.facts):
            return False
        if entry is None and self.vouched is not None and identity not in self.vouched \
                and identity not in self.owned:
            self._unvouched.add(identity)
        if facts.produced_at is not None:
            seen = min(received_at, facts.produced_at)
        elif retained:
            # A replay of facts without ts says nothing about their age: a node we did not
            # know yet counts as known but stale until it is heard live.
            seen = (entry.last_seen if entry is not None
                    else received_at - self.stale_after - 1.0)
        else:
            seen = received_at
        offline_at = entry.offline_at if entry is not None else self._offline.get(identity)
        # Back online only on facts produced after the agent's last will; a retained
        # replay counts only when its ts says so.
        if offline_at is None:
            online = True
        elif retained:
            online = facts.produced_at is not None and facts.produced_at > offline_at
        else:
            online = seen > offline_at
        self._entries[identity] = Entry(facts=facts, last_seen=seen, online=online,
                                         offline_at=None if online else offline_at)
        self._offline.pop(identity, None)
        if self._waiting and identity in self._waiting and self._since is not None and (
                facts.produced_at >= self._since if facts.produced_at is not None
                else not retained):
            self._waiting.discard(identity)  # facts produced after the loss: fresh again
        self._changed(identity)
        return True

    def touch(self, identity: str, *, at: float) -> None:
        """The node re-published unchanged facts: it is alive as of ``at``."""
        entry = self._entries.get(identity)
        if entry is not None and at > entry.last_seen:
            revived = at - entry.last_seen > self.stale_after  # stale to anyone looking
            entry.last_seen = at  # (its Node is rebuilt from the new last_seen)
            self._waiting.discard(identity)
            self._version += 1
            self._dirty.add(identity)
            if revived:  # listeners that counted it out must look again
                for listener in self._listeners:
                    listener(identity)

    def touch_many(self, identities: Iterable[str], *, at: float) -> None:
        """``touch`` for many nodes at once (the simulator's heartbeat round)."""
        entries, dirty, waiting = self._entries, self._dirty, self._waiting
        touched = False
        revived = []
        stale_after = self.stale_after
        for identity in identities:
            entry = entries.get(identity)
            if entry is not None and at > entry.last_seen:
                if at - entry.last_seen > stale_after:
                    revived.append(identity)
                entry.last_seen = at  # (its Node is rebuilt from the new last_seen)
                dirty.add(identity)
                touched = True
                if waiting:
                    waiting.discard(identity)
        if touched:
            self._version += 1
        for identity in revived:  # as ``touch``: listeners that counted it out look again
            for listener in self._listeners:
                listener(identity)

    def set_online(self, identity: str, online: bool, *, at: float,
                   retained: bool = False) -> None:
        entry = self._entries.get(identity)
        if entry is None:
            if not online:
                if len(self._offline) >= MAX_OFFLINE_WITHOUT_FACTS:
                    self._offline.pop(next(iter(self._offline)))
                self._offline[identity] = at
            else:
                self._offline.pop(identity, None)
            return
        entry.offline_at = None if online else at
        self._version += 1
        self._dirty.add(identity)
        if entry.online != online:
            entry.online = online
            entry.node = None
            self._changed(identity)
        if not online:
            self._waiting.discard(identity)  # offline is unknown anyway: no need to wait

    def forget(self, identity: str) -> None:
        self._built.forget(identity)
        self._entries.pop(identity, None)
        self._offline.pop(identity, None)
        self._waiting.discard(identity)
        self._unvouched.discard(identity)
        self._changed(identity)

    def facts(self, identity: str) -> NodeFacts | None:
        entry = self._entries.get(identity)
        return entry.facts if entry else None

    def identities(self) -> Iterable[str]:
        return self._entries.keys()

    def _arrived(self, identity: str, now: float) -> bool:
        if not self.is_fresh(identity, now):
            return False
        facts = self._entries[identity].facts
        outside = (facts.district_uuid or "NONE").upper() == "NONE" and not facts.district_active
        return not outside

    def is_fresh(self, identity: str, now: float) -> bool:
        entry = self._entries.get(identity)
        return (entry is not None and entry.online and entry.facts.bad_reason is None
                and now - entry.last_seen <= self.stale_after)

    def fresh_until(self, identity: str) -> float | None:
        """Until when ``is_fresh`` holds without news (None: it does not hold now)."""
        entry = self._entries.get(identity)
        if entry is None or not entry.online or entry.facts.bad_reason is not None:
            return None
        return entry.last_seen + self.stale_after

    # -- trust after a broker loss ----------------------------------------------------
    def await_fresh(self, since: float) -> int:
        """Start waiting until every node is heard from after ``since``; how many are due."""
        self._since = since
        self._waiting = {identity for identity, entry in self._entries.items()
                         if entry.last_seen < since}
        return len(self._waiting)

    def recovered(self, now: float) -> bool:
        """Has every node been heard from since the loss (or become unknown anyway)?"""
        if self._waiting:
            self._waiting = {i for i in self._waiting if self.is_fresh(i, now)}
        if not self._waiting:
            self._since = None
        return not self._waiting

    @property
    def waiting_for(self) -> int:
        """Nodes not heard from since the last loss of the fact source."""
        return len(self._waiting)

    def _nodes(self, now: float, machines: Mapping[str, Machine],
               draining: frozenset[str], parked: frozenset[str] = frozenset()
               ) -> tuple[Node, ...]:
        """Every node's ``Node`` at ``now`` (``fleet_nodes``: only what changed is rebuilt)."""
        dirty, self._dirty = self._dirty, set()
        return self._built.nodes(now, machines=machines, draining=draining, parked=parked,
                                 entries=self._entries, dirty=dirty, version=self._version,
                                 vouched=self.vouched, disputed=self._disputed,
                                 stale_after=self.stale_after)

    def snapshot(self, now: float, *, machines: Mapping[str, Machine] | None = None,
                 pending: Iterable[PendingNode] = (), drains: Iterable[DrainProgress] = (),
                 requests: Iterable[CapacityRequest] = (),
                 signals: Iterable[Signal] = (),
                 parked: Iterable[ParkedMachine] = (),
                 forecasts: Iterable[Forecast] = ()) -> FleetSnapshot:
        """An immutable view at ``now``, joined with what the journal knows."""
        machines = machines or {}
        drains = tuple(drains)
        parked = tuple(parked)
        warm = frozenset(p.identity for p in parked)
        # A parked node is draining as far as its facts go (deactivated, empty) until it is
        # silent: then it is parked (``node_state``).
        draining = frozenset({d.identity for d in drains} | warm)
        nodes = self._nodes(now, machines, draining, warm)
        # A booting node stops being pending once it has published fresh facts from where
        # it can take gears: a node still in no district (not yet added) is on its way.
        still_pending = tuple(p for p in pending if not self._arrived(p.identity, now))
        return FleetSnapshot(taken_at=now, nodes=nodes, pending=still_pending,
                             drains=drains, requests=tuple(requests), signals=tuple(signals),
                             facts_fresh=self.source_up, parked=parked,
                             forecasts=tuple(forecasts), index=self._built.index_of(nodes))
