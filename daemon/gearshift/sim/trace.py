"""Demand traces: CSV ``t,pool,active_gears`` (seconds from start; demand from then on)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from gearshift.errors import ConfigError

HEADER = ["t", "pool", "active_gears"]


@dataclass(frozen=True)
class TracePoint:
    t: float
    pool: str
    active_gears: int


@dataclass(frozen=True)
class Trace:
    points: tuple[TracePoint, ...]  # sorted by t

    @property
    def duration(self) -> float:
        return self.points[-1].t if self.points else 0.0

    @property
    def pools(self) -> set[str]:
        return {p.pool for p in self.points}

    def initial(self, pool: str) -> int:
        return next((p.active_gears for p in self.points if p.pool == pool), 0)


def read_trace(path: Path) -> Trace:
    """Read and check a trace; problems come back as FILE:LINE:COL lines."""
    problems: list[str] = []
    points: list[TracePoint] = []
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}:1:1: cannot read trace: {exc}"]) from exc
    with handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != HEADER:
            raise ConfigError([f"{path}:1:1: header must be {','.join(HEADER)}"])
        for line, row in enumerate(reader, start=2):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != 3:
                problems.append(f"{path}:{line}:1: expected 3 columns, found {len(row)}")
                continue
            try:
                t = float(row[0])
            except ValueError:
                problems.append(f"{path}:{line}:1: t {row[0]!r} is not a number of seconds")
                continue
            try:
                gears = int(row[2])
            except ValueError:
                problems.append(f"{path}:{line}:{len(row[0]) + len(row[1]) + 3}: "
                                f"active_gears {row[2]!r} is not an integer")
                continue
            if t < 0 or gears < 0:
                problems.append(f"{path}:{line}:1: t and active_gears must not be negative")
                continue
            points.append(TracePoint(t=t, pool=row[1].strip(), active_gears=gears))
    if problems:
        raise ConfigError(problems)
    if not points:
        raise ConfigError([f"{path}:2:1: the trace has no rows"])
    return Trace(points=tuple(sorted(points, key=lambda p: p.t)))


def split_trace(trace: Trace, at: float) -> tuple[Trace, Trace]:
    """(the points before ``at``, the rest shifted to start at 0): a warm-up history and
    the trace still to simulate. The rest starts with each pool's demand at ``at``."""
    before = tuple(p for p in trace.points if p.t < at)
    holding = {p.pool: p for p in before}  # the last point of each pool before ``at``
    after = [TracePoint(t=p.t - at, pool=p.pool, active_gears=p.active_gears)
             for p in trace.points if p.t >= at]
    starts = {p.pool for p in after if p.t == 0}
    first = [TracePoint(t=0.0, pool=pool, active_gears=p.active_gears)
             for pool, p in sorted(holding.items()) if pool not in starts]
    return Trace(points=before), Trace(points=tuple(first + after))


def demand_buckets(trace: Trace, *, start: float, end: float) -> list[tuple[str, int, int]]:
    """(pool, minute since the epoch, gears) for each minute of ``trace`` placed at
    ``start`` (its t = 0), up to ``end`` (seconds since the epoch): a trace read as a
    step function, as the demand history the journal keeps."""
    out: list[tuple[str, int, int]] = []
    for pool in sorted(trace.pools):
        points = [p for p in trace.points if p.pool == pool]
        i, current = 0, points[0].active_gears
        for minute in range(int(start // 60), int(end // 60)):
            while i < len(points) and start + points[i].t <= minute * 60:
                current = points[i].active_gears
                i += 1
            out.append((pool, minute, current))
    return out
