"""The journal's shared machinery, and the journal in a dict (``MemoryJournal``).

What the journal records (operations and their ``Phase``, the state machine) and the
small interfaces it offers are in ``gearshift.records``, where its users import them
from. This module holds what every store does alike: the fencing token each write must
carry (``fence``; a refused write counts in ``fenced_writes`` and calls ``on_fenced``)
and the leader's cache of the owned machines (``JournalBase``). ``MemoryJournal`` keeps
everything in a dict (tests, ``simulate``, ``demo``); ``store.sqlite`` and
``store.postgres`` are the durable stores.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from typing import Any

from gearshift.errors import Fenced
from gearshift.model import Machine
from gearshift.records import (
    Allocation,
    DemandSample,
    Journal,
    LeaseInfo,
    Operation,
    Phase,
    Pruned,
    RecoveryRecord,
    check_start,
    check_transition,
)


class JournalBase(Journal, abc.ABC):
    """What every store shares: fencing state and the leader's cache of owned machines."""

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

    @property
    def lease_ttl_matters(self) -> bool:
        """False when the lease is held by a lock the OS frees on death (no expiry needed)."""
        return True

    async def schema_version(self) -> int:
        """The version of the store's schema (0 for stores without one)."""
        return 0

    async def close(self) -> None:
        """Release the store's resources."""


class MemoryJournal(JournalBase):
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
        self._allocations: dict[str, dict[str, Allocation]] = {}  # by provider, machine id
        self._lease: tuple[str | None, int, float] | None = None  # holder, token, expires (mono)
        self._demand: dict[tuple[str, int], int] = {}  # (pool, minute) -> gears
        # The oldest minute held: a prune with nothing older returns without a scan (the
        # forecaster prunes hourly and keeps five weeks, so a shorter run never drops any).
        self._oldest: int | None = None

    def _check(self) -> None:
        if self.token is None:
            return
        current = self._lease[1] if self._lease is not None else None
        if current != self.token:
            raise self._refuse(current)

    async def record_demand(self, samples: Sequence[DemandSample]) -> None:
        self._check()
        for s in samples:
            key = (s.pool, s.minute)
            self._demand[key] = max(self._demand.get(key, s.gears), s.gears)
            if self._oldest is None or s.minute < self._oldest:
                self._oldest = s.minute

    async def demand_since(self, *, minute: int) -> list[DemandSample]:
        return [DemandSample(pool=p, minute=m, gears=g)
                for (p, m), g in sorted(self._demand.items()) if m >= minute]

    async def prune_demand(self, *, before_minute: int) -> int:
        self._check()
        if self._oldest is None or before_minute <= self._oldest:
            return 0
        old = [k for k in self._demand if k[1] < before_minute]
        for key in old:
            del self._demand[key]
        self._oldest = min((m for _, m in self._demand), default=None)
        return len(old)

    async def begin(self, op: Operation) -> None:
        self._check()
        check_start(op)
        if op.op_id in self._ops or op.op_id in self._done:
            raise ValueError(f"operation {op.op_id} already journaled")
        self._ops[op.op_id] = op

    async def advance(self, op_id: str, *, phase: Phase, at: float, **changes: Any) -> Operation:
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

    async def allocations(self, provider: str) -> dict[str, Allocation]:
        return dict(self._allocations.get(provider, {}))

    async def allocate(self, provider: str, allocations: Mapping[str, Allocation]) -> None:
        self._allocations.setdefault(provider, {}).update(allocations)

    async def free(self, provider: str, machine_id: str) -> None:
        self._allocations.get(provider, {}).pop(machine_id, None)
