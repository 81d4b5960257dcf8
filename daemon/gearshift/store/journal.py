"""The journal of intents and in-flight operations: written before acting, read after a restart.

An ``Operation`` is one create or one drain, identified by ``op_id``, which is also the
idempotency key handed to the provider. Its ``phase`` moves forward only:

    create: requested -> created -> registered            (or failed)
    drain:  deactivating -> moving -> retiring -> retired  (or cancelled)

``Journal`` is the interface; ``MemoryJournal`` keeps it in a dict (tests, ``simulate``,
``demo``). The durable stores implement the same methods.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Literal

from gearshift.model import DrainProgress, Machine, PendingNode

OpKind = Literal["create", "drain"]
DONE_PHASES = frozenset({"registered", "failed", "retired", "cancelled"})


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

    @property
    def done(self) -> bool:
        return self.phase in DONE_PHASES


class Journal(abc.ABC):
    """Durable record of operations and of the machines gearshift owns."""

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
    async def adopt(self, machine: Machine) -> None:
        """Remember a machine as ours (created by us, or found by its tag)."""

    @abc.abstractmethod
    async def release(self, identity: str) -> None:
        """Forget a machine: it was destroyed."""

    @abc.abstractmethod
    async def machines(self) -> dict[str, Machine]:
        """Owned machines by node identity."""

    async def close(self) -> None:  # noqa: B027 - optional for stores without resources
        """Release the store's resources."""


class MemoryJournal(Journal):
    """The journal in a dict: forgets everything on exit (tests, simulate, demo)."""

    def __init__(self) -> None:
        self._ops: dict[str, Operation] = {}
        self._machines: dict[str, Machine] = {}

    async def begin(self, op: Operation) -> None:
        if op.op_id in self._ops:
            raise ValueError(f"operation {op.op_id} already journaled")
        self._ops[op.op_id] = op

    async def advance(self, op_id: str, *, phase: str, at: float, **changes: Any) -> Operation:
        op = replace(self._ops[op_id], phase=phase, updated_at=at, **changes)
        if op.done:
            self._ops.pop(op_id)
        else:
            self._ops[op_id] = op
        return op

    async def open_operations(self) -> list[Operation]:
        return sorted(self._ops.values(), key=lambda o: o.started_at)

    async def adopt(self, machine: Machine) -> None:
        self._machines[machine.name] = machine

    async def release(self, identity: str) -> None:
        self._machines.pop(identity, None)

    async def machines(self) -> dict[str, Machine]:
        return dict(self._machines)


def pending_nodes(ops: Iterable[Operation]) -> list[PendingNode]:
    """Creates not yet registered: capacity on its way."""
    return [PendingNode(identity=o.identity, pool=o.pool, provider=o.provider or "",
                        blueprint=o.blueprint or "", max_active_gears=o.max_active_gears,
                        requested_at=o.started_at)
            for o in ops if o.kind == "create" and not o.done]


def drains_in_flight(ops: Iterable[Operation]) -> list[DrainProgress]:
    return [DrainProgress(identity=o.identity, pool=o.pool, started_at=o.started_at,
                          deadline=o.deadline or o.started_at, phase=o.phase, reason=o.reason)
            for o in ops if o.kind == "drain" and not o.done]
