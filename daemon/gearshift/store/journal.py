"""The journal of intents and in-flight operations: written before acting, read after a restart.

An ``Operation`` is one create or one drain, identified by ``op_id``, which is also the
idempotency key handed to the provider. Each step is journaled *before* it is carried
out, so a restart at any instant finds the step it was about to take (or had just
taken) and can repeat it safely. Its ``phase`` moves forward only (``TRANSITIONS``)::

    create: requested -> created -> registered
                     \\          \\-> abandoning -> failed   (never came up: retired)
                      \\-> failed
    drain:  deactivating -> moving -> removing -> retiring -> retired
                   \\           \\         \\          \\
                    +-----------+---------+----------+-> cancelling -> cancelled

``requested``: about to call the provider; ``created``: the machine exists;
``registered``: the node published fresh facts. ``deactivating``: about to take the
node out of its district; ``moving``: gears are being moved away; ``removing``: about
to remove it from its district; ``retiring``: about to destroy its machine;
``retired``: gone. ``cancelling``: about to reactivate it.

A drain records its ``cause`` (and ``preempted_by``, the pool it frees quota for), so
a leader that starts while a preemption's victim drains knows it is one
(``preemptions_in_flight``) and neither preempts for the same shortfall again nor lets
the victim's pool take the node back.

The journal also remembers the machines gearshift owns, the recoveries it performed,
the pools an operator paused (a pause outlives a restart or a failover), when recovery
first saw each machine of ours it did not know (so an orphan's grace does not start over
with every restart), and the leader lease. With a lease in use every write carries the
fencing token the lease was granted with; a write whose token is no longer the lease's
is refused with ``Fenced``, so a deposed leader cannot record (and so cannot start)
anything.

Finished operations and recovery records are kept for a while (``prune``, run by the
leader every hour or so, deletes those older than ``journal.keep_finished``); operations
not yet done are never pruned, however old.

``Journal`` is the interface; ``MemoryJournal`` keeps it in a dict (tests, ``simulate``,
``demo``); ``store.sqlite`` and ``store.postgres`` are the durable stores.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from gearshift.errors import BadTransition, Fenced
from gearshift.model import DrainProgress, Machine, PendingNode, Preemption

OpKind = Literal["create", "drain"]
DONE_PHASES = frozenset({"registered", "failed", "retired", "cancelled"})
START_PHASES: dict[str, frozenset[str]] = {
    "create": frozenset({"requested"}),
    # removing: a retire without a drain; retiring: an orphan found by recovery
    "drain": frozenset({"deactivating", "removing", "retiring"}),
}
TRANSITIONS: dict[str, dict[str, frozenset[str]]] = {
    "create": {
        "requested": frozenset({"created", "failed"}),
        "created": frozenset({"registered", "abandoning", "failed"}),
        "abandoning": frozenset({"failed"}),
    },
    "drain": {
        "deactivating": frozenset({"moving", "removing", "cancelling", "cancelled"}),
        "moving": frozenset({"removing", "cancelling", "cancelled"}),
        "removing": frozenset({"retiring", "cancelling", "cancelled", "retired"}),
        "retiring": frozenset({"retired", "cancelling", "cancelled"}),
        "cancelling": frozenset({"cancelled"}),
    },
}
PHASES: dict[str, tuple[str, ...]] = {
    "create": ("requested", "created", "abandoning", "registered", "failed"),
    "drain": ("deactivating", "moving", "removing", "retiring", "cancelling", "retired",
              "cancelled"),
}


@dataclass(frozen=True)
class Operation:
    op_id: str
    kind: OpKind
    pool: str
    identity: str
    phase: str
    started_at: float
    updated_at: float
    provider: str | None = None
    blueprint: str | None = None
    machine_id: str | None = None
    max_active_gears: int = 0
    deadline: float | None = None
    reason: str = ""
    error: str | None = None
    cause: str | None = None  # a drain's: scale_in | preemption | burst_return (None: older)
    preempted_by: str | None = None  # a preemption's drain: the pool that takes its quota

    @property
    def done(self) -> bool:
        return self.phase in DONE_PHASES


def check_transition(op: Operation, phase: str) -> None:
    """Refuse a step backwards (or out of a finished operation); the same phase is fine."""
    if phase == op.phase:
        return
    allowed = TRANSITIONS.get(op.kind, {}).get(op.phase, frozenset())
    if phase not in allowed:
        raise BadTransition(f"operation {op.op_id} ({op.kind}) cannot go from {op.phase} "
                            f"to {phase}")


def check_start(op: Operation) -> None:
    if op.phase not in START_PHASES.get(op.kind, frozenset()):
        raise BadTransition(f"operation {op.op_id} ({op.kind}) cannot start in {op.phase}")


@dataclass(frozen=True)
class LeaseInfo:
    """Who holds the leader lease, with which fencing token, for how much longer."""

    holder: str | None
    token: int
    expires_in: float | None  # seconds; negative: expired; None: held until released


@dataclass(frozen=True)
class RecoveryRecord:
    at: float
    holder: str
    summary: dict[str, int]


@dataclass(frozen=True)
class Pruned:
    """What one ``prune`` deleted."""

    operations: int = 0
    recoveries: int = 0


class Journal(abc.ABC):
    """Durable record of operations, of the machines gearshift owns, and of the lease."""

    kind = "abstract"

    def __init__(self) -> None:
        self.token: int | None = None  # fencing token every write must carry (None: unfenced)
        self.on_fenced: Callable[[], None] | None = None
        self.fenced_writes = 0
        self._machines_cache: Mapping[str, Machine] | None = None  # see machines()
        self._machines_generation = 0

    # -- fencing ----------------------------------------------------------------------
    def fence(self, token: int | None) -> None:
        """From now on every write must carry ``token`` (the lease's), or is refused."""
        self.token = token
        self._machines_cache = None  # a new term: read them again

    def _refuse(self, current: int | None) -> Fenced:
        self.fenced_writes += 1
        if self.on_fenced is not None:
            self.on_fenced()
        return Fenced(f"journal write refused: this instance's fencing token {self.token} is "
                      f"no longer the leader's ({current}); another instance leads now")

    # -- operations -------------------------------------------------------------------
    @abc.abstractmethod
    async def begin(self, op: Operation) -> None:
        """Record a new operation before anything is done for it."""

    @abc.abstractmethod
    async def advance(self, op_id: str, *, phase: str, at: float, **changes: Any) -> Operation:
        """Move an operation to ``phase`` (and set ``changes``); returns the new record."""

    @abc.abstractmethod
    async def open_operations(self) -> list[Operation]:
        """Every operation not yet done, oldest first."""

    @abc.abstractmethod
    async def get(self, op_id: str) -> Operation | None:
        """One operation, done or not."""

    @abc.abstractmethod
    async def history(self, *, limit: int = 1000) -> list[Operation]:
        """Operations, done or not, newest first (at most ``limit``)."""

    # -- machines ---------------------------------------------------------------------
    # A reconcile reads the owned machines several times, and at 10k machines one read
    # costs tens of milliseconds on SQLite. While this instance leads (it holds the lease,
    # so every other writer is fenced off) they change only through adopt() and release()
    # here, so the last read is kept until one of them runs or the fencing token changes.
    # A follower, or a journal used without a lease, always reads. A read that overlapped
    # a write is not kept (the generation moved), so the cache is never older than the
    # table.
    async def adopt(self, machine: Machine) -> None:
        """Remember a machine as ours (created by us, or found by its tag)."""
        self._machines_changing()
        try:
            await self._adopt(machine)
        finally:
            self._machines_changing()

    async def release(self, identity: str) -> None:
        """Forget a machine: it was destroyed."""
        self._machines_changing()
        try:
            await self._release(identity)
        finally:
            self._machines_changing()

    async def machines(self) -> Mapping[str, Machine]:
        """Owned machines by node identity (read-only: the same mapping may be shared)."""
        leading = self.token is not None and self.token > 0
        if leading and self._machines_cache is not None:
            return self._machines_cache
        generation = self._machines_generation
        machines = await self._read_machines()
        if leading and generation == self._machines_generation:
            self._machines_cache = machines
        return machines

    def _machines_changing(self) -> None:
        self._machines_cache = None
        self._machines_generation += 1

    @abc.abstractmethod
    async def _adopt(self, machine: Machine) -> None:
        """Store ``machine`` as ours (insert or replace by its identity)."""

    @abc.abstractmethod
    async def _release(self, identity: str) -> None:
        """Delete the machine of ``identity`` (nothing if there is none)."""

    @abc.abstractmethod
    async def _read_machines(self) -> dict[str, Machine]:
        """Every owned machine by node identity, read from the store."""

    # -- recoveries -------------------------------------------------------------------
    @abc.abstractmethod
    async def record_recovery(self, record: RecoveryRecord) -> None:
        """Remember that a recovery ran and what it did."""

    @abc.abstractmethod
    async def recoveries(self) -> list[RecoveryRecord]:
        """Every recovery recorded, oldest first."""

    # -- retention --------------------------------------------------------------------
    @abc.abstractmethod
    async def prune(self, *, before: float) -> Pruned:
        """Delete finished operations last updated before ``before`` (never one not yet
        done), and recovery records from before it."""

    # -- paused pools -----------------------------------------------------------------
    @abc.abstractmethod
    async def pause_pool(self, pool: str, *, at: float) -> None:
        """Remember that ``pool`` is paused (since ``at``; pausing again keeps the first)."""

    @abc.abstractmethod
    async def resume_pool(self, pool: str) -> None:
        """Forget that ``pool`` is paused (nothing happens if it was not)."""

    @abc.abstractmethod
    async def paused_pools(self) -> dict[str, float]:
        """Paused pools, with when each was paused."""

    # -- machines recovery saw but the journal did not know ----------------------------
    @abc.abstractmethod
    async def first_seen(self) -> dict[tuple[str, str], float]:
        """When each (provider, machine id) was first seen, for an orphan's grace."""

    @abc.abstractmethod
    async def see_first(self, provider: str, machine_id: str, *, at: float) -> None:
        """Remember that the machine was first seen at ``at`` (an earlier sighting stays)."""

    @abc.abstractmethod
    async def forget_seen(self, machines: Collection[tuple[str, str]]) -> None:
        """Forget these (provider, machine id) sightings: adopted, retired or gone."""

    # -- the leader lease -------------------------------------------------------------
    @abc.abstractmethod
    async def acquire_lease(self, holder: str, ttl: float) -> int | None:
        """Take the leader lease if it is free or expired: the new fencing token, or None."""

    @abc.abstractmethod
    async def renew_lease(self, holder: str, token: int, ttl: float) -> bool:
        """Extend our lease; False when it is no longer ours (someone took it over)."""

    @abc.abstractmethod
    async def release_lease(self, holder: str, token: int) -> None:
        """Give the lease up (graceful stop), so a follower need not wait for it to expire."""

    @abc.abstractmethod
    async def lease(self) -> LeaseInfo | None:
        """The lease as it stands, or None when nobody ever held it."""

    @property
    def lease_ttl_matters(self) -> bool:
        """False when the lease is held by a lock the OS frees on death (no expiry needed)."""
        return True

    async def schema_version(self) -> int:
        """The version of the store's schema (0 for stores without one)."""
        return 0

    async def close(self) -> None:  # noqa: B027 - optional for stores without resources
        """Release the store's resources."""


class MemoryJournal(Journal):
    """The journal in a dict: forgets everything on exit (tests, simulate, demo)."""

    kind = "memory"

    def __init__(self) -> None:
        super().__init__()
        self._ops: dict[str, Operation] = {}
        self._done: dict[str, Operation] = {}
        self._machines: dict[str, Machine] = {}
        self._recoveries: list[RecoveryRecord] = []
        self._paused: dict[str, float] = {}
        self._seen: dict[tuple[str, str], float] = {}
        self._lease: tuple[str | None, int, float] | None = None  # holder, token, expires (mono)

    def _check(self) -> None:
        if self.token is None:
            return
        current = self._lease[1] if self._lease is not None else None
        if current != self.token:
            raise self._refuse(current)

    async def begin(self, op: Operation) -> None:
        self._check()
        check_start(op)
        if op.op_id in self._ops or op.op_id in self._done:
            raise ValueError(f"operation {op.op_id} already journaled")
        self._ops[op.op_id] = op

    async def advance(self, op_id: str, *, phase: str, at: float, **changes: Any) -> Operation:
        self._check()
        current = self._ops.get(op_id) or self._done.get(op_id)
        if current is None:
            raise KeyError(f"no operation {op_id}")
        check_transition(current, phase)
        op = replace(current, phase=phase, updated_at=at, **changes)
        if op.done:
            self._ops.pop(op_id, None)
            self._done[op_id] = op
        else:
            self._ops[op_id] = op
        return op

    async def open_operations(self) -> list[Operation]:
        return sorted(self._ops.values(), key=lambda o: o.started_at)

    async def get(self, op_id: str) -> Operation | None:
        return self._ops.get(op_id) or self._done.get(op_id)

    async def history(self, *, limit: int = 1000) -> list[Operation]:
        every = [*self._ops.values(), *self._done.values()]
        return sorted(every, key=lambda o: o.started_at, reverse=True)[:limit]

    async def _adopt(self, machine: Machine) -> None:
        self._check()
        self._machines[machine.name] = machine

    async def _release(self, identity: str) -> None:
        self._check()
        self._machines.pop(identity, None)

    async def _read_machines(self) -> dict[str, Machine]:
        return dict(self._machines)

    async def record_recovery(self, record: RecoveryRecord) -> None:
        self._check()
        self._recoveries.append(record)

    async def recoveries(self) -> list[RecoveryRecord]:
        return list(self._recoveries)

    async def prune(self, *, before: float) -> Pruned:
        self._check()
        old = [op_id for op_id, op in self._done.items() if op.updated_at < before]
        for op_id in old:
            del self._done[op_id]
        kept = [r for r in self._recoveries if r.at >= before]
        pruned = Pruned(operations=len(old), recoveries=len(self._recoveries) - len(kept))
        self._recoveries = kept
        return pruned

    async def pause_pool(self, pool: str, *, at: float) -> None:
        self._check()
        self._paused.setdefault(pool, at)

    async def resume_pool(self, pool: str) -> None:
        self._check()
        self._paused.pop(pool, None)

    async def paused_pools(self) -> dict[str, float]:
        return dict(self._paused)

    async def first_seen(self) -> dict[tuple[str, str], float]:
        return dict(self._seen)

    async def see_first(self, provider: str, machine_id: str, *, at: float) -> None:
        self._check()
        self._seen.setdefault((provider, machine_id), at)

    async def forget_seen(self, machines: Collection[tuple[str, str]]) -> None:
        if not machines:
            return
        self._check()
        for key in machines:
            self._seen.pop(key, None)

    async def acquire_lease(self, holder: str, ttl: float) -> int | None:
        now = time.monotonic()
        if self._lease is not None:
            current, token, expires = self._lease
            if current is not None and expires > now:
                return None
            token += 1
        else:
            token = 1
        self._lease = (holder, token, now + ttl)
        return token

    async def renew_lease(self, holder: str, token: int, ttl: float) -> bool:
        if self._lease is None or self._lease[:2] != (holder, token):
            return False
        self._lease = (holder, token, time.monotonic() + ttl)
        return True

    async def release_lease(self, holder: str, token: int) -> None:
        if self._lease is not None and self._lease[:2] == (holder, token):
            self._lease = (None, token, time.monotonic())

    async def lease(self) -> LeaseInfo | None:
        if self._lease is None:
            return None
        holder, token, expires = self._lease
        return LeaseInfo(holder=holder, token=token, expires_in=expires - time.monotonic())


def pending_nodes(ops: Iterable[Operation]) -> list[PendingNode]:
    """Creates not yet registered (nor being given up): capacity on its way."""
    return [PendingNode(identity=o.identity, pool=o.pool, provider=o.provider or "",
                        blueprint=o.blueprint or "", max_active_gears=o.max_active_gears,
                        requested_at=o.started_at)
            for o in ops if o.kind == "create" and not o.done and o.phase != "abandoning"]


def preemptions_in_flight(ops: Iterable[Operation]) -> dict[str, Preemption]:
    """The preemptions whose victims are still draining, by victim identity: what the
    planner remembered when it started them, rebuilt after a restart or a failover."""
    return {o.identity: Preemption(identity=o.identity, victim_pool=o.pool,
                                   by_pool=o.preempted_by, provider=o.provider or "",
                                   at=o.started_at)
            for o in ops if o.kind == "drain" and not o.done and o.cause == "preemption"
            and o.preempted_by is not None}


def drains_in_flight(ops: Iterable[Operation]) -> list[DrainProgress]:
    return [DrainProgress(identity=o.identity, pool=o.pool, started_at=o.started_at,
                          deadline=o.deadline or o.started_at, phase=o.phase, reason=o.reason)
            for o in ops if o.kind == "drain" and not o.done]
