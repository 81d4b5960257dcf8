"""Each pool's demand history (``records.DemandHistory``) in SQLite and PostgreSQL.

Mixins, so the history's statements live in one small module apart from the stores'
operations and lease code: ``SqliteJournal`` and ``PostgresJournal`` inherit them and
supply the ways to run a statement (``_run``/``_write`` on SQLite's thread, ``_call``/
``_write`` on PostgreSQL's pool). A bucket written again keeps the larger figure
(``MAX`` on conflict): recording is idempotent, so a retry or a restart mid-minute never
lowers what was seen. Writes are fenced: only the leader records.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from gearshift.records import DemandSample

T = TypeVar("T")

_SELECT = "SELECT pool, minute, gears FROM gearshift_demand WHERE minute >= {} ORDER BY pool, minute"


class _SqliteRunner(Protocol):
    @property
    def conn(self) -> sqlite3.Connection: ...

    async def _run(self, what: str, fn: Callable[..., T], *args: Any) -> T: ...

    async def _write(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T: ...


class _PostgresRunner(Protocol):
    async def _call(self, what: str, make: Callable[..., Awaitable[T]], *args: Any) -> T: ...

    async def _write(self, what: str, fn: Callable[[Any], Awaitable[T]], *,
                     fenced: bool = True) -> T: ...


def _rows(samples: Sequence[DemandSample]) -> list[tuple[str, int, int]]:
    return [(s.pool, int(s.minute), int(s.gears)) for s in samples]


class SqliteDemand:
    async def record_demand(self: _SqliteRunner, samples: Sequence[DemandSample]) -> None:
        rows = _rows(samples)
        if not rows:
            return
        await self._write("record_demand", lambda conn: conn.executemany(
            "INSERT INTO gearshift_demand (pool, minute, gears) VALUES (?, ?, ?) "
            "ON CONFLICT (pool, minute) DO UPDATE SET gears = MAX(gears, excluded.gears)",
            rows))

    async def demand_since(self: _SqliteRunner, *, minute: int) -> list[DemandSample]:
        def query() -> list[DemandSample]:
            rows = self.conn.execute(_SELECT.format("?"), (int(minute),)).fetchall()
            return [DemandSample(pool=r[0], minute=int(r[1]), gears=int(r[2])) for r in rows]

        return await self._run("demand_since", query)

    async def prune_demand(self: _SqliteRunner, *, before_minute: int) -> int:
        def delete(conn: sqlite3.Connection) -> int:
            return conn.execute("DELETE FROM gearshift_demand WHERE minute < ?",
                                (int(before_minute),)).rowcount

        return await self._write("prune_demand", delete)


class PostgresDemand:
    async def record_demand(self: _PostgresRunner, samples: Sequence[DemandSample]) -> None:
        rows = _rows(samples)
        if not rows:
            return
        await self._write("record_demand", lambda conn: conn.executemany(
            "INSERT INTO gearshift_demand (pool, minute, gears) VALUES ($1, $2, $3) "
            "ON CONFLICT (pool, minute) DO UPDATE SET "
            "gears = GREATEST(gearshift_demand.gears, EXCLUDED.gears)", rows))

    async def demand_since(self: _PostgresRunner, *, minute: int) -> list[DemandSample]:
        rows = await self._call("demand_since", lambda conn: conn.fetch(
            _SELECT.format("$1"), int(minute)))
        return [DemandSample(pool=r["pool"], minute=int(r["minute"]), gears=int(r["gears"]))
                for r in rows]

    async def prune_demand(self: _PostgresRunner, *, before_minute: int) -> int:
        status = await self._write("prune_demand", lambda conn: conn.execute(
            "DELETE FROM gearshift_demand WHERE minute < $1", int(before_minute)))
        return int(str(status).rsplit(" ", 1)[-1])
