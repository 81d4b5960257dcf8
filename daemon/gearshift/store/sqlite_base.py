"""The SQLite journal's file, thread and transactions; the statements are in ``store.sqlite``.

Why stdlib ``sqlite3`` in one dedicated thread rather than ``aiosqlite``: aiosqlite is
that same idea (a thread owning the connection) behind another dependency; a
one-worker executor gives the event loop the same guarantee (it never blocks on disk)
and keeps every statement on the thread that opened the connection.

Durability: ``journal_mode=WAL`` with ``synchronous=FULL``, so a commit has reached the
disk before ``begin``/``advance`` return, and the caller acts only after that. A
``kill -9`` at any instant leaves either the old or the new record, never half of one.

Every write runs in one ``BEGIN IMMEDIATE`` transaction that first checks the fencing
token in ``gearshift_lease`` (``_tx``).

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
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self, TypeVar

from gearshift.errors import ConfigError, JournalError
from gearshift.store import migrations
from gearshift.store.journal import JournalBase

T = TypeVar("T")


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


class SqliteBase(JournalBase):
    """One SQLite file, owned by one thread; subclasses add the statements."""

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
                   busy_timeout: float = 10.0) -> Self:
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
