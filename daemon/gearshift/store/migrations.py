"""The journal's schema, as an ordered list of versioned migrations for SQLite and PostgreSQL.

A store records every migration it applied in ``gearshift_schema_version``. On open it
applies the ones it lacks, in order, each in its own transaction, so an old journal
moves forward one step at a time and a crash mid-way leaves it at a version it can
resume from. A journal whose version is *newer* than the last migration listed here was
written by a newer gearshift: this one refuses to start rather than guess what the
newer columns mean (``JournalSchemaError`` with what to do).

Never edit a released migration; append a new one.
"""

from __future__ import annotations

from dataclasses import dataclass

from gearshift.errors import JournalSchemaError


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]


VERSION_TABLE = {
    "sqlite": ("CREATE TABLE IF NOT EXISTS gearshift_schema_version ("
               "version INTEGER PRIMARY KEY, description TEXT NOT NULL, "
               "applied_at REAL NOT NULL)"),
    "postgres": ("CREATE TABLE IF NOT EXISTS gearshift_schema_version ("
                 "version INTEGER PRIMARY KEY, description TEXT NOT NULL, "
                 "applied_at DOUBLE PRECISION NOT NULL)"),
}

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1, "operations and owned machines",
        sqlite=(
            """CREATE TABLE gearshift_operations (
                op_id TEXT PRIMARY KEY, kind TEXT NOT NULL, pool TEXT NOT NULL,
                identity TEXT NOT NULL, phase TEXT NOT NULL, done INTEGER NOT NULL DEFAULT 0,
                started_at REAL NOT NULL, updated_at REAL NOT NULL, provider TEXT,
                blueprint TEXT, machine_id TEXT, max_active_gears INTEGER NOT NULL DEFAULT 0,
                deadline REAL, reason TEXT NOT NULL DEFAULT '', error TEXT)""",
            "CREATE INDEX gearshift_operations_open ON gearshift_operations (done, started_at)",
            """CREATE TABLE gearshift_machines (
                identity TEXT PRIMARY KEY, provider TEXT NOT NULL, machine_id TEXT NOT NULL,
                blueprint TEXT, pool TEXT, created_at REAL, key TEXT)""",
        ),
        postgres=(
            """CREATE TABLE gearshift_operations (
                op_id TEXT PRIMARY KEY, kind TEXT NOT NULL, pool TEXT NOT NULL,
                identity TEXT NOT NULL, phase TEXT NOT NULL, done BOOLEAN NOT NULL DEFAULT FALSE,
                started_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL,
                provider TEXT, blueprint TEXT, machine_id TEXT,
                max_active_gears INTEGER NOT NULL DEFAULT 0, deadline DOUBLE PRECISION,
                reason TEXT NOT NULL DEFAULT '', error TEXT)""",
            "CREATE INDEX gearshift_operations_open ON gearshift_operations (done, started_at)",
            """CREATE TABLE gearshift_machines (
                identity TEXT PRIMARY KEY, provider TEXT NOT NULL, machine_id TEXT NOT NULL,
                blueprint TEXT, pool TEXT, created_at DOUBLE PRECISION, key TEXT)""",
        ),
    ),
    Migration(
        2, "leader lease with a fencing token",
        sqlite=(
            """CREATE TABLE gearshift_lease (
                name TEXT PRIMARY KEY, holder TEXT, token INTEGER NOT NULL,
                expires_at REAL NOT NULL)""",
        ),
        postgres=(
            """CREATE TABLE gearshift_lease (
                name TEXT PRIMARY KEY, holder TEXT, token BIGINT NOT NULL,
                expires_at TIMESTAMPTZ NOT NULL)""",
        ),
    ),
    Migration(
        3, "recoveries performed",
        sqlite=(
            """CREATE TABLE gearshift_recoveries (
                id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, holder TEXT NOT NULL,
                summary TEXT NOT NULL)""",
        ),
        postgres=(
            """CREATE TABLE gearshift_recoveries (
                id BIGSERIAL PRIMARY KEY, at DOUBLE PRECISION NOT NULL, holder TEXT NOT NULL,
                summary TEXT NOT NULL)""",
        ),
    ),
    Migration(
        4, "finished operations found by age, for pruning",
        sqlite=("CREATE INDEX gearshift_operations_finished ON gearshift_operations "
                "(done, updated_at)",),
        postgres=("CREATE INDEX gearshift_operations_finished ON gearshift_operations "
                  "(done, updated_at)",),
    ),
    Migration(
        5, "paused pools",
        sqlite=(
            """CREATE TABLE gearshift_paused_pools (
                pool TEXT PRIMARY KEY, paused_at REAL NOT NULL)""",
        ),
        postgres=(
            """CREATE TABLE gearshift_paused_pools (
                pool TEXT PRIMARY KEY, paused_at DOUBLE PRECISION NOT NULL)""",
        ),
    ),
    Migration(
        6, "why a drain was started, and for which pool",
        sqlite=("ALTER TABLE gearshift_operations ADD COLUMN cause TEXT",
                "ALTER TABLE gearshift_operations ADD COLUMN preempted_by TEXT"),
        postgres=("ALTER TABLE gearshift_operations ADD COLUMN cause TEXT",
                  "ALTER TABLE gearshift_operations ADD COLUMN preempted_by TEXT"),
    ),
    Migration(
        7, "when recovery first saw a machine of ours the journal did not know",
        sqlite=(
            """CREATE TABLE gearshift_first_seen (
                provider TEXT NOT NULL, machine_id TEXT NOT NULL, seen_at REAL NOT NULL,
                PRIMARY KEY (provider, machine_id))""",
        ),
        postgres=(
            """CREATE TABLE gearshift_first_seen (
                provider TEXT NOT NULL, machine_id TEXT NOT NULL,
                seen_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (provider, machine_id))""",
        ),
    ),
    Migration(
        8, "bare-metal allocations (were a JSON state file per provider)",
        sqlite=(
            """CREATE TABLE gearshift_allocations (
                provider TEXT NOT NULL, machine_id TEXT NOT NULL, key TEXT NOT NULL,
                name TEXT NOT NULL, pool TEXT NOT NULL, blueprint TEXT NOT NULL,
                bmc TEXT NOT NULL, system TEXT NOT NULL, foreman_host TEXT,
                allocated_at REAL NOT NULL, PRIMARY KEY (provider, machine_id))""",
        ),
        postgres=(
            """CREATE TABLE gearshift_allocations (
                provider TEXT NOT NULL, machine_id TEXT NOT NULL, key TEXT NOT NULL,
                name TEXT NOT NULL, pool TEXT NOT NULL, blueprint TEXT NOT NULL,
                bmc TEXT NOT NULL, system TEXT NOT NULL, foreman_host TEXT,
                allocated_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (provider, machine_id))""",
        ),
    ),
    Migration(
        9, "each pool's demand, one bucket a minute (predictive scaling's history)",
        sqlite=(
            """CREATE TABLE gearshift_demand (
                pool TEXT NOT NULL, minute INTEGER NOT NULL, gears INTEGER NOT NULL,
                PRIMARY KEY (pool, minute))""",
            "CREATE INDEX gearshift_demand_minute ON gearshift_demand (minute)",
        ),
        postgres=(
            """CREATE TABLE gearshift_demand (
                pool TEXT NOT NULL, minute BIGINT NOT NULL, gears INTEGER NOT NULL,
                PRIMARY KEY (pool, minute))""",
            "CREATE INDEX gearshift_demand_minute ON gearshift_demand (minute)",
        ),
    ),
)

LATEST = MIGRATIONS[-1].version


def pending(found: int, *, where: str, migrations: tuple[Migration, ...] = MIGRATIONS
            ) -> list[Migration]:
    """The migrations a journal at version ``found`` still needs, in order.

    Raises ``JournalSchemaError`` when ``found`` is newer than anything listed.
    """
    latest = migrations[-1].version if migrations else 0
    if found > latest:
        raise JournalSchemaError(
            f"the journal at {where} has schema version {found}, newer than this gearshift "
            f"understands (up to {latest}); it was written by a newer gearshift. Upgrade "
            f"gearshift, or point journal settings at another store; refusing to start")
    return [m for m in migrations if m.version > found]
