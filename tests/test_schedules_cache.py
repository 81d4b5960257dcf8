"""``decide.schedules`` keeps an answer while it holds: the same answers as asking again.

Random crons, zones with and without DST, durations, and instants that walk forward in
reconcile-sized steps (the cache's use) or jump anywhere (a clock set back, a test).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from gearshift.decide import schedules
from gearshift.policy.cron import (
    first_fire_after,
    last_fire_at_or_before,
    parse_cron,
    parse_timezone,
)
from gearshift.policy.schema import Schedule

CRONS = ["0 8 * * 1-5", "30 2 * * *", "*/15 * * * *", "0 0 1 * *", "45 23 * * 0",
         "0 9,17 * * *", "0 3 29 2 *", "5 1 * 3,10 0", "* * * * *"]
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
START = datetime(2026, 3, 1, tzinfo=UTC).timestamp()  # spans the spring DST changes


def _uncached(schedule: Schedule, now: float) -> bool:
    return last_fire_at_or_before(parse_cron(schedule.cron), parse_timezone(
        schedule.timezone), now, lookback=schedule.duration) is not None


@pytest.mark.parametrize("seed", range(4))
def test_cached_answers_match_asking_again(seed: int) -> None:
    rng = random.Random(seed)
    schedules._answers.clear()
    cases = [Schedule(cron=rng.choice(CRONS), timezone=rng.choice(ZONES), min=1,
                      duration=rng.choice([10.0, 60.0, 600.0, 3600.0, 5400.0, 36000.0]))
             for _ in range(6)]
    now = START
    for _ in range(3000):
        now += rng.choice([10.0, 30.0, 30.0, 59.5, 600.0, 0.25]) if rng.random() < 0.95 \
            else rng.uniform(-86400 * 3, 86400 * 40)
        schedule = rng.choice(cases)
        assert schedules.schedule_open(schedule, now) == _uncached(schedule, now), \
            (schedule, now)


def test_an_answer_is_kept_until_it_can_change() -> None:
    schedules._answers.clear()
    weekday_8 = Schedule(cron="0 8 * * 1-5", timezone="UTC", min=4, duration=3600.0)
    monday_8 = datetime(2026, 12, 7, 8, 0, tzinfo=UTC).timestamp()
    assert not schedules.schedule_open(weekday_8, monday_8 - 30)
    # Closed until the next fire, open until that fire is an hour old.
    assert schedules._answers[("0 8 * * 1-5", "UTC", 3600.0)][1] == monday_8
    assert schedules.schedule_open(weekday_8, monday_8)
    assert schedules.schedule_open(weekday_8, monday_8 + 3600)
    assert not schedules.schedule_open(weekday_8, monday_8 + 3600.5)


def test_first_fire_after_is_the_next_fire_across_dst() -> None:
    berlin = parse_timezone("Europe/Berlin")
    expr = parse_cron("30 2 * * *")  # 02:30 does not exist on 2026-03-29 in Berlin
    before = datetime(2026, 3, 28, 12, 0, tzinfo=UTC).timestamp()
    fired = first_fire_after(expr, berlin, before, within=86400 * 3)
    assert fired == datetime(2026, 3, 29, 1, 30, tzinfo=UTC).timestamp()  # 03:30 CEST
    assert last_fire_at_or_before(expr, berlin, fired, lookback=0) == fired
    assert first_fire_after(parse_cron("0 3 30 2 *"), berlin, before, within=86400) is None
