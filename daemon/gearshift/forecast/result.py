"""What a forecast hands the planner: one pool's demand ahead, minute by minute."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Forecast:
    """Demand forecast for ``pool`` made at ``made_at`` (seconds, the planner's clock).

    ``upper[i]`` is the ``quantile`` forecast of the pool's demand (gears) for the minute
    that starts ``(i + 1) * 60`` seconds after ``made_at``; ``point[i]`` the central one.
    """

    pool: str
    made_at: float
    quantile: float
    upper: tuple[float, ...]
    point: tuple[float, ...]
    model: str = "seasonal"

    @property
    def horizon(self) -> float:
        """Seconds ahead covered."""
        return 60.0 * len(self.upper)

    def _index(self, at: float) -> int | None:
        i = math.ceil((at - self.made_at) / 60.0) - 1
        return min(max(i, 0), len(self.upper) - 1) if self.upper else None

    def upper_at(self, at: float) -> float | None:
        """The upper forecast for the instant ``at`` (clamped to what is covered)."""
        i = self._index(at)
        return None if i is None else self.upper[i]

    def point_at(self, at: float) -> float | None:
        """The central forecast for the instant ``at`` (clamped to what is covered)."""
        i = self._index(at)
        return None if i is None else self.point[i]

    def peak(self, start: float, end: float) -> float | None:
        """The highest upper forecast between ``start`` and ``end`` (seconds)."""
        lo, hi = self._index(start), self._index(end)
        if lo is None or hi is None:
            return None
        return max(self.upper[lo:hi + 1])
