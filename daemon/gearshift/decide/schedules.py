"""Which schedules are open at ``now``, and the floor they put under a pool."""

from __future__ import annotations

from functools import lru_cache

from gearshift.policy.cron import CronExpr, last_fire_at_or_before, parse_cron, parse_timezone
from gearshift.policy.schema import PoolPolicy, Schedule


@lru_cache(maxsize=256)
def _parsed(expr: str) -> CronExpr:
    return parse_cron(expr)


def schedule_open(schedule: Schedule, now: float) -> bool:
    """True when a fire time of ``schedule`` lies within ``duration`` before ``now``."""
    fired = last_fire_at_or_before(_parsed(schedule.cron), parse_timezone(schedule.timezone),
                                   now, lookback=schedule.duration)
    return fired is not None


def scheduled_floor(policy: PoolPolicy, now: float) -> tuple[int, str | None]:
    """The pool's effective minimum at ``now`` and, when a schedule raised it, which one."""
    floor, why = policy.size.min, None
    for schedule in policy.schedules:
        if schedule.min > floor and schedule_open(schedule, now):
            floor = schedule.min
            why = f"schedule {schedule.cron!r} ({schedule.timezone}) sets min {schedule.min}"
    return min(floor, policy.size.max), why
