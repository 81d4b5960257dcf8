"""gearshift's own seasonal model: medians across weeks (or days), a recent-level
correction, and an upper quantile of its own measured errors.

For a minute ``t`` ahead, the *baseline* is the median of the demand at the same minute
1..``weeks`` weeks earlier when at least two of those weeks were recorded, else the
median of the same minute on the ``days`` days before (daily seasonality only). The
*level* is the median, over the last ``level_window`` minutes, of how far actual demand
ran from its baseline: this week's growth, a busier Monday, a quiet holiday today. The
forecast is ``baseline(t) + level``; its upper quantile adds the ``quantile`` of the
model's own errors at this horizon, measured over the last ``error_days`` days.

Why it is robust to bad history (tested in tests/test_forecast.py):

- gaps are skipped, never read as zero demand;
- a one-off spike or a holiday is one of several weeks (or days) in a median, so it
  moves the baseline by nothing (three or more) or half (two); the level is a median too,
  so a spike in the last minutes is not carried forward;
- errors are winsorised (clipped at their ``1 - clip`` and ``clip`` quantiles) before the
  quantile is read, and are measured over days, so one bad hour cannot widen the band for
  weeks; past ``error_days`` it is forgotten entirely.
"""

from __future__ import annotations

from dataclasses import dataclass

from gearshift.forecast.result import Forecast
from gearshift.forecast.series import DAY, WEEK, DemandSeries


def median(values: list[float] | list[int]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    mid = n // 2
    return float(ordered[mid]) if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (linear between order statistics)."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass(frozen=True)
class SeasonalModel:
    weeks: int = 4  # weekly candidates looked back at
    days: int = 7  # daily candidates, when fewer than two weeks are known
    level_window: int = 30  # minutes the recent level is read over ...
    level_every: int = 3  # ... one reading every this many minutes
    error_days: float = 2.0  # how far back the model's own errors are measured ...
    error_every: int = 15  # ... one error every this many minutes
    clip: float = 0.99  # errors are winsorised at these quantiles

    def baseline(self, series: DemandSeries, minute: int) -> float | None:
        weekly = [v for k in range(1, self.weeks + 1)
                  if (v := series.at(minute - k * WEEK)) is not None]
        if len(weekly) >= 2:
            return median(weekly)
        daily = [v for d in range(1, self.days + 1)
                 if (v := series.at(minute - d * DAY)) is not None]
        if len(daily) >= 2:
            return median(daily)
        return None

    def _gap(self, series: DemandSeries, minute: int, memo: dict[int, float | None]
             ) -> float | None:
        """Actual minus baseline at ``minute`` (None when either is unknown), memoised:
        the level windows of neighbouring error samples overlap."""
        if minute not in memo:
            actual = series.at(minute)
            base = self.baseline(series, minute) if actual is not None else None
            memo[minute] = None if actual is None or base is None else actual - base
        return memo[minute]

    def level(self, series: DemandSeries, now: int,
              memo: dict[int, float | None] | None = None) -> float:
        """How far demand ran from its baseline lately (0 when nothing to compare)."""
        memo = {} if memo is None else memo
        gaps = [g for j in range(0, self.level_window, self.level_every)
                if (g := self._gap(series, now - j, memo)) is not None]
        return median(gaps) if gaps else 0.0

    def errors(self, series: DemandSeries, now: int, *, lead: int,
               memo: dict[int, float | None] | None = None) -> list[float]:
        """Actual minus forecast ``lead`` minutes ahead, over the last ``error_days``."""
        memo = {} if memo is None else memo
        out = []
        first = now - int(self.error_days * DAY)
        for minute in range(now, first, -self.error_every):
            gap = self._gap(series, minute, memo)
            if gap is not None:  # actual - (base + level) = gap - level
                out.append(gap - self.level(series, minute - lead, memo))
        return out

    def margin(self, series: DemandSeries, *, now: float, horizon_minutes: int,
               q: float) -> float:
        """The ``q`` quantile of the model's winsorised errors ``horizon_minutes`` ahead:
        what the upper forecast adds to the central one. The costly part (about a
        thousand baselines): the daemon measures it again every hour, not every minute."""
        errs = self.errors(series, int(now // 60) - 1, lead=horizon_minutes)
        if not errs:
            return 0.0
        lo, hi = quantile(errs, 1 - self.clip), quantile(errs, self.clip)
        return quantile([min(max(e, lo), hi) for e in errs], q)

    def forecast(self, series: DemandSeries, *, pool: str, now: float, horizon_minutes: int,
                 q: float, margin: float | None = None) -> Forecast | None:
        """The forecast for the ``horizon_minutes`` after ``now`` (seconds); None when
        the history holds too little to see a season. ``margin``: one measured earlier
        (``margin()``), else it is measured now."""
        minute = int(now // 60)
        last = minute - 1  # the last complete minute
        if self.baseline(series, minute + horizon_minutes) is None:
            return None
        level = self.level(series, last)
        if margin is None:
            margin = self.margin(series, now=now, horizon_minutes=horizon_minutes, q=q)
        point: list[float] = []
        upper: list[float] = []
        for h in range(1, horizon_minutes + 1):
            base = self.baseline(series, minute + h)
            if base is None:  # a gap a week ago: hold the last figure
                base = point[-1] - level if point else float(series.at(last) or 0)
            p = max(0.0, base + level)
            point.append(p)
            upper.append(max(p, p + margin))
        return Forecast(pool=pool, made_at=now, quantile=q, upper=tuple(upper),
                        point=tuple(point), model="seasonal")
