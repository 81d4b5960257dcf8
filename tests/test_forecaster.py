"""The forecaster at the edge: each pool's demand sampled after reconciles, journaled a
minute at a time, read back by the next leader, and fitted in a thread."""

from __future__ import annotations

import threading
from pathlib import Path

from builders import nodes, policy_set, pool, snapshot
from gearshift.clock import ManualClock
from gearshift.decide import plan
from gearshift.forecast.seasonal import SeasonalModel
from gearshift.forecast.series import DAY, DemandSeries
from gearshift.model import CapacityRequest
from gearshift.plan import PoolEvaluation
from gearshift.predict.forecaster import KEEP_MINUTES, Forecaster, horizon_minutes
from gearshift.records import DemandSample
from gearshift.store.sqlite import SqliteJournal

START = 1_800_000_000.0 - 1_800_000_000.0 % 60  # a whole minute
POLICIES = policy_set(pool(predictive={"mode": "on", "min_history": "2d"}))


def test_the_plan_reads_demand_as_active_plus_requested_gears_of_the_pool() -> None:
    snap = snapshot(nodes(3, active=20), at=START,
                    requests=(CapacityRequest(request_id="r1", pool="small", gears=15,
                                              expires_at=START + 60),
                              CapacityRequest(request_id="r2", pool="small", gears=99,
                                              expires_at=START - 1)))
    assert plan(snap, POLICIES, now=START).pools["small"].demand_gears == 75


def evaluation(demand: int) -> dict[str, PoolEvaluation]:
    return {"small": PoolEvaluation(pool="small", active=2, booting=0, draining=0, unknown=0,
                                    active_gears=demand, capacity_gears=120,
                                    active_density=None, desired_nodes=2, degraded=False,
                                    summary="", demand_gears=demand)}


def test_the_horizon_covers_the_slowest_time_to_ready_plus_a_margin() -> None:
    assert horizon_minutes(POLICIES.pools[0], POLICIES) == 30  # 30m > 8m + 5m
    short = pool(predictive={"mode": "on", "horizon": "5m"})
    assert horizon_minutes(short, POLICIES) == 13  # rack-a boots in 8m


async def test_buckets_are_journaled_once_a_minute_with_the_largest_sample(
        tmp_path: Path) -> None:
    clock = ManualClock(START)
    journal = await SqliteJournal.open(tmp_path / "j.db")
    try:
        forecaster = Forecaster(journal, policies=lambda: POLICIES, clock=clock)
        for offset, active in ((0, 20), (20, 30), (40, 25), (60, 10)):
            clock.set(START + offset)
            await forecaster.tick()
            forecaster.observe(START + offset, evaluation(2 * active))
        # Minute 0 ended (its largest sample: 2 x 30) and was journaled; minute 1 is open.
        assert await journal.demand_since(minute=0) == [
            DemandSample("small", int(START // 60), 60)]
        clock.set(START + 120)
        await forecaster.tick()
        assert await journal.demand_since(minute=0) == [
            DemandSample("small", int(START // 60), 60),
            DemandSample("small", int(START // 60) + 1, 20)]
    finally:
        await journal.close()


async def test_a_new_leader_reads_the_history_back_and_forecasts_in_a_thread(
        tmp_path: Path) -> None:
    now = START + 3 * DAY * 60 + 8 * 3600
    first_minute = int(now // 60) - 3 * DAY
    journal = await SqliteJournal.open(tmp_path / "j.db")
    try:
        await journal.record_demand([
            DemandSample("small", m, 1000 + 10 * (m % DAY // 60))
            for m in range(first_minute, int(now // 60))])
        await journal.record_demand([DemandSample("gone", int(now // 60) - 10 * 7 * DAY, 5)])
        threads: list[int] = []

        class Watched(SeasonalModel):
            def margin(self, series: DemandSeries, *, now: float, horizon_minutes: int,
                       q: float) -> float:
                threads.append(threading.get_ident())
                return super().margin(series, now=now, horizon_minutes=horizon_minutes, q=q)

        clock = ManualClock(now)
        forecaster = Forecaster(journal, policies=lambda: POLICIES, clock=clock, model=Watched())
        await forecaster.load()
        assert set(forecaster.series) == {"small"}  # older than KEEP_MINUTES: not read
        await forecaster.tick()
        (made,) = forecaster.forecasts()
        assert made.pool == "small" and made.made_at == now and len(made.upper) == 30
        # 16:00 to 16:30: the daily shape says 1 160 gears (10 more each hour of the day).
        assert made.point[-1] == 1160 and made.point[0] == 1160
        assert made.upper[-1] >= made.point[-1]
        assert threads and threads[0] != threading.get_ident()  # fitted off the event loop
        assert KEEP_MINUTES > 4 * 7 * DAY
    finally:
        await journal.close()


async def test_no_forecast_before_min_history_nor_for_a_pool_with_predictive_off() -> None:
    from gearshift.store.journal import MemoryJournal

    journal = MemoryJournal()
    await journal.record_demand([DemandSample("small", int(START // 60) - m, 100)
                                 for m in range(1, DAY)])  # one day < min_history 2d
    clock = ManualClock(START)
    forecaster = Forecaster(journal, policies=lambda: POLICIES, clock=clock)
    await forecaster.load()
    await forecaster.tick()
    assert forecaster.forecasts() == ()
    off = policy_set(pool())
    forecaster = Forecaster(journal, policies=lambda: off, clock=clock)
    await forecaster.load()
    await forecaster.tick()
    assert forecaster.forecasts() == ()


async def test_a_failing_fit_leaves_the_pools_reactive_and_the_loop_running() -> None:
    from gearshift.store.journal import MemoryJournal

    class Broken(SeasonalModel):
        def margin(self, series: DemandSeries, *, now: float, horizon_minutes: int,
                   q: float) -> float:
            raise ZeroDivisionError("a bug")

    journal = MemoryJournal()
    await journal.record_demand([DemandSample("small", int(START // 60) - m, 100)
                                 for m in range(1, 3 * DAY)])
    forecaster = Forecaster(journal, policies=lambda: POLICIES, clock=ManualClock(START),
                            model=Broken())
    await forecaster.load()
    await forecaster.tick()  # does not raise
    assert forecaster.forecasts() == ()


async def test_a_deposed_leaders_forecaster_neither_raises_nor_forgets_its_buckets() -> None:
    from gearshift.store.journal import MemoryJournal

    journal = MemoryJournal()
    token = await journal.acquire_lease("first", 60)
    assert token is not None
    await journal.release_lease("first", token)
    assert await journal.acquire_lease("second", 60) == token + 1
    journal.fence(token)  # this instance still writes with the old token
    clock = ManualClock(START)
    forecaster = Forecaster(journal, policies=lambda: POLICIES, clock=clock)
    forecaster.observe(START, evaluation(40))
    clock.set(START + 60)
    await forecaster.tick()  # the write is refused (Fenced): logged, not raised
    journal.fence(None)
    assert await journal.demand_since(minute=0) == []
    clock.set(START + 120)
    await forecaster.tick()  # kept, and written once the journal takes it
    assert await journal.demand_since(minute=0) == [DemandSample("small", int(START // 60), 40)]
