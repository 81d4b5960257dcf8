"""The journal stores (memory, SQLite, a real PostgreSQL): one contract, migrations, fencing."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from conftest import ROOT
from gearshift.errors import (
    BadTransition,
    ConfigError,
    Fenced,
    JournalError,
    JournalSchemaError,
)
from gearshift.model import DrainCause, Machine
from gearshift.plan import Preemption
from gearshift.records import (
    Allocation,
    Journal,
    Operation,
    Phase,
    Pruned,
    RecoveryRecord,
    drains_in_flight,
    pending_nodes,
    preemptions_in_flight,
)
from gearshift.store import migrations
from gearshift.store.journal import MemoryJournal
from gearshift.store.postgres import PostgresJournal, describe_dsn
from gearshift.store.sqlite import SqliteJournal
from pgpeer import PASSWORD, PgServer
from worldrig import POOL, PROVIDERS

Opener = Callable[[], Coroutine[Any, Any, Journal]]


def create_op(op_id: str = "op-1", *, at: float = 100.0, identity: str = "n1") -> Operation:
    return Operation(op_id=op_id, kind="create", pool="small", identity=identity,
                     phase=Phase.REQUESTED, started_at=at, updated_at=at, provider="rack-a",
                     blueprint="small-bm", max_active_gears=60, reason="pool small: test")


def drain_op(op_id: str = "drain-1", *, at: float = 200.0, identity: str = "n9",
             cause: DrainCause | None = None, preempted_by: str | None = None) -> Operation:
    return Operation(op_id=op_id, kind="drain", pool="small", identity=identity,
                     phase=Phase.DEACTIVATING, started_at=at, updated_at=at, provider="rack-a",
                     machine_id="m-9", deadline=at + 600, reason="pool small: shrink",
                     cause=cause, preempted_by=preempted_by)


async def _openers(kind: str, request: pytest.FixtureRequest, tmp_path: Path
                   ) -> AsyncIterator[Opener]:
    """Opens journals on one shared store (a second open sees what the first wrote)."""
    opened: list[Journal] = []
    memory = MemoryJournal()
    if kind == "postgres":
        server: PgServer = request.getfixturevalue("postgres")
        dsn = server.create_database(f"j_{uuid.uuid4().hex[:12]}")

    async def open_one() -> Journal:
        journal: Journal
        if kind == "memory":
            journal = memory
        elif kind == "sqlite":
            journal = await SqliteJournal.open(tmp_path / "journal.db")
        else:
            journal = await PostgresJournal.open(dsn)
        opened.append(journal)
        return journal

    yield open_one
    for journal in opened:
        await journal.close()


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def opener(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    async for open_one in _openers(request.param, request, tmp_path):
        yield open_one


@pytest.fixture(params=["sqlite", "postgres"])
async def durable_opener(request: pytest.FixtureRequest, tmp_path: Path
                         ) -> AsyncIterator[Opener]:
    """Stores two processes can share (a MemoryJournal has no second holder to fence)."""
    async for open_one in _openers(request.param, request, tmp_path):
        yield open_one


async def test_operations_are_recorded_advanced_and_listed(opener: Opener) -> None:
    journal = await opener()
    await journal.begin(create_op("a", at=101))
    await journal.begin(drain_op("b", at=100))
    advanced = await journal.advance("a", phase=Phase.CREATED, at=105, machine_id="m-1")
    assert advanced.phase == "created" and advanced.machine_id == "m-1"
    assert advanced.updated_at == 105
    again = await opener()
    open_ops = await again.open_operations()
    assert [o.op_id for o in open_ops] == ["b", "a"]  # oldest first
    assert open_ops[1] == advanced
    assert [p.identity for p in pending_nodes(open_ops)] == ["n1"]
    assert [d.identity for d in drains_in_flight(open_ops)] == ["n9"]
    await journal.advance("a", phase=Phase.REGISTERED, at=110)
    assert [o.op_id for o in await again.open_operations()] == ["b"]
    done = await again.get("a")
    assert done is not None and done.done and done.phase == "registered"
    assert {o.op_id for o in await again.history()} == {"a", "b"}


async def test_phases_only_move_forward_and_a_refused_step_writes_nothing(opener: Opener
                                                                          ) -> None:
    journal = await opener()
    await journal.begin(drain_op("d"))
    await journal.advance("d", phase=Phase.MOVING, at=201)
    await journal.advance("d", phase=Phase.MOVING, at=202)  # repeating a step is fine
    with pytest.raises(BadTransition, match="cannot go from moving to deactivating"):
        await journal.advance("d", phase=Phase.DEACTIVATING, at=203)
    await journal.advance("d", phase=Phase.REMOVING, at=204)
    await journal.advance("d", phase=Phase.RETIRING, at=205)
    await journal.advance("d", phase=Phase.RETIRED, at=206)
    with pytest.raises(BadTransition):
        await journal.advance("d", phase=Phase.CANCELLING, at=207)
    op = await journal.get("d")
    assert op is not None and (op.phase, op.updated_at) == ("retired", 206)
    with pytest.raises(BadTransition, match="cannot start in moving"):
        await journal.begin(Operation(**{**drain_op("e").__dict__, "phase": "moving"}))
    assert await journal.get("e") is None


async def test_an_operation_id_is_journaled_once(opener: Opener) -> None:
    journal = await opener()
    await journal.begin(create_op("same"))
    with pytest.raises(ValueError, match="already journaled"):
        await journal.begin(create_op("same"))


async def test_owned_machines_and_recoveries(opener: Opener) -> None:
    journal = await opener()
    machine = Machine(provider="rack-a", machine_id="m-1", name="n1", blueprint="small-bm",
                      pool="small", created_at=99.5, key="op-1")
    await journal.adopt(machine)
    await journal.adopt(Machine(provider="rack-a", machine_id="m-2", name="n2"))
    await journal.record_recovery(RecoveryRecord(at=1.0, holder="h", summary={"adopted": 2}))
    again = await opener()
    assert (await again.machines())["n1"] == machine
    await again.release("n2")
    await again.release("never-there")
    assert set(await journal.machines()) == {"n1"}
    assert [r.summary for r in await journal.recoveries()] == [{"adopted": 2}]


async def test_a_leader_reads_its_machines_once_a_follower_always(
        durable_opener: Opener) -> None:
    leader, follower = await durable_opener(), await durable_opener()
    token = await leader.acquire_lease("leader", 30)
    assert token is not None
    leader.fence(token)
    follower.fence(-1)  # never held the lease
    await leader.adopt(Machine(provider="rack-a", machine_id="m-1", name="n1"))
    first = await leader.machines()
    assert set(first) == {"n1"}
    assert await leader.machines() is first  # kept: nobody else may change them
    assert set(await follower.machines()) == {"n1"}
    await leader.adopt(Machine(provider="rack-a", machine_id="m-2", name="n2"))
    assert set(await leader.machines()) == {"n1", "n2"}  # its own write is seen at once
    assert set(await follower.machines()) == {"n1", "n2"}  # and the follower reads again
    await leader.release("n1")
    assert set(await leader.machines()) == {"n2"}
    assert set(await follower.machines()) == {"n2"}
    # A new term reads again: what changed while it did not lead is seen.
    leader.fence(-1)
    token = await follower.acquire_lease("follower", 30)
    assert token is None  # the lease is still the leader's: write as an unfenced store
    follower.fence(None)
    await follower.adopt(Machine(provider="rack-a", machine_id="m-3", name="n3"))
    assert set(await leader.machines()) == {"n2", "n3"}


async def test_the_lease_is_exclusive_and_a_deposed_holders_writes_are_refused(
        durable_opener: Opener) -> None:
    first = await durable_opener()
    second = await durable_opener()
    token = await first.acquire_lease("first", 0.5)
    assert token is not None
    first.fence(token)
    fenced: list[bool] = []
    first.on_fenced = lambda: fenced.append(True)
    await first.begin(create_op("before"))
    assert await second.acquire_lease("second", 5) is None  # held
    assert await first.renew_lease("first", token, 0.5)
    # The first holder stalls (no renewals) or dies; the second takes over.
    if isinstance(first, SqliteJournal):
        await first.release_lease("first", token)  # flock: the kernel frees it on death
    else:
        await asyncio.sleep(0.7)
    taken = await second.acquire_lease("second", 5)
    assert taken is not None and taken > token
    second.fence(taken)
    # The deposed holder wakes up and tries to carry on: every write is refused.
    with pytest.raises(Fenced, match="no longer the leader"):
        await first.begin(create_op("late"))
    with pytest.raises(Fenced):
        await first.advance("before", phase=Phase.CREATED, at=1)
    with pytest.raises(Fenced):
        await first.adopt(Machine(provider="rack-a", machine_id="m-x", name="x"))
    with pytest.raises(Fenced):
        await first.release("x")
    assert fenced == [True, True, True, True]
    assert await second.get("late") is None
    before = await second.get("before")
    assert before is not None and before.phase == "requested"
    assert not await first.renew_lease("first", token, 5)
    # The new holder writes as usual.
    await second.advance("before", phase=Phase.CREATED, at=2, machine_id="m")
    lease = await second.lease()
    assert lease is not None and lease.holder == "second" and lease.token == taken


async def test_finished_operations_and_old_recoveries_are_pruned_open_ones_never(
        opener: Opener) -> None:
    journal = await opener()
    await journal.begin(create_op("old-done", at=10))
    await journal.advance("old-done", phase=Phase.FAILED, at=20)
    await journal.begin(create_op("recently-done", at=10, identity="n2"))
    await journal.advance("recently-done", phase=Phase.CREATED, at=20)
    await journal.advance("recently-done", phase=Phase.REGISTERED, at=150)  # its last step counts
    await journal.begin(drain_op("old-open", at=5))  # never done, however old
    await journal.record_recovery(RecoveryRecord(at=50, holder="h", summary={"adopted": 1}))
    await journal.record_recovery(RecoveryRecord(at=120, holder="h", summary={}))
    assert await journal.prune(before=100) == Pruned(operations=1, recoveries=1)
    again = await opener()
    assert await again.get("old-done") is None
    assert [o.op_id for o in await again.history()] == ["recently-done", "old-open"]
    assert [o.op_id for o in await again.open_operations()] == ["old-open"]
    assert [r.at for r in await again.recoveries()] == [120]
    assert await again.prune(before=100) == Pruned()  # nothing left that old


async def test_paused_pools_outlive_the_instance_that_paused_them(opener: Opener) -> None:
    journal = await opener()
    await journal.pause_pool("small", at=10)
    await journal.pause_pool("big", at=11)
    await journal.pause_pool("small", at=12)  # again: paused since the first time
    again = await opener()
    assert await again.paused_pools() == {"small": 10, "big": 11}
    await again.resume_pool("big")
    await again.resume_pool("never-paused")
    assert await journal.paused_pools() == {"small": 10}


async def test_a_drains_cause_is_kept_and_rebuilds_its_preemption(opener: Opener) -> None:
    journal = await opener()
    await journal.begin(drain_op("p", at=200, identity="victim", cause="preemption",
                                 preempted_by="big"))
    await journal.begin(drain_op("s", at=201, identity="n2", cause="scale_in"))
    again = await opener()
    op = await again.get("p")
    assert op is not None and (op.cause, op.preempted_by) == ("preemption", "big")
    assert preemptions_in_flight(await again.open_operations()) == {
        "victim": Preemption(identity="victim", victim_pool="small", by_pool="big",
                             provider="rack-a", at=200)}
    await again.advance("p", phase=Phase.CANCELLED, at=300)
    assert preemptions_in_flight(await again.open_operations()) == {}


async def test_first_sightings_are_kept_until_forgotten(opener: Opener) -> None:
    journal = await opener()
    await journal.see_first("rack-a", "m-1", at=10)
    await journal.see_first("rack-a", "m-2", at=11)
    await journal.see_first("rack-a", "m-1", at=99)  # seen again: the first sighting stays
    again = await opener()
    assert await again.first_seen() == {("rack-a", "m-1"): 10, ("rack-a", "m-2"): 11}
    await again.forget_seen([("rack-a", "m-1"), ("rack-a", "never-seen")])
    await again.forget_seen([])
    assert await journal.first_seen() == {("rack-a", "m-2"): 11}


async def test_a_deposed_leader_can_neither_prune_nor_pause_nor_note_orphans(
        opener: Opener) -> None:
    first = await opener()
    token = await first.acquire_lease("first", 60)
    assert token is not None
    first.fence(token)
    await first.pause_pool("small", at=1)
    await first.see_first("rack-a", "m-1", at=1)
    await first.release_lease("first", token)
    second = await opener()  # the same store (for memory, the same journal): unfenced
    assert await second.acquire_lease("second", 60) == token + 1
    first.fence(token)  # the deposed leader still writes with its old token
    for write in (first.prune(before=1e12), first.pause_pool("big", at=2),
                  first.resume_pool("small"), first.see_first("rack-a", "m-2", at=2),
                  first.forget_seen([("rack-a", "m-1")])):
        with pytest.raises(Fenced):
            await write
    first.fence(None)
    assert await first.paused_pools() == {"small": 1}
    assert await first.first_seen() == {("rack-a", "m-1"): 1}


ALLOCATION = Allocation(key="op-1", name="n1", pool="small", blueprint="small-bm",
                        bmc="https://10.0.0.11", system="/redfish/v1/Systems/1",
                        foreman_host=None, allocated_at=99.5)


async def test_allocations_are_kept_by_provider_and_even_a_deposed_leader_frees(
        opener: Opener) -> None:
    journal = await opener()
    other = replace(ALLOCATION, key="op-2", name="n2", foreman_host="n2.example")
    await journal.allocate("rack-a", {"m-1": ALLOCATION, "m-2": other})
    await journal.allocate("rack-b", {"m-1": other})
    again = await opener()
    assert await again.allocations("rack-a") == {"m-1": ALLOCATION, "m-2": other}
    assert await again.allocations("rack-b") == {"m-1": other}
    assert await again.allocations("rack-c") == {}
    await again.allocate("rack-a", {"m-2": replace(other, pool="big")})  # replaced
    token = await journal.acquire_lease("first", 60)
    assert token is not None
    await journal.release_lease("first", token)
    assert await again.acquire_lease("second", 60) == token + 1
    journal.fence(token)  # deposed: the machine was powered off all the same
    await journal.free("rack-a", "m-1")
    await journal.free("rack-a", "never-there")
    assert await again.allocations("rack-a") == {"m-2": replace(other, pool="big")}


async def test_phases_read_back_as_the_phase_enum_with_the_same_strings(
        opener: Opener) -> None:
    journal = await opener()
    await journal.begin(create_op("a"))
    await journal.advance("a", phase=Phase.CREATED, at=101)
    op = await (await opener()).get("a")
    assert op is not None and op.phase is Phase.CREATED and op.phase == "created"  # type: ignore[comparison-overlap]  # stored as the plain string
    assert [p.value for p in Phase] == [
        "requested", "created", "abandoning", "registered", "failed", "deactivating",
        "moving", "removing", "retiring", "cancelling", "retired", "cancelled",
        "parking", "parked", "resuming"]  # (a warm pool's, appended)


async def test_a_released_lease_is_taken_at_once(opener: Opener) -> None:
    first = await opener()
    token = await first.acquire_lease("a", 60)
    assert token is not None
    await first.release_lease("a", token)
    second = await opener()
    taken = await second.acquire_lease("b", 60)
    assert taken is not None and taken > token


# -- migrations --------------------------------------------------------------------------
# Operations as version 1 wrote them (an old gearshift knew no later column): one open
# drain and one create finished long ago.
V1_OPERATIONS = (
    "INSERT INTO gearshift_operations (op_id, kind, pool, identity, phase, done, started_at, "
    "updated_at, provider, machine_id, deadline, reason) VALUES "
    "('kept', 'drain', 'small', 'n9', 'moving', {false}, 200, 201, 'rack-a', 'm-9', 800, "
    "'preempted by pool big'), "
    "('old', 'create', 'small', 'n1', 'registered', {true}, 10, 20, 'rack-a', 'm-1', NULL, '')")


async def newer_shapes_work(journal: Journal) -> None:
    """What versions 2 and up added, used on a journal that was migrated to them."""
    assert await journal.acquire_lease("me", 5) == 1  # version 2's table
    await journal.record_recovery(RecoveryRecord(at=1, holder="me", summary={}))  # v3
    assert await journal.prune(before=100) == Pruned(operations=1, recoveries=1)  # v4
    await journal.pause_pool("small", at=5)  # v5
    assert await journal.paused_pools() == {"small": 5}
    kept = await journal.get("kept")  # v6: an old drain has no cause; a new one does
    assert kept is not None and (kept.cause, kept.preempted_by) == (None, None)
    await journal.begin(drain_op("new", at=300, identity="n8", cause="preemption",
                                 preempted_by="big"))
    assert set(preemptions_in_flight(await journal.open_operations())) == {"n8"}
    await journal.see_first("rack-a", "m-7", at=6)  # v7
    assert await journal.first_seen() == {("rack-a", "m-7"): 6}
    await journal.allocate("rack-a", {"m-3": ALLOCATION})  # v8
    assert await journal.allocations("rack-a") == {"m-3": ALLOCATION}


async def test_an_old_sqlite_journal_migrates_forward_keeping_its_operations(tmp_path: Path
                                                                             ) -> None:
    path = tmp_path / "old.db"
    old = await SqliteJournal.open(path, migrate_upto=1)
    assert await old.schema_version() == 1
    await old.close()
    with sqlite3.connect(path) as conn:
        conn.execute(V1_OPERATIONS.format(false=0, true=1))
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "gearshift_lease" not in tables  # really the old shape
    journal = await SqliteJournal.open(path)
    try:
        assert await journal.schema_version() == migrations.LATEST
        assert [o.op_id for o in await journal.open_operations()] == ["kept"]
        await newer_shapes_work(journal)
    finally:
        await journal.close()
    with sqlite3.connect(path) as conn:
        versions = [r[0] for r in conn.execute(
            "SELECT version FROM gearshift_schema_version ORDER BY version")]
        plan = " ".join(str(r) for r in conn.execute(
            "EXPLAIN QUERY PLAN DELETE FROM gearshift_operations WHERE done = 1 "
            "AND updated_at < 5"))
    assert versions == [m.version for m in migrations.MIGRATIONS]
    assert "gearshift_operations_finished" in plan  # pruning does not scan every operation


async def test_a_newer_sqlite_schema_refuses_to_start(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    await (await SqliteJournal.open(path)).close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO gearshift_schema_version VALUES (99, 'from the future', 0)")
    with pytest.raises(JournalSchemaError, match=r"schema version 99, newer than this "
                                                 rf"gearshift understands \(up to "
                                                 rf"{migrations.LATEST}\)"):
        await SqliteJournal.open(path)


async def test_an_old_postgres_journal_migrates_forward_and_a_newer_one_refuses(
        postgres: PgServer) -> None:
    dsn = postgres.create_database(f"m_{uuid.uuid4().hex[:12]}")
    old = await PostgresJournal.open(dsn, migrate_upto=1)
    assert old.version == 1
    await old.close()
    database = dsn.rsplit("/", 1)[1]
    postgres.psql(V1_OPERATIONS.format(false="FALSE", true="TRUE"), database)
    assert "gearshift_lease" not in postgres.psql(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'", database)
    # Two instances starting together migrate once (the advisory lock serialises them).
    both = await asyncio.gather(PostgresJournal.open(dsn), PostgresJournal.open(dsn))
    try:
        assert [j.version for j in both] == [migrations.LATEST] * 2
        assert [o.op_id for o in await both[0].open_operations()] == ["kept"]
        await newer_shapes_work(both[0])
    finally:
        for journal in both:
            await journal.close()
    assert postgres.psql("SELECT string_agg(version::text, ',' ORDER BY version) "
                         "FROM gearshift_schema_version", database).strip() == ",".join(
        str(m.version) for m in migrations.MIGRATIONS)
    assert "gearshift_operations_finished" in postgres.psql(
        "SELECT indexname FROM pg_indexes WHERE tablename = 'gearshift_operations'", database)
    postgres.psql("INSERT INTO gearshift_schema_version VALUES (42, 'future', 0)", database)
    with pytest.raises(JournalSchemaError, match="schema version 42") as refused:
        await PostgresJournal.open(dsn)
    assert PASSWORD not in str(refused.value)


def test_gearshift_run_refuses_a_journal_from_a_newer_gearshift(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    with sqlite3.connect(path) as conn:
        conn.execute(migrations.VERSION_TABLE["sqlite"])
        conn.execute("INSERT INTO gearshift_schema_version VALUES (?, 'future', 0)",
                     (migrations.LATEST + 1,))
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "small.yaml").write_text(POOL)
    providers = tmp_path / "providers.yaml"
    providers.write_text(PROVIDERS.format(url="http://127.0.0.1:9"))
    config = tmp_path / "config.yaml"
    config.write_text(f"policies_dir: {policies}\nproviders_file: {providers}\n"
                      f"http: {{port: 0}}\njournal: {{kind: sqlite, path: {path}}}\n")
    result = subprocess.run([sys.executable, "-m", "gearshift", "run", "--config", str(config)],
                            capture_output=True, text=True, timeout=60, check=False, cwd=ROOT)
    assert result.returncode == 3, result.stderr
    assert (f"schema version {migrations.LATEST + 1}, newer than this gearshift understands"
            in result.stderr)
    assert "refusing to start" in result.stderr


async def test_an_unreachable_postgres_is_a_clear_error_without_the_password() -> None:
    dsn = f"postgresql://gs:{PASSWORD}@127.0.0.1:9/gearshift"
    with pytest.raises(JournalError) as failed:
        await PostgresJournal.open(dsn, connect_timeout=2)
    assert "postgresql://127.0.0.1:9/gearshift" in str(failed.value)
    assert PASSWORD not in str(failed.value)
    assert describe_dsn(dsn) == "postgresql://127.0.0.1:9/gearshift"


# -- driver failures surface as JournalError ---------------------------------------------
async def test_a_locked_sqlite_journal_is_a_journal_error_and_works_again_once_free(
        tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    journal = await SqliteJournal.open(path, busy_timeout=0.2)
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")  # another process writing, and taking its time
        with pytest.raises(JournalError, match=rf"SQLite journal {re.escape(str(path))}: begin failed: "
                                               r"OperationalError: database is locked"):
            await journal.begin(create_op("locked"))
        with pytest.raises(JournalError, match=r"acquire_lease failed: .*database is locked"):
            await journal.acquire_lease("me", 5)
        assert await journal.open_operations() == []  # WAL: reading still works
        blocker.execute("ROLLBACK")
        await journal.begin(create_op("free"))
        assert await journal.acquire_lease("me", 5) == 1
    finally:
        blocker.close()
        await journal.close()
    assert [o.op_id for o in await reopen_ops(path)] == ["free"]


async def reopen_ops(path: Path) -> list[Operation]:
    journal = await SqliteJournal.open(path)
    try:
        return await journal.open_operations()
    finally:
        await journal.close()


async def test_a_sqlite_journal_whose_directory_is_removed_refuses_writes(tmp_path: Path
                                                                          ) -> None:
    directory = tmp_path / "state"
    journal = await SqliteJournal.open(directory / "journal.db")
    try:
        await journal.begin(create_op("before"))
        shutil.rmtree(directory)
        # SQLite itself would go on writing into the unlinked file, and lose it at restart.
        with pytest.raises(JournalError, match="begin failed: the file was removed or "
                                               "replaced since it was opened"):
            await journal.begin(create_op("lost"))
        with pytest.raises(JournalError, match="advance failed: the file was removed"):
            await journal.advance("before", phase=Phase.CREATED, at=2)
        with pytest.raises(JournalError, match=r"acquire_lease failed: FileNotFoundError"):
            await journal.acquire_lease("me", 5)
    finally:
        await journal.close()
    with pytest.raises(JournalError, match="open_operations failed: the journal is closed"):
        await journal.open_operations()


async def test_a_sqlite_journal_replaced_under_a_running_daemon_refuses_writes(
        tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    journal = await SqliteJournal.open(path)
    try:
        await journal.begin(create_op("before"))
        (tmp_path / "restored.db").write_bytes(path.read_bytes())
        (tmp_path / "restored.db").replace(path)  # a backup restored with mv
        with pytest.raises(JournalError, match="removed or replaced"):
            await journal.release("n1")
    finally:
        await journal.close()


async def test_a_sqlite_file_that_is_not_a_journal_is_a_journal_error(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    path.write_bytes(b"this is not an SQLite database " * 200)
    with pytest.raises(JournalError, match=rf"SQLite journal {re.escape(str(path))}: open failed: "
                                           r"DatabaseError: file is not a database"):
        await SqliteJournal.open(path)


async def test_a_postgres_backend_terminated_mid_write_is_a_journal_error(
        postgres: PgServer) -> None:
    database = f"t_{uuid.uuid4().hex[:12]}"
    dsn = postgres.create_database(database)
    journal = await PostgresJournal.open(dsn)
    blocker = await asyncpg.connect(dsn)
    try:
        # Hold the table so the journal's INSERT waits on a backend we can find and kill.
        holding = blocker.transaction()
        await holding.start()
        await blocker.execute("LOCK TABLE gearshift_operations IN ACCESS EXCLUSIVE MODE")
        write = asyncio.create_task(journal.begin(create_op("doomed")))
        for _ in range(100):
            waiting = await blocker.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> "
                "pg_backend_pid() AND wait_event_type = 'Lock'", database)
            if waiting:
                break
            await asyncio.sleep(0.05)
        assert len(waiting) == 1
        assert await blocker.fetchval("SELECT pg_terminate_backend($1)", waiting[0]["pid"])
        with pytest.raises(JournalError) as failed:
            await write
        message = str(failed.value)
        assert message.startswith(f"PostgreSQL journal at postgresql://127.0.0.1:"
                                  f"{postgres.port}/{database}: begin failed: "), message
        # The first failure, not the transaction's rollback on the dead connection after it.
        assert "terminating connection due to administrator command" in message, message
        assert PASSWORD not in message
        await holding.rollback()
        # The pool replaces the dead connection: the journal goes on.
        await journal.begin(create_op("after"))
        assert [o.op_id for o in await journal.open_operations()] == ["after"]
    finally:
        await blocker.close()
        await journal.close()


async def test_a_leader_frozen_inside_a_write_does_not_block_the_takeover(
        postgres: PgServer) -> None:
    """A leader stopped (SIGSTOP, a frozen VM) between a write's fencing check and its
    commit holds the lease row FOR SHARE; the server ends its idle transaction, so a
    follower takes the expired lease instead of waiting for the frozen leader."""
    dsn = postgres.create_database(f"f_{uuid.uuid4().hex[:12]}")
    leader, follower = await PostgresJournal.open(dsn), await PostgresJournal.open(dsn)
    try:
        token = await leader.acquire_lease("leader", 0.5)
        assert token is not None
        leader.fence(token)
        conn = await leader.pool.acquire()
        frozen = conn.transaction()
        await frozen.start()
        await conn.execute("SELECT token FROM gearshift_lease WHERE name = 'leader' "
                           "FOR SHARE")  # a write's fencing check; then it freezes
        await asyncio.sleep(0.6)  # the lease expires meanwhile
        taken = await follower.acquire_lease("follower", 30)
        assert taken == token + 1
        with contextlib.suppress(asyncpg.InterfaceError):  # the pool may have dropped it
            conn.terminate()  # what is left of the frozen session
        with pytest.raises(Fenced):  # the late leader's next write
            await leader.begin(create_op("late"))
    finally:
        await leader.close()
        await follower.close()


async def test_a_closed_postgres_pool_is_a_journal_error(postgres: PgServer) -> None:
    dsn = postgres.create_database(f"c_{uuid.uuid4().hex[:12]}")
    journal = await PostgresJournal.open(dsn)
    await journal.pool.close()
    with pytest.raises(JournalError, match="open_operations failed: InterfaceError") as failed:
        await journal.open_operations()
    assert PASSWORD not in str(failed.value)
    with pytest.raises(JournalError, match="acquire_lease failed"):
        await journal.acquire_lease("me", 5)


async def test_a_wrong_postgres_password_is_a_journal_error_without_either_password(
        postgres: PgServer) -> None:
    wrong = "not-the-pg-s3cret"
    dsn = postgres.dsn().replace(PASSWORD, wrong)
    with pytest.raises(JournalError, match="InvalidPasswordError") as failed:
        await PostgresJournal.open(dsn, connect_timeout=5)
    assert wrong not in str(failed.value) and PASSWORD not in str(failed.value)


@pytest.mark.parametrize("dsn", [
    f"host=127.0.0.1 port=9 user=gs password={PASSWORD} dbname=gearshift",
    f"postgresql://gs:/{PASSWORD}@127.0.0.1:9/gearshift",  # an unescaped "/" in the password
])
async def test_a_malformed_dsn_is_refused_without_the_password(dsn: str) -> None:
    assert describe_dsn(dsn) == "PostgreSQL (unparseable DSN)"
    with pytest.raises((ConfigError, JournalError)) as failed:
        await PostgresJournal.open(dsn, connect_timeout=2)
    assert PASSWORD not in str(failed.value)
