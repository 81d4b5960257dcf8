"""A pool's demand, one figure a minute, with gaps: what the model reads.

Minutes are counted since the epoch (``int(t // 60)``), the journal's buckets. A minute
nobody recorded (the daemon was down, a failover) is a gap, not a zero: the model skips
it instead of learning that demand vanished. Values are kept in a compact ``array`` (an
int per minute: five weeks of 100 pools is about 20 MB).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable

MISSING = -1
DAY = 1440  # minutes
WEEK = 7 * DAY


class DemandSeries:
    """Demand by minute from ``start`` on; ``MISSING`` where nothing was recorded."""

    def __init__(self, start: int, values: Iterable[int] = ()) -> None:
        self.start = start
        self.values = array("i", values)
        self._known = sum(1 for v in self.values if v != MISSING)

    @classmethod
    def from_buckets(cls, buckets: Iterable[tuple[int, int]]) -> DemandSeries:
        """From (minute, gears) pairs in any order; a minute seen twice keeps the larger."""
        by_minute: dict[int, int] = {}
        for minute, gears in buckets:
            by_minute[minute] = max(gears, by_minute.get(minute, gears))
        if not by_minute:
            return cls(0)
        series = cls(min(by_minute))
        for minute, gears in sorted(by_minute.items()):
            series.put(minute, gears)
        return series

    @property
    def end(self) -> int:
        """One past the last minute held."""
        return self.start + len(self.values)

    def __len__(self) -> int:
        return len(self.values)

    def known(self) -> int:
        """How many minutes hold a figure (gaps excluded); counted as they are put."""
        return self._known

    def at(self, minute: int) -> int | None:
        i = minute - self.start
        if 0 <= i < len(self.values):
            v = self.values[i]
            return None if v == MISSING else v
        return None

    def put(self, minute: int, gears: int) -> None:
        """Record ``gears`` for ``minute`` (the larger figure wins within a minute)."""
        if not self.values:
            self.start = minute
        if minute < self.start:
            self.values[0:0] = array("i", [MISSING] * (self.start - minute))
            self.start = minute
        i = minute - self.start
        if i >= len(self.values):
            self.values.extend([MISSING] * (i + 1 - len(self.values)))
        if self.values[i] == MISSING:
            self._known += 1
        self.values[i] = max(self.values[i], 0, gears)

    def drop_before(self, minute: int) -> None:
        """Forget everything older than ``minute`` (the history's retention)."""
        if minute <= self.start:
            return
        gone = self.values[:minute - self.start]
        self._known -= sum(1 for v in gone if v != MISSING)
        del self.values[:minute - self.start]
        self.start = minute
