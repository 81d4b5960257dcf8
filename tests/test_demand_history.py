"""Each pool's demand history in the journal (memory, SQLite, a real PostgreSQL): kept by
minute with the larger figure winning, read back after a reopen, pruned by age, fenced,
and added to an older journal by migration 9."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gearshift.errors import Fenced
from gearshift.records import DemandSample
from gearshift.store import migrations
from gearshift.store.sqlite import SqliteJournal
from test_journal_stores import Opener, _openers


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def opener(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    async for open_one in _openers(request.param, request, tmp_path):
        yield open_one


@pytest.fixture(params=["sqlite", "postgres"])
async def durable_opener(request: pytest.FixtureRequest, tmp_path: Path
                         ) -> AsyncIterator[Opener]:
    async for open_one in _openers(request.param, request, tmp_path):
        yield open_one


def s(pool: str, minute: int, gears: int) -> DemandSample:
    return DemandSample(pool=pool, minute=minute, gears=gears)


async def test_buckets_keep_the_larger_figure_and_read_back_by_pool_then_minute(
        opener: Opener) -> None:
    journal = await opener()
    await journal.record_demand([s("small", 10, 100), s("medium", 10, 40), s("small", 11, 120)])
    await journal.record_demand([s("small", 10, 90), s("small", 11, 130)])  # 90 < 100: kept
    await journal.record_demand([])
    assert await journal.demand_since(minute=0) == [
        s("medium", 10, 40), s("small", 10, 100), s("small", 11, 130)]
    assert await journal.demand_since(minute=11) == [s("small", 11, 130)]
    assert await journal.prune_demand(before_minute=11) == 2
    assert await journal.demand_since(minute=0) == [s("small", 11, 130)]


async def test_a_prune_drops_exactly_what_is_older_whatever_order_it_came_in(
        opener: Opener) -> None:
    journal = await opener()
    await journal.record_demand([s("small", 20, 1)])
    await journal.record_demand([s("medium", 5, 2)])  # older than what came first
    assert await journal.prune_demand(before_minute=5) == 0
    assert await journal.prune_demand(before_minute=10) == 1
    assert await journal.prune_demand(before_minute=10) == 0
    await journal.record_demand([s("small", 3, 3)])  # older than anything left
    assert await journal.prune_demand(before_minute=4) == 1
    assert await journal.prune_demand(before_minute=21) == 1
    assert await journal.demand_since(minute=0) == []
    await journal.record_demand([s("small", 30, 4)])
    assert await journal.prune_demand(before_minute=31) == 1


async def test_the_history_survives_a_restart(durable_opener: Opener) -> None:
    first = await durable_opener()
    week = [s("small", m, 1000 + m % 1440) for m in range(0, 7 * 1440, 7)]
    await first.record_demand(week)
    await first.close()
    again = await durable_opener()  # a new process on the same store
    assert await again.demand_since(minute=0) == week


async def test_a_deposed_leader_records_no_demand(opener: Opener) -> None:
    first = await opener()
    token = await first.acquire_lease("first", 60)
    assert token is not None
    first.fence(token)
    await first.record_demand([s("small", 1, 5)])
    await first.release_lease("first", token)
    second = await opener()
    assert await second.acquire_lease("second", 60) == token + 1
    first.fence(token)
    with pytest.raises(Fenced):
        await first.record_demand([s("small", 1, 50)])
    with pytest.raises(Fenced):
        await first.prune_demand(before_minute=10)
    first.fence(None)
    assert await first.demand_since(minute=0) == [s("small", 1, 5)]


async def test_a_journal_from_before_the_history_gains_it_and_keeps_its_pauses(
        tmp_path: Path) -> None:
    path = tmp_path / "v8.db"
    old = await SqliteJournal.open(path, migrate_upto=8)
    await old.pause_pool("small", at=3)
    await old.close()
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "gearshift_demand" not in tables
    journal = await SqliteJournal.open(path)
    try:
        assert await journal.schema_version() == migrations.LATEST >= 9
        assert await journal.paused_pools() == {"small": 3}
        await journal.record_demand([s("small", 5, 7)])
        assert await journal.demand_since(minute=0) == [s("small", 5, 7)]
    finally:
        await journal.close()
