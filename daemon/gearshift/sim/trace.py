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
