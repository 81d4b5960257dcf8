"""The journal on PostgreSQL (asyncpg, extra ``postgres``): for two or more instances (HA).

Same tables and migrations as SQLite (``store.migrations``), applied under a
transaction-scoped advisory lock so two daemons starting together migrate once.

The leader lease is a row (``gearshift_lease``) with a holder, a fencing token and an
expiry on the *database's* clock, so the instances' clocks do not matter. Taking an
expired or released lease increments the token. Every write runs in a transaction that
first reads the lease row ``FOR SHARE`` and compares its token with ours: a takeover
(an ``UPDATE`` of that row) waits for writes in progress to commit, and any write after
it sees the new token and is refused (``Fenced``). So a deposed leader that wakes up
late (a long GC pause, a frozen VM, a network partition) cannot record anything, and
since gearshift journals every step before taking it, cannot do anything either. A
leader frozen *inside* a write would hold that share lock and block the takeover for as
long as it stays frozen: every session runs with ``idle_in_transaction_session_timeout``
(``IDLE_IN_TRANSACTION_MS``; a write takes milliseconds), so the server ends such a
session, its transaction rolls back, and the follower's takeover goes through.

The DSN is a secret: it is never logged nor put in an error message (only host, port
and database name are). Every driver failure (``asyncpg.PostgresError``, a closed pool
or connection, ``OSError``, a timeout) surfaces as ``JournalError`` naming the store and
the journal call, with the DSN's password blanked out of the driver's message.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import replace
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from gearshift.errors import ConfigError, JournalError
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
from gearshift.store import migrations
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
from gearshift.store.demand import PostgresDemand
from gearshift.store.journal import JournalBase

T = TypeVar("T")

MIGRATION_LOCK = 0x6765617273  # "gears": one advisory lock id for schema changes
# A session idle this long inside a transaction is ended by the server (see the docstring).
IDLE_IN_TRANSACTION_MS = 3000


def describe_dsn(dsn: str) -> str:
    """host:port/database of a DSN, without user or password."""
    try:
        parts = urlsplit(dsn)
        host = parts.hostname or "localhost"
        port = parts.port or 5432
        database = parts.path.lstrip("/") or "(default)"
    except ValueError:
        return "PostgreSQL (unparseable DSN)"
    # Not a URL ("host=db password=..."), or a password with an unescaped "/" that ends
    # up in the path: the rest of the text may be the secret itself.
    if parts.scheme not in ("postgres", "postgresql") or "@" in parts.path:
        return "PostgreSQL (unparseable DSN)"
    return f"postgresql://{host}:{port}/{database}"


def _driver_errors() -> tuple[type[BaseException], ...]:
    """What asyncpg (and the network under it) raises when the store fails."""
    import asyncpg  # noqa: PLC0415 - the postgres extra is optional

    return (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError,
            asyncpg.InternalClientError)


class _Stale(Exception):
    def __init__(self, current: int | None) -> None:
        super().__init__(current)
        self.current = current


class PostgresJournal(PostgresDemand, JournalBase):
    kind = "postgres"

    def __init__(self, pool: Any, *, where: str, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.pool = pool
        self.where = where
        self._secrets = tuple(s for s in secrets if s)  # blanked out of driver messages
        self.version = 0

    @classmethod
    async def open(cls, dsn: str, *, migrate_upto: int | None = None,
                   connect_timeout: float = 10.0) -> PostgresJournal:
        try:
            import asyncpg  # noqa: PLC0415 - the postgres extra is optional
        except ImportError as exc:
            raise ConfigError(["journal.kind postgres needs asyncpg: "
                               "pip install 'gearshift[postgres]'"]) from exc
        where = describe_dsn(dsn)
        try:
            pool = await asyncpg.create_pool(
                dsn, min_size=1, max_size=4, command_timeout=10, timeout=connect_timeout,
                server_settings={"idle_in_transaction_session_timeout":
                                 str(IDLE_IN_TRANSACTION_MS)})
        except ValueError as exc:  # asyncpg.ClientConfigurationError, a bad port, ...
            raise ConfigError([f"journal.dsn: not a usable postgresql:// URL ({where}): "
                               f"{exc.__class__.__name__}; percent-encode special characters "
                               f"in the password"]) from None
        except _driver_errors() as exc:
            raise JournalError(f"cannot connect to the journal at {where}: "
                               f"{exc.__class__.__name__}") from None
        password = urlsplit(dsn).password or ""
        journal = cls(pool, where=where, secrets=(password, unquote(password)))
        try:
            journal.version = await journal._call("open", journal._migrate, migrate_upto)
        except BaseException:
            await journal.close()
            raise
        return journal

    async def _migrate(self, conn: Any, upto: int | None) -> int:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute(migrations.VERSION_TABLE["postgres"])
            found = await conn.fetchval(
                "SELECT COALESCE(MAX(version), 0) FROM gearshift_schema_version")
        for migration in migrations.pending(found, where=self.where):
            if upto is not None and migration.version > upto:
                break
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
                now_at = await conn.fetchval(
                    "SELECT COALESCE(MAX(version), 0) FROM gearshift_schema_version")
                if now_at < migration.version:
                    for statement in migration.postgres:
                        await conn.execute(statement)
                    await conn.execute(
                        "INSERT INTO gearshift_schema_version VALUES ($1, $2, "
                        "EXTRACT(EPOCH FROM clock_timestamp()))",
                        migration.version, migration.description)
            found = migration.version
        return int(found)

    async def _call(self, what: str, make: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``make(conn, *args)`` on a pooled connection; a driver error becomes JournalError."""
        try:
            async with self.pool.acquire() as conn:
                return await make(conn, *args)
        except _Stale as stale:
            raise self._refuse(stale.current) from None
        except _driver_errors() as exc:
            # A connection lost mid-transaction fails again when the transaction ends
            # ("the underlying connection is closed"): report the first failure, not that.
            first: BaseException = exc
            while isinstance(first.__context__, _driver_errors()):
                first = first.__context__
            detail = str(first)[:200]
            for secret in self._secrets:
                detail = detail.replace(secret, "***")
            raise JournalError(f"PostgreSQL journal at {self.where}: {what} failed: "
                               f"{first.__class__.__name__}: {detail}") from None

    async def _write(self, what: str, fn: Callable[[Any], Awaitable[T]], *,
                     fenced: bool = True) -> T:
        async def run(conn: Any) -> T:
            async with conn.transaction():
                if fenced and self.token is not None:
                    current = await conn.fetchval(
                        "SELECT token FROM gearshift_lease WHERE name = 'leader' FOR SHARE")
                    if current != self.token:
                        raise _Stale(current)
                return await fn(conn)

        return await self._call(what, run)

    # -- operations -------------------------------------------------------------------
    async def begin(self, op: Operation) -> None:
        check_start(op)
        import asyncpg  # noqa: PLC0415

        async def insert(conn: Any) -> None:
            placeholders = ", ".join(f"${i}" for i in range(1, len(OP_COLUMNS) + 2))
            try:
                await conn.execute(
                    f"INSERT INTO gearshift_operations ({', '.join(OP_COLUMNS)}, done) "
                    f"VALUES ({placeholders})",
                    *[getattr(op, c) for c in OP_COLUMNS], op.done)
            except asyncpg.UniqueViolationError as exc:
                raise ValueError(f"operation {op.op_id} already journaled") from exc

        await self._write("begin", insert)

    async def advance(self, op_id: str, *, phase: Phase, at: float, **changes: Any) -> Operation:
        unknown = set(changes) - set(OP_COLUMNS)
        if unknown:
            raise ValueError(f"unknown operation fields: {', '.join(sorted(unknown))}")

        async def update(conn: Any) -> Operation:
            row = await conn.fetchrow(f"{SELECT_OPS} WHERE op_id = $1 FOR UPDATE", op_id)
            if row is None:
                raise KeyError(f"no operation {op_id}")
            current = operation_from(row)
            check_transition(current, phase)
            fields = {"phase": phase, "updated_at": at, **changes}
            new = replace(current, **fields)
            assignments = ", ".join(f"{k} = ${i}" for i, k in enumerate(fields, start=1))
            n = len(fields)
            await conn.execute(f"UPDATE gearshift_operations SET {assignments}, done = ${n + 1} "
                               f"WHERE op_id = ${n + 2}", *fields.values(), new.done, op_id)
            return new

        return await self._write("advance", update)

    async def open_operations(self) -> list[Operation]:
        rows = await self._call("open_operations", lambda conn: conn.fetch(
            f"{SELECT_OPS} WHERE NOT done ORDER BY started_at, op_id"))
        return [operation_from(r) for r in rows]

    async def get(self, op_id: str) -> Operation | None:
        row = await self._call("get", lambda conn: conn.fetchrow(
            f"{SELECT_OPS} WHERE op_id = $1", op_id))
        return operation_from(row) if row is not None else None

    async def history(self, *, limit: int = 1000) -> list[Operation]:
        rows = await self._call("history", lambda conn: conn.fetch(
            f"{SELECT_OPS} ORDER BY started_at DESC, op_id LIMIT $1", limit))
        return [operation_from(r) for r in rows]

    # -- machines ---------------------------------------------------------------------
    async def _adopt(self, machine: Machine) -> None:
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in MACHINE_COLUMNS[1:])
        placeholders = ", ".join(f"${i}" for i in range(1, len(MACHINE_COLUMNS) + 1))
        await self._write("adopt", lambda conn: conn.execute(
            f"INSERT INTO gearshift_machines ({', '.join(MACHINE_COLUMNS)}) "
            f"VALUES ({placeholders}) ON CONFLICT (identity) DO UPDATE SET {updates}",
            *machine_values(machine)))

    async def _release(self, identity: str) -> None:
        await self._write("release", lambda conn: conn.execute(
            "DELETE FROM gearshift_machines WHERE identity = $1", identity))

    async def _read_machines(self) -> dict[str, Machine]:
        rows = await self._call("machines", lambda conn: conn.fetch(SELECT_MACHINES))
        return {r["identity"]: machine_from(r) for r in rows}

    # -- recoveries -------------------------------------------------------------------
    async def record_recovery(self, record: RecoveryRecord) -> None:
        await self._write("record_recovery", lambda conn: conn.execute(
            "INSERT INTO gearshift_recoveries (at, holder, summary) VALUES ($1, $2, $3)",
            record.at, record.holder, json.dumps(record.summary, sort_keys=True)))

    async def recoveries(self) -> list[RecoveryRecord]:
        rows = await self._call("recoveries", lambda conn: conn.fetch(
            "SELECT at, holder, summary FROM gearshift_recoveries ORDER BY id"))
        return [RecoveryRecord(at=r["at"], holder=r["holder"], summary=json.loads(r["summary"]))
                for r in rows]

    # -- retention --------------------------------------------------------------------
    async def prune(self, *, before: float) -> Pruned:
        async def delete(conn: Any) -> Pruned:
            ops = await conn.fetchval(
                "WITH gone AS (DELETE FROM gearshift_operations WHERE done AND updated_at < $1 "
                "RETURNING 1) SELECT count(*) FROM gone", before)
            recoveries = await conn.fetchval(
                "WITH gone AS (DELETE FROM gearshift_recoveries WHERE at < $1 RETURNING 1) "
                "SELECT count(*) FROM gone", before)
            return Pruned(operations=int(ops), recoveries=int(recoveries))

        return await self._write("prune", delete)

    # -- paused pools -----------------------------------------------------------------
    async def pause_pool(self, pool: str, *, at: float) -> None:
        await self._write("pause_pool", lambda conn: conn.execute(
            "INSERT INTO gearshift_paused_pools VALUES ($1, $2) ON CONFLICT (pool) DO NOTHING",
            pool, at))

    async def resume_pool(self, pool: str) -> None:
        await self._write("resume_pool", lambda conn: conn.execute(
            "DELETE FROM gearshift_paused_pools WHERE pool = $1", pool))

    async def paused_pools(self) -> dict[str, float]:
        rows = await self._call("paused_pools", lambda conn: conn.fetch(
            "SELECT pool, paused_at FROM gearshift_paused_pools"))
        return {r["pool"]: r["paused_at"] for r in rows}

    # -- machines recovery saw but the journal did not know ----------------------------
    async def first_seen(self) -> dict[tuple[str, str], float]:
        rows = await self._call("first_seen", lambda conn: conn.fetch(
            "SELECT provider, machine_id, seen_at FROM gearshift_first_seen"))
        return {(r["provider"], r["machine_id"]): r["seen_at"] for r in rows}

    async def see_first(self, provider: str, machine_id: str, *, at: float) -> None:
        await self._write("see_first", lambda conn: conn.execute(
            "INSERT INTO gearshift_first_seen VALUES ($1, $2, $3) "
            "ON CONFLICT (provider, machine_id) DO NOTHING", provider, machine_id, at))

    async def forget_seen(self, machines: Collection[tuple[str, str]]) -> None:
        keys = list(machines)
        if not keys:
            return
        await self._write("forget_seen", lambda conn: conn.executemany(
            "DELETE FROM gearshift_first_seen WHERE provider = $1 AND machine_id = $2", keys))

    # -- the lease --------------------------------------------------------------------
    async def acquire_lease(self, holder: str, ttl: float) -> int | None:
        token = await self._write("acquire_lease", lambda conn: conn.fetchval(
            "INSERT INTO gearshift_lease (name, holder, token, expires_at) "
            "VALUES ('leader', $1, 1, clock_timestamp() + make_interval(secs => $2)) "
            "ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, "
            "token = gearshift_lease.token + 1, expires_at = EXCLUDED.expires_at "
            "WHERE gearshift_lease.holder IS NULL "
            "OR gearshift_lease.expires_at < clock_timestamp() "
            "RETURNING token", holder, float(ttl)), fenced=False)
        return int(token) if token is not None else None

    async def renew_lease(self, holder: str, token: int, ttl: float) -> bool:
        renewed = await self._write("renew_lease", lambda conn: conn.fetchval(
            "UPDATE gearshift_lease SET expires_at = clock_timestamp() + make_interval(secs => $3) "
            "WHERE name = 'leader' AND holder = $1 AND token = $2 RETURNING token",
            holder, token, float(ttl)), fenced=False)
        return renewed is not None

    async def release_lease(self, holder: str, token: int) -> None:
        await self._write("release_lease", lambda conn: conn.execute(
            "UPDATE gearshift_lease SET holder = NULL, expires_at = clock_timestamp() "
            "WHERE name = 'leader' AND holder = $1 AND token = $2", holder, token), fenced=False)

    async def lease(self) -> LeaseInfo | None:
        row = await self._call("lease", lambda conn: conn.fetchrow(
            "SELECT holder, token, EXTRACT(EPOCH FROM expires_at - clock_timestamp()) AS left_s "
            "FROM gearshift_lease WHERE name = 'leader'"))
        if row is None:
            return None
        return LeaseInfo(holder=row["holder"], token=int(row["token"]),
                         expires_in=float(row["left_s"]))

    # -- bare-metal allocations (not fenced: see records.Allocations) -----------------
    async def allocations(self, provider: str) -> dict[str, Allocation]:
        rows = await self._call("allocations", lambda conn: conn.fetch(
            f"{SELECT_ALLOCATIONS}$1", provider))
        return dict(allocation_from(r) for r in rows)

    async def allocate(self, provider: str, allocations: Mapping[str, Allocation]) -> None:
        rows = [allocation_values(provider, mid, a) for mid, a in allocations.items()]
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in ALLOCATION_COLUMNS[2:])
        placeholders = ", ".join(f"${i}" for i in range(1, len(ALLOCATION_COLUMNS) + 1))
        await self._write("allocate", lambda conn: conn.executemany(
            f"INSERT INTO gearshift_allocations ({', '.join(ALLOCATION_COLUMNS)}) "
            f"VALUES ({placeholders}) ON CONFLICT (provider, machine_id) DO UPDATE SET "
            f"{updates}", rows), fenced=False)

    async def free(self, provider: str, machine_id: str) -> None:
        await self._write("free", lambda conn: conn.execute(
            "DELETE FROM gearshift_allocations WHERE provider = $1 AND machine_id = $2",
            provider, machine_id), fenced=False)

    async def schema_version(self) -> int:
        return self.version

    async def close(self) -> None:
        try:
            async with asyncio.timeout(5):
                await self.pool.close()
        except TimeoutError:
            self.pool.terminate()
