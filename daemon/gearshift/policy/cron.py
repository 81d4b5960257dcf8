"""Five-field cron expressions and "is this schedule window open now?".

Schedules raise a pool's floor for ``duration`` after each cron fire time, in the
schedule's own time zone. Fire times are wall-clock times in that zone: a time that
does not exist (the spring-forward gap) fires at the instant the old offset would have
shown it (02:30 in Europe/Berlin's gap fires at 03:30 CEST: zoneinfo's ``fold=0``), and a
time that happens twice (the fall-back overlap) fires once, at its first occurrence.
Durations are real elapsed time, so a 10h window opened at 20:00 closes at 06:00 the
next day, or at 05:00/07:00 across a DST change.

Hand-written rather than croniter: we need only "the latest fire time not after now",
exactly specified across DST, and pure (no clock), which is ~80 lines with zoneinfo.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
           ("day of week", 0, 7))
_NAMES = {
    3: {n: i for i, n in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
        start=1)},
    4: {n: i for i, n in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])},
}


@dataclass(frozen=True)
class CronExpr:
    """A parsed cron expression: the allowed values of each field."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    day_restricted: bool
    weekday_restricted: bool

    def matches_day(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        weekday = (day.weekday() + 1) % 7  # Python: Monday=0; cron: Sunday=0
        dom_ok = day.day in self.days
        dow_ok = weekday in self.weekdays
        # Cron's rule: when both fields are restricted, either may match.
        if self.day_restricted and self.weekday_restricted:
            return dom_ok or dow_ok
        return dom_ok and dow_ok


def _parse_value(text: str, index: int) -> int:
    names = _NAMES.get(index, {})
    if text.lower() in names:
        return names[text.lower()]
    if not text.isdigit():
        raise ValueError(f"{_FIELDS[index][0]}: {text!r} is not a number")
    return int(text)


def _parse_field(text: str, index: int) -> frozenset[int]:
    name, low, high = _FIELDS[index]
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"{name}: bad step {step_text!r}")
            step = int(step_text)
        if body == "*":
            start, end = low, high
        elif "-" in body:
            if body.count("-") > 1:
                raise ValueError(f"{name}: {body!r} is not a range: a range is FIRST-LAST "
                                 f"(list several with commas: MON-FRI,SAT)")
            first, _, last = body.partition("-")
            start, end = _parse_value(first, index), _parse_value(last, index)
        else:
            start = _parse_value(body, index)
            end = high if step_text else start
        if not (low <= start <= high and low <= end <= high) or start > end:
            raise ValueError(f"{name}: {body!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    if index == 4 and 7 in values:
        values = (values - {7}) | {0}
    return frozenset(values)


def parse_cron(text: str) -> CronExpr:
    """Parse ``m h dom mon dow``; raises ValueError saying which field is wrong."""
    fields = text.split()
    if len(fields) != 5:
        raise ValueError(
            f"cron {text!r} must have 5 fields (minute hour day-of-month month day-of-week), "
            f"found {len(fields)}"
        )
    parsed = [_parse_field(f, i) for i, f in enumerate(fields)]
    return CronExpr(
        minutes=parsed[0], hours=parsed[1], days=parsed[2], months=parsed[3],
        weekdays=parsed[4], day_restricted=fields[2] != "*", weekday_restricted=fields[4] != "*",
    )


def parse_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r} (use an IANA name like Europe/Berlin)") from exc


def last_fire_at_or_before(expr: CronExpr, zone: ZoneInfo, now: float, *,
                           lookback: float) -> float | None:
    """The latest fire time in ``[now - lookback, now]`` (epoch seconds), or None."""
    earliest = now - lookback
    local_now = datetime.fromtimestamp(now, UTC).astimezone(zone)
    day = local_now.date() + timedelta(days=1)  # the DST jump can move a fire a day either way
    last_day = datetime.fromtimestamp(earliest, UTC).astimezone(zone).date() - timedelta(days=1)
    best: float | None = None
    while day >= last_day and best is None:
        if expr.matches_day(day):
            best = _latest_on_day(expr, zone, day, earliest=earliest, now=now)
        day -= timedelta(days=1)
    return best


def _latest_on_day(expr: CronExpr, zone: ZoneInfo, day: date, *, earliest: float,
                   now: float) -> float | None:
    """The latest fire time on one local day within [earliest, now]."""
    best: float | None = None
    for hour in sorted(expr.hours, reverse=True):
        for minute in sorted(expr.minutes, reverse=True):
            fired = _fire_time(zone, day, hour, minute)
            if best is not None and fired < best - 7200:
                return best  # wall times only run backwards from here (DST shifts are < 2h)
            if earliest <= fired <= now and (best is None or fired > best):
                best = fired
    return best


def first_fire_after(expr: CronExpr, zone: ZoneInfo, now: float, *,
                     within: float) -> float | None:
    """The earliest fire time in ``(now, now + within]`` (epoch seconds), or None: the
    same fire times ``last_fire_at_or_before`` finds, looked for forwards."""
    day = datetime.fromtimestamp(now, UTC).astimezone(zone).date() - timedelta(days=1)
    last_day = datetime.fromtimestamp(now + within, UTC).astimezone(zone).date() + timedelta(days=1)
    best: float | None = None
    while day <= last_day:
        if expr.matches_day(day):
            for hour in sorted(expr.hours):
                for minute in sorted(expr.minutes):
                    fired = _fire_time(zone, day, hour, minute)
                    if best is not None and fired > best + 7200:
                        return best  # wall times only run forwards from here (DST: < 2h)
                    if now < fired <= now + within and (best is None or fired < best):
                        best = fired
        day += timedelta(days=1)
    return best


def _fire_time(zone: ZoneInfo, day: date, hour: int, minute: int) -> float:
    """When wall time ``hour:minute`` on ``day`` happens in ``zone`` (epoch seconds; in the
    spring-forward gap, at the old offset; in the fall-back overlap, the first time): the
    one rule both searches use, so they find the same fire times."""
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone).timestamp()
