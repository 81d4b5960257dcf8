"""Which forecasting model predictive scaling uses, chosen by measurement.

    .venv/bin/python bench/forecast.py                      # gearshift's own model only
    PYTHONPATH=daemon /path/to/venv-with-libs/bin/python bench/forecast.py --libraries

Compares gearshift's seasonal model (``gearshift.forecast.seasonal``) with two well-kept
libraries, statsforecast (MSTL, daily season, AutoETS trend, its 80 % interval's upper
edge = the 0.9 quantile) and statsmodels (Holt-Winters, additive daily season, upper =
point + the 0.9 quantile of its in-sample residuals), on:

- accuracy: pinball loss at q = 0.9 of the upper forecast over leads 1..15 minutes
  (15 = the slowest placement's 8 min boot plus margin), relative to mean demand, and
  how often actual demand stayed under the upper forecast (coverage);
- CPU per forecast (process time, min and median over origins), and that times 100
  pools;
- on every shipped trace (policies/examples/**/trace.csv) long enough to hold two days
  (the others hold no season: every model falls back to the reactive path there), and a
  bench-made four weeks (seed 7) with a holiday and a one-off spike, where the weekly
  season and the robustness matter.

The libraries are not gearshift dependencies: ``--libraries`` runs them when the
interpreter has them (install weight measured separately, see README). Writes
bench/results/forecast.json.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from gearshift.forecast.seasonal import SeasonalModel, quantile
from gearshift.forecast.series import DAY, WEEK, DemandSeries
from gearshift.sim.trace import read_trace

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "policies" / "examples"
RESULTS = ROOT / "bench" / "results" / "forecast.json"
Q = 0.9
HORIZON = 15  # minutes
STEP = 10  # minutes per bucket the libraries fit on (the traces' own resolution)

# A model: (history up to ``now`` exclusive, now) -> upper forecast for minutes now+1..now+H
Model = Callable[[DemandSeries, int], list[float] | None]


def per_minute(points: list[tuple[float, int]], end: int) -> DemandSeries:
    """A trace's step function (demand from t on), one figure a minute."""
    values: list[int] = []
    i = 0
    current = points[0][1]
    for minute in range(end):
        while i < len(points) and points[i][0] <= minute * 60:
            current = points[i][1]
            i += 1
        values.append(current)
    return DemandSeries(0, values)


def shipped() -> dict[str, DemandSeries]:
    out: dict[str, DemandSeries] = {}
    for path in sorted(EXAMPLES.glob("**/trace.csv")):
        trace = read_trace(path)
        end = int(trace.duration // 60) + 1
        for pool in sorted(trace.pools):
            points = [(p.t, p.active_gears) for p in trace.points if p.pool == pool]
            out[f"{path.parent.relative_to(EXAMPLES)}:{pool}"] = per_minute(points, end)
    return out


def four_weeks(seed: int = 7) -> DemandSeries:
    """The diurnal shape for four weeks at 10-minute steps, +2 %/week growth, with a
    holiday (week 3's Monday at night level) and a one-off x3 spike (week 2, Wed 15:00)."""
    rng = random.Random(seed)
    values = []
    for minute in range(4 * WEEK):
        step = minute - minute % 10
        if step == minute:
            day, of_day = divmod(step, DAY)
            shape = 0.5 - 0.5 * math.cos(2 * math.pi * (of_day / 60 - 2) / 24)
            scale = 0.6 if day % 7 >= 5 else 1.0
            gears = (1800 + 3200 * shape * scale) * (1 + 0.02 * (day // 7))
            if 2 * WEEK <= step < 2 * WEEK + DAY:
                gears = 1800
            if WEEK + 2 * DAY + 15 * 60 <= step < WEEK + 2 * DAY + 16 * 60:
                gears *= 3
            current = int(gears * rng.uniform(0.97, 1.03))
        values.append(current)
    return DemandSeries(0, values)


def ours(model: SeasonalModel) -> Model:
    def run(series: DemandSeries, now: int) -> list[float] | None:
        made = model.forecast(series, pool="p", now=now * 60.0, horizon_minutes=HORIZON, q=Q)
        return list(made.upper) if made is not None else None
    return run


def _buckets(series: DemandSeries, now: int) -> list[float]:
    """The history before ``now`` in STEP-minute buckets (max), gaps carried forward."""
    out: list[float] = []
    last = 0.0
    for start in range(series.start, now - now % STEP, STEP):
        known = [v for m in range(start, start + STEP) if (v := series.at(m)) is not None]
        last = float(max(known)) if known else last
        out.append(last)
    return out


def _spread(upper_steps: list[float], now: int) -> list[float]:
    """Step forecasts (buckets after the last complete one) spread to minutes now+1..+H."""
    first = now - now % STEP  # the bucket now falls in is the first forecast step
    return [upper_steps[min((now + h - first) // STEP, len(upper_steps) - 1)]
            for h in range(1, HORIZON + 1)]


def statsforecast_mstl() -> Model:
    import numpy as np
    from statsforecast.models import MSTL, AutoETS

    def run(series: DemandSeries, now: int) -> list[float] | None:
        y = np.array(_buckets(series, now))
        if len(y) < 2 * DAY // STEP:
            return None
        steps = HORIZON // STEP + 2
        model = MSTL(season_length=[DAY // STEP], trend_forecaster=AutoETS(model="ZZN"))
        out = model.forecast(y=y, h=steps, level=[80])
        return _spread([float(v) for v in out["hi-80"]], now)
    return run


def statsmodels_holt_winters() -> Model:
    import numpy as np
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    def run(series: DemandSeries, now: int) -> list[float] | None:
        y = np.array(_buckets(series, now))
        if len(y) < 2 * DAY // STEP:
            return None
        fit = ExponentialSmoothing(y, seasonal="add", seasonal_periods=DAY // STEP,
                                   initialization_method="estimated").fit()
        margin = quantile([float(r) for r in y - fit.fittedvalues], Q)
        steps = HORIZON // STEP + 2
        return _spread([float(v) + margin for v in fit.forecast(steps)], now)
    return run


def pinball(actual: float, upper: float) -> float:
    diff = actual - upper
    return max(Q * diff, (Q - 1) * diff)


def evaluate(model: Model, series: DemandSeries, origins: list[int]) -> dict[str, object]:
    losses: list[float] = []
    cpu: list[float] = []
    covered = total = 0
    demand: list[float] = []
    skipped = 0
    for now in origins:
        history = DemandSeries(series.start, series.values[:now - series.start])
        started = time.process_time()
        upper = model(history, now)
        cpu.append(time.process_time() - started)
        if upper is None:
            skipped += 1
            continue
        for h, u in enumerate(upper, start=1):
            actual = series.at(now + h)
            if actual is None:
                continue
            losses.append(pinball(actual, u))
            demand.append(actual)
            covered += actual <= u
            total += 1
    if not losses:
        return {"skipped": skipped}
    mean_demand = statistics.fmean(demand)
    return {
        "pinball_rel_pct": round(100 * statistics.fmean(losses) / mean_demand, 3),
        "coverage": round(covered / total, 3),
        "cpu_ms_min": round(1000 * min(cpu), 3),
        "cpu_ms_median": round(1000 * statistics.median(cpu), 3),
        "cpu_s_per_100_pools": round(100 * statistics.median(cpu), 3),
        "forecasts": len(origins) - skipped,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--libraries", action="store_true", help="also run statsforecast and "
                        "statsmodels (needs them installed)")
    parser.add_argument("--every", type=int, default=120, help="minutes between origins")
    args = parser.parse_args()
    models: dict[str, Model] = {"gearshift-seasonal": ours(SeasonalModel())}
    if args.libraries:
        models["statsforecast-mstl-autoets"] = statsforecast_mstl()
        models["statsmodels-holt-winters"] = statsmodels_holt_winters()
    series = shipped()
    series["bench:four-weeks-holiday-spike(seed 7)"] = four_weeks()
    results: dict[str, dict[str, object]] = {}
    for name, s in series.items():
        first = 2 * DAY if len(s) < 3 * WEEK else 3 * WEEK  # the long one: its last week
        if len(s) < first + HORIZON + 1:
            results[name] = {"skipped": f"{len(s)} minutes: shorter than two days, no season"}
            print(f"{name:45s} skipped: {len(s)} minutes, no season")
            continue
        origins = list(range(first, s.end - HORIZON - 1, args.every))
        results[name] = {}
        for label, model in models.items():
            figures = evaluate(model, s, origins)
            results[name][label] = figures
            print(f"{name:45s} {label:28s} {figures}")
    RESULTS.write_text(json.dumps({
        "command": "bench/forecast.py" + (" --libraries" if args.libraries else ""),
        "quantile": Q, "horizon_minutes": HORIZON, "origin_every_minutes": args.every,
        "python": platform.python_version(), "results": results}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
