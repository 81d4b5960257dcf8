"""The default journal: one SQLite file (WAL, fsync on every commit), for a single host.

The file, its thread, migrations and the fenced write transaction are ``store.sqlite_base``;
this module holds the statements, one group per interface of ``gearshift.records``.

Leadership on one host: the lease is an exclusive ``flock`` on ``PATH.lock``, which the
kernel frees the moment its holder dies (so a restarted daemon takes over at once, no
expiry to wait for), plus a fencing token in ``gearshift_lease`` that goes up with every
acquisition and that every write checks inside its transaction. SQLite is for one host:
use PostgreSQL when two instances run on different machines.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Collection, Mapping
from dataclasses import replace
from typing import Any

from gearshift.model import Machine
from gearshift.records import (
    Allocation,
    LeaseInfo,
    Operation,
    Phase,
    Pruned,
    RecoveryRecord,
    check_start,
    check_transition,
)
from gearshift.store.columns import (
    ALLOCATION_COLUMNS,
    MACHINE_COLUMNS,
    OP_COLUMNS,
    SELECT_ALLOCATIONS,
    SELECT_MACHINES,
    SELECT_OPS,
    allocation_from,
    allocation_values,
    machine_from,
    machine_values,
    operation_from,
)
from gearshift.store.demand import SqliteDemand
from gearshift.store.sqlite_base import SqliteBase


class SqliteJournal(SqliteDemand, SqliteBase):
    kind = "sqlite"

    # -- operations -------------------------------------------------------------------
    async def begin(self, op: Operation) -> None:
        check_start(op)

        def insert(conn: sqlite3.Connection) -> None:
            values = [getattr(op, c) for c in OP_COLUMNS]
            try:
                conn.execute(f"INSERT INTO gearshift_operations ({', '.join(OP_COLUMNS)}, done) "
                             f"VALUES ({', '.join('?' * len(OP_COLUMNS))}, ?)",
                             (*values, int(op.done)))
            except sqlite3.IntegrityError as exc:
                raise ValueError(f"operation {op.op_id} already journaled") from exc

        await self._write("begin", insert)

    async def advance(self, op_id: str, *, phase: Phase, at: float, **changes: Any) -> Operation:
        unknown = set(changes) - set(OP_COLUMNS)
        if unknown:
            raise ValueError(f"unknown operation fields: {', '.join(sorted(unknown))}")

        def update(conn: sqlite3.Connection) -> Operation:
            row = conn.execute(f"{SELECT_OPS} WHERE op_id = ?", (op_id,)).fetchone()
            if row is None:
                raise KeyError(f"no operation {op_id}")
            current = operation_from(row)
            check_transition(current, phase)
            fields = {"phase": phase, "updated_at": at, **changes}
            new = replace(current, **fields)
            assignments = ", ".join(f"{k} = ?" for k in fields)
            conn.execute(f"UPDATE gearshift_operations SET {assignments}, done = ? "
                         f"WHERE op_id = ?", (*fields.values(), int(new.done), op_id))
            return new

        return await self._write("advance", update)

    async def open_operations(self) -> list[Operation]:
        def query() -> list[Operation]:
            rows = self.conn.execute(f"{SELECT_OPS} WHERE done = 0 ORDER BY started_at, op_id"
                                     ).fetchall()
            return [operation_from(r) for r in rows]

        return await self._run("open_operations", query)

    async def get(self, op_id: str) -> Operation | None:
        def query() -> Operation | None:
            row = self.conn.execute(f"{SELECT_OPS} WHERE op_id = ?", (op_id,)).fetchone()
            return operation_from(row) if row is not None else None

        return await self._run("get", query)

    async def history(self, *, limit: int = 1000) -> list[Operation]:
        def query() -> list[Operation]:
            rows = self.conn.execute(f"{SELECT_OPS} ORDER BY started_at DESC, op_id LIMIT ?",
                                     (limit,)).fetchall()
            return [operation_from(r) for r in rows]

        return await self._run("history", query)

    # -- machines ---------------------------------------------------------------------
    async def _adopt(self, machine: Machine) -> None:
        def upsert(conn: sqlite3.Connection) -> None:
            updates = ", ".join(f"{c} = excluded.{c}" for c in MACHINE_COLUMNS[1:])
            conn.execute(f"INSERT INTO gearshift_machines ({', '.join(MACHINE_COLUMNS)}) "
                         f"VALUES ({', '.join('?' * len(MACHINE_COLUMNS))}) "
                         f"ON CONFLICT (identity) DO UPDATE SET {updates}",
                         machine_values(machine))

        await self._write("adopt", upsert)

    async def _release(self, identity: str) -> None:
        await self._write("release", lambda conn: conn.execute(
            "DELETE FROM gearshift_machines WHERE identity = ?", (identity,)))

    async def _read_machines(self) -> dict[str, Machine]:
        def query() -> dict[str, Machine]:
            rows = self.conn.execute(SELECT_MACHINES).fetchall()
            return {r[0]: machine_from(r) for r in rows}

        return await self._run("machines", query)

    # -- recoveries -------------------------------------------------------------------
    async def record_recovery(self, record: RecoveryRecord) -> None:
        await self._write("record_recovery", lambda conn: conn.execute(
            "INSERT INTO gearshift_recoveries (at, holder, summary) VALUES (?, ?, ?)",
            (record.at, record.holder, json.dumps(record.summary, sort_keys=True))))

    async def recoveries(self) -> list[RecoveryRecord]:
        def query() -> list[RecoveryRecord]:
            rows = self.conn.execute("SELECT at, holder, summary FROM gearshift_recoveries "
                                     "ORDER BY id").fetchall()
            return [RecoveryRecord(at=r[0], holder=r[1], summary=json.loads(r[2])) for r in rows]

        return await self._run("recoveries", query)

    # -- retention --------------------------------------------------------------------
    async def prune(self, *, before: float) -> Pruned:
        def delete(conn: sqlite3.Connection) -> Pruned:
            ops = conn.execute("DELETE FROM gearshift_operations WHERE done = 1 "
                               "AND updated_at < ?", (before,)).rowcount
            recoveries = conn.execute("DELETE FROM gearshift_recoveries WHERE at < ?",
                                      (before,)).rowcount
            return Pruned(operations=ops, recoveries=recoveries)

        return await self._write("prune", delete)

    # -- paused pools -----------------------------------------------------------------
    async def pause_pool(self, pool: str, *, at: float) -> None:
        await self._write("pause_pool", lambda conn: conn.execute(
            "INSERT INTO gearshift_paused_pools VALUES (?, ?) ON CONFLICT (pool) DO NOTHING",
            (pool, at)))

    async def resume_pool(self, pool: str) -> None:
        await self._write("resume_pool", lambda conn: conn.execute(
            "DELETE FROM gearshift_paused_pools WHERE pool = ?", (pool,)))

    async def paused_pools(self) -> dict[str, float]:
        def query() -> dict[str, float]:
            rows = self.conn.execute("SELECT pool, paused_at FROM gearshift_paused_pools"
                                     ).fetchall()
            return {r[0]: r[1] for r in rows}

        return await self._run("paused_pools", query)

    # -- machines recovery saw but the journal did not know ----------------------------
    async def first_seen(self) -> dict[tuple[str, str], float]:
        def query() -> dict[tuple[str, str], float]:
            rows = self.conn.execute("SELECT provider, machine_id, seen_at "
                                     "FROM gearshift_first_seen").fetchall()
            return {(r[0], r[1]): r[2] for r in rows}

        return await self._run("first_seen", query)

    async def see_first(self, provider: str, machine_id: str, *, at: float) -> None:
        await self._write("see_first", lambda conn: conn.execute(
            "INSERT INTO gearshift_first_seen VALUES (?, ?, ?) "
            "ON CONFLICT (provider, machine_id) DO NOTHING", (provider, machine_id, at)))

    async def forget_seen(self, machines: Collection[tuple[str, str]]) -> None:
        keys = list(machines)
        if not keys:
            return
        await self._write("forget_seen", lambda conn: conn.executemany(
            "DELETE FROM gearshift_first_seen WHERE provider = ? AND machine_id = ?", keys))

    # -- the lease --------------------------------------------------------------------
    @property
    def lease_ttl_matters(self) -> bool:
        return False

    def _acquire(self, holder: str, ttl: float) -> int | None:
        if self._lock_fd is None:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            self._lock_fd = fd

        def take(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT token FROM gearshift_lease WHERE name = 'leader'"
                               ).fetchone()
            token = (row[0] if row is not None else 0) + 1
            conn.execute("INSERT INTO gearshift_lease VALUES ('leader', ?, ?, ?) "
                         "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
                         "token = excluded.token, expires_at = excluded.expires_at",
                         (holder, token, time.time() + ttl))
            return int(token)

        return self._tx(take, fenced=False)

    async def acquire_lease(self, holder: str, ttl: float) -> int | None:
        return await self._run("acquire_lease", self._acquire, holder, ttl)

    async def renew_lease(self, holder: str, token: int, ttl: float) -> bool:
        def renew(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute("UPDATE gearshift_lease SET expires_at = ? WHERE name = 'leader' "
                                  "AND holder = ? AND token = ?", (time.time() + ttl, holder, token))
            return cursor.rowcount == 1

        if self._lock_fd is None:
            return False
        return await self._run("renew_lease", lambda: self._tx(renew, fenced=False))

    async def release_lease(self, holder: str, token: int) -> None:
        def release(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE gearshift_lease SET holder = NULL, expires_at = ? "
                         "WHERE name = 'leader' AND holder = ? AND token = ?",
                         (time.time(), holder, token))

        def unlock() -> None:
            if self._lock_fd is not None:
                with contextlib.suppress(OSError):
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
                self._lock_fd = None

        try:
            await self._run("release_lease", lambda: self._tx(release, fenced=False))
        finally:
            await self._run("release_lease", unlock)

    async def lease(self) -> LeaseInfo | None:
        def query() -> LeaseInfo | None:
            row = self.conn.execute("SELECT holder, token, expires_at FROM gearshift_lease "
                                    "WHERE name = 'leader'").fetchone()
            if row is None:
                return None
            return LeaseInfo(holder=row[0], token=int(row[1]),
                             expires_in=None if row[0] is not None else row[2] - time.time())

        return await self._run("lease", query)

    # -- bare-metal allocations (not fenced: see records.Allocations) -----------------
    async def allocations(self, provider: str) -> dict[str, Allocation]:
        def query() -> dict[str, Allocation]:
            rows = self.conn.execute(f"{SELECT_ALLOCATIONS}?", (provider,)).fetchall()
            return dict(allocation_from(r) for r in rows)

        return await self._run("allocations", query)

    async def allocate(self, provider: str, allocations: Mapping[str, Allocation]) -> None:
        rows = [allocation_values(provider, mid, a) for mid, a in allocations.items()]
        await self._run("allocate", lambda: self._tx(lambda conn: conn.executemany(
            f"INSERT OR REPLACE INTO gearshift_allocations ({', '.join(ALLOCATION_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(ALLOCATION_COLUMNS))})", rows), fenced=False))

    async def free(self, provider: str, machine_id: str) -> None:
        await self._run("free", lambda: self._tx(lambda conn: conn.execute(
            "DELETE FROM gearshift_allocations WHERE provider = ? AND machine_id = ?",
            (provider, machine_id)), fenced=False))
