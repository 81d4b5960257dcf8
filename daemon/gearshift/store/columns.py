"""The journal's tables as column lists, and rows turned back into records, for every store.

SQLite and PostgreSQL share the schema (``store.migrations``); the column lists each
statement names, and how a row becomes an ``Operation``, a ``Machine`` or an
``Allocation``, live here once so the two stores cannot drift apart (and neither store
imports the other).
"""

from __future__ import annotations

from collections.abc import Sequence
from sys import intern
from typing import Any

from gearshift.model import Machine
from gearshift.records import Allocation, Operation, Phase

OP_COLUMNS = ("op_id", "kind", "pool", "identity", "phase", "started_at", "updated_at",
              "provider", "blueprint", "machine_id", "max_active_gears", "deadline", "reason",
              "error", "cause", "preempted_by")
SELECT_OPS = f"SELECT {', '.join(OP_COLUMNS)} FROM gearshift_operations"

MACHINE_COLUMNS = ("identity", "provider", "machine_id", "blueprint", "pool", "created_at",
                   "key")
SELECT_MACHINES = f"SELECT {', '.join(MACHINE_COLUMNS)} FROM gearshift_machines"

# provider and machine_id are the key; the rest are the Allocation's fields
ALLOCATION_COLUMNS = ("provider", "machine_id", "key", "name", "pool", "blueprint", "bmc",
                      "system", "foreman_host", "allocated_at")
SELECT_ALLOCATIONS = (f"SELECT {', '.join(ALLOCATION_COLUMNS)} FROM gearshift_allocations "
                      f"WHERE provider = ")  # + the store's placeholder


def _named(columns: Sequence[str], row: Any) -> dict[str, Any]:
    """A row as a dict: SQLite gives tuples, asyncpg records that also index by name."""
    if hasattr(row, "keys"):
        return {c: row[c] for c in columns}
    return dict(zip(columns, row, strict=True))


def operation_from(row: Any) -> Operation:
    values = _named(OP_COLUMNS, row)
    values["phase"] = Phase(values["phase"])
    return Operation(**values)


def machine_from(row: Any) -> Machine:
    r = _named(MACHINE_COLUMNS, row)
    # The leader keeps every owned machine in memory: share the strings that repeat
    # (provider, blueprint, pool) and the identity the fleet model holds too.
    return Machine(provider=intern(r["provider"]), machine_id=r["machine_id"],
                   name=intern(r["identity"]), blueprint=_interned(r["blueprint"]),
                   pool=_interned(r["pool"]), created_at=r["created_at"], key=r["key"])


def _interned(text: str | None) -> str | None:
    return None if text is None else intern(text)


def machine_values(machine: Machine) -> tuple[Any, ...]:
    """The machine's values in ``MACHINE_COLUMNS`` order."""
    return (machine.name, machine.provider, machine.machine_id, machine.blueprint,
            machine.pool, machine.created_at, machine.key)


def allocation_from(row: Any) -> tuple[str, Allocation]:
    """(machine id, allocation) of one row."""
    r = _named(ALLOCATION_COLUMNS, row)
    return r["machine_id"], Allocation(**{k: v for k, v in r.items()
                                         if k not in ("provider", "machine_id")})


def allocation_values(provider: str, machine_id: str, a: Allocation) -> tuple[Any, ...]:
    """The allocation's values in ``ALLOCATION_COLUMNS`` order."""
    return (provider, machine_id, a.key, a.name, a.pool, a.blueprint, a.bmc, a.system,
            a.foreman_host, a.allocated_at)
