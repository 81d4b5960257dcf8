"""The default journal: one SQLite file (WAL, fsync on every commit), for a single host.

Why stdlib ``sqlite3`` in one dedicated thread rather than ``aiosqlite``: aiosqlite is
that same idea (a thread owning the connection) behind another dependency; a
one-worker executor gives the event loop the same guarantee (it never blocks on disk)
and keeps every statement on the thread that opened the connection.

Durability: ``journal_mode=WAL`` with ``synchronous=FULL``, so a commit has reached the
disk before ``begin``/``advance`` return, and the caller acts only after that. A
``kill -9`` at any instant leaves either the old or the new record, never half of one.

Leadership on one host: the lease is an exclusive ``flock`` on ``PATH.lock``, which the
kernel frees the moment its holder dies (so a restarted daemon takes over at once, no
expiry to wait for), plus a fencing token in ``gearshift_lease`` that goes up with every
acquisition and that every write checks inside its transaction. SQLite is for one host:
use PostgreSQL when two instances run on different machines.

Failures: every ``sqlite3`` error (``database is locked`` after the busy timeout, ``disk
I/O error``, ``unable to open database file``, a file that is not a database, a file
unlinked under us) and every ``OSError`` (the lock file) surfaces as ``JournalError``
naming the file and the journal call, so callers handle one class. A write also checks
that ``path`` is still the file the journal opened: SQLite would carry on writing into a
removed (or replaced) file, and those writes would be lost at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from gearshift.errors import ConfigError, JournalError
from gearshift.model import Machine
from gearshift.store import migrations
from gearshift.store.journal import (
    Journal,
    LeaseInfo,
    Operation,
    Pruned,
    RecoveryRecord,
    check_start,
    check_transition,
)

T = TypeVar("T")

OP_COLUMNS = ("op_id", "kind", "pool", "identity", "phase", "started_at", "updated_at",
              "provider", "blueprint", "machine_id", "max_active_gears", "deadline", "reason",
              "error", "cause", "preempted_by")
_SELECT_OPS = f"SELECT {', '.join(OP_COLUMNS)} FROM gearshift_operations"


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open, without hiding the error that got us here.

    SQLite may already have rolled back by itself (a disk I/O error, a full disk); a
    ``ROLLBACK`` then would raise "no transaction is active" in place of the real error.
    """
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


class _Moved(Exception):
    """Raised inside the journal thread: ``path`` is no longer the file we opened."""


class _Stale(Exception):
    """Raised inside the journal thread: the lease's token is not ours any more."""

    def __init__(self, current: int | None) -> None:
        super().__init__(current)
        self.current = current


def row_to_operation(row: Any) -> Operation:
    values = dict(zip(OP_COLUMNS, row, strict=True))
    return Operation(**values)


def _machine(row: Any) -> Machine:
    identity, provider, machine_id, blueprint, pool, created_at, key = row
    return Machine(provider=provider, machine_id=machine_id, name=identity, blueprint=blueprint,
                   pool=pool, created_at=created_at, key=key)


def migrate_sqlite(conn: sqlite3.Connection, *, where: str, upto: int | None = None) -> int:
    """Bring the schema up to date (or to ``upto``); returns the version reached."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(migrations.VERSION_TABLE["sqlite"])
        found = conn.execute("SELECT COALESCE(MAX(version), 0) FROM gearshift_schema_version"
                             ).fetchone()[0]
        conn.execute("COMMIT")
    except BaseException:
        rollback(conn)
        raise
    todo = migrations.pending(found, where=where)
    for migration in todo:
        if upto is not None and migration.version > upto:
            break
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated meanwhile: check again under the lock.
            now_at = conn.execute("SELECT COALESCE(MAX(version), 0) FROM gearshift_schema_version"
                                  ).fetchone()[0]
            if now_at < migration.version:
                for statement in migration.sqlite:
                    conn.execute(statement)
                conn.execute("INSERT INTO gearshift_schema_version VALUES (?, ?, ?)",
                             (migration.version, migration.description, time.time()))
            conn.execute("COMMIT")
        except BaseException:
            rollback(conn)
            raise
        found = migration.version
    return int(found)


class SqliteJournal(Journal):
    kind = "sqlite"

    def __init__(self, path: Path, *, busy_timeout: float = 10.0) -> None:
        super().__init__()
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")
        self.busy_timeout = busy_timeout  # seconds a write waits for another writer
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gearshift-journal")
        self._conn: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._file: tuple[int, int] | None = None  # (st_dev, st_ino) of the file we opened
        self._closed = False
        self.version = 0

    @classmethod
    async def open(cls, path: Path, *, migrate_upto: int | None = None,
                   busy_timeout: float = 10.0) -> SqliteJournal:
        """Open (creating if needed) and migrate the journal at ``path``."""
        journal = cls(path, busy_timeout=busy_timeout)
        try:
            await journal._run("open", journal._open, migrate_upto)
        except BaseException:
            await journal.close()
            raise
        return journal

    async def _run(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on the journal's thread; a driver or OS error becomes JournalError."""
        if self._closed:
            raise JournalError(f"SQLite journal {self.path}: {what} failed: the journal is "
                               f"closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._thread, fn, *args)
        except (sqlite3.Error, OSError) as exc:
            raise JournalError(f"SQLite journal {self.path}: {what} failed: "
                               f"{exc.__class__.__name__}: {exc}") from exc
        except _Moved:
            raise JournalError(f"SQLite journal {self.path}: {what} failed: the file was "
                               f"removed or replaced since it was opened, so writes would be "
                               f"lost; restart gearshift") from None

    def _open(self, migrate_upto: int | None) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path), isolation_level=None,
                                   timeout=self.busy_timeout)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError([f"journal.path: cannot open the SQLite journal {self.path}: "
                               f"{exc}"]) from exc
        self._conn = conn
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
        self.version = migrate_sqlite(conn, where=str(self.path), upto=migrate_upto)
        self._file = self._identity()

    def _identity(self) -> tuple[int, int] | None:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None
        return stat.st_dev, stat.st_ino

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise JournalError(f"SQLite journal {self.path} is closed")
        return self._conn

    def _tx(self, fn: Callable[[sqlite3.Connection], T], *, fenced: bool = True) -> T:
        """Run ``fn`` in one write transaction, after checking the fencing token."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if self._identity() != self._file:
                raise _Moved
            if fenced and self.token is not None:
                row = conn.execute("SELECT token FROM gearshift_lease WHERE name = 'leader'"
                                   ).fetchone()
                current = row[0] if row is not None else None
                if current != self.token:
                    raise _Stale(current)
            result = fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            rollback(conn)
            raise
        return result

    async def _write(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return await self._run(what, self._tx, fn)
        except _Stale as stale:
            raise self._refuse(stale.current) from None

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

    async def advance(self, op_id: str, *, phase: str, at: float, **changes: Any) -> Operation:
        unknown = set(changes) - set(OP_COLUMNS)
        if unknown:
            raise ValueError(f"unknown operation fields: {', '.join(sorted(unknown))}")

        def update(conn: sqlite3.Connection) -> Operation:
            row = conn.execute(f"{_SELECT_OPS} WHERE op_id = ?", (op_id,)).fetchone()
            if row is None:
                raise KeyError(f"no operation {op_id}")
            current = row_to_operation(row)
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
            rows = self.conn.execute(f"{_SELECT_OPS} WHERE done = 0 ORDER BY started_at, op_id"
                                     ).fetchall()
            return [row_to_operation(r) for r in rows]

        return await self._run("open_operations", query)

    async def get(self, op_id: str) -> Operation | None:
        def query() -> Operation | None:
            row = self.conn.execute(f"{_SELECT_OPS} WHERE op_id = ?", (op_id,)).fetchone()
            return row_to_operation(row) if row is not None else None

        return await self._run("get", query)

    async def history(self, *, limit: int = 1000) -> list[Operation]:
        def query() -> list[Operation]:
            rows = self.conn.execute(f"{_SELECT_OPS} ORDER BY started_at DESC, op_id LIMIT ?",
                                     (limit,)).fetchall()
            return [row_to_operation(r) for r in rows]

        return await self._run("history", query)

    # -- machines ---------------------------------------------------------------------
    async def _adopt(self, machine: Machine) -> None:
        def upsert(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO gearshift_machines VALUES (?, ?, ?, ?, ?, ?, ?) "
                         "ON CONFLICT (identity) DO UPDATE SET provider = excluded.provider, "
                         "machine_id = excluded.machine_id, blueprint = excluded.blueprint, "
                         "pool = excluded.pool, created_at = excluded.created_at, "
                         "key = excluded.key",
                         (machine.name, machine.provider, machine.machine_id, machine.blueprint,
                          machine.pool, machine.created_at, machine.key))

        await self._write("adopt", upsert)

    async def _release(self, identity: str) -> None:
        await self._write("release", lambda conn: conn.execute(
            "DELETE FROM gearshift_machines WHERE identity = ?", (identity,)))

    async def _read_machines(self) -> dict[str, Machine]:
        def query() -> dict[str, Machine]:
            rows = self.conn.execute("SELECT identity, provider, machine_id, blueprint, pool, "
                                     "created_at, key FROM gearshift_machines").fetchall()
            return {r[0]: _machine(r) for r in rows}

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

    async def schema_version(self) -> int:
        return self.version

    async def close(self) -> None:
        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

        if self._closed:
            return
        try:
            await self._run("close", shut)
        finally:
            self._closed = True
            self._thread.shutdown(wait=True)
