"""Predictive scaling in ``gearshift simulate``: a warm-up history (a trace prefix) fills
the journal, forecasts follow from it, forecast_only changes no action, on orders ahead."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from gearshift.policy.loader import load_policy_set
from gearshift.policy.predictive import Predictive
from gearshift.policy.schema import PolicySet
from gearshift.sim.runner import DEFAULT_START, Sample, SimOptions, Simulation
from gearshift.sim.trace import Trace, TracePoint, demand_buckets, split_trace

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "policies" / "examples" / "diurnal-week"
DAY = 86400.0


def pts(*rows: tuple[float, str, int]) -> Trace:
    return Trace(points=tuple(TracePoint(t=t, pool=p, active_gears=g) for t, p, g in rows))


def test_a_split_keeps_each_pools_demand_at_the_cut() -> None:
    trace = pts((0, "a", 10), (0, "b", 5), (60, "a", 20), (120, "b", 7), (180, "a", 30))
    before, after = split_trace(trace, 120)
    assert before == pts((0, "a", 10), (0, "b", 5), (60, "a", 20))
    assert after == pts((0, "a", 20), (0, "b", 7), (60, "a", 30))


def test_a_trace_read_as_minute_buckets() -> None:
    trace = pts((0, "a", 10), (90, "a", 20))
    assert demand_buckets(trace, start=600.0, end=840.0) == [
        ("a", 10, 10), ("a", 11, 10), ("a", 12, 20), ("a", 13, 20)]


def with_mode(policies: PolicySet, mode: str) -> PolicySet:
    spec = Predictive.model_validate({"mode": mode, "max_extra_nodes": 20})
    return replace(policies, pools=tuple(p.model_copy(update={"predictive": spec})
                                         for p in policies.pools))


def ramp_trace() -> Trace:
    """Three days of the same morning: 1 800 gears, a ramp to 5 000 at 08:00-08:20."""
    rows = []
    for day in range(3):
        for minute in range(0, 1440, 10):
            hour = minute / 60
            level = 1800 + (3200 * min(1.0, max(0.0, (hour - 8) * 3)) if hour < 17 else 0)
            rows.append((day * DAY + minute * 60, "small", int(level)))
            rows.append((day * DAY + minute * 60, "medium", 500))
    return pts(*rows)


async def simulate(mode: str) -> tuple[dict[str, object], Simulation, list[Sample]]:
    policies = with_mode(load_policy_set([EXAMPLE / "pools", EXAMPLE / "providers.yaml"]), mode)
    # Two days of history, then the third day's 07:00 to 09:30.
    options = SimOptions(seed=1, warmup=2 * DAY + 7 * 3600, duration=2.5 * 3600)
    sim = Simulation(policies, ramp_trace(), options)
    result = await sim.run()
    return result.report, sim, result.timeline


@pytest.mark.slow
async def test_warm_up_history_feeds_forecasts_and_on_orders_ahead_of_the_ramp() -> None:
    off, off_sim, off_line = await simulate("off")
    only, only_sim, _ = await simulate("forecast_only")
    on, on_sim, on_line = await simulate("on")
    # The journal starts with the warm-up history, minute by minute.
    history = await on_sim.journal.demand_since(minute=0)
    first = int((DEFAULT_START) // 60)
    assert history[0].minute == first and {s.pool for s in history} == {"small", "medium"}
    assert on_sim.parts.forecaster.forecasts()  # it forecast from that history
    # The plot's band: every sample after the first fit carries (central, upper).
    assert all(s.forecast is None for s in off_line)
    banded = [s for s in on_line if s.forecast is not None]
    assert len(banded) >= len(on_line) - 4
    assert all(0 < s.forecast[0] <= s.forecast[1] for s in banded if s.forecast)
    # ... read one time-to-ready ahead, as the planner reads it (rack-a: 8m, measured).
    assert all(420 <= s.forecast_lead <= 540 for s in banded)
    # forecast_only: forecasts made, and not one action differs from off.
    assert only_sim.parts.forecaster.forecasts()
    assert {k: v for k, v in only.items() if k != "wall_seconds"} == {
        k: v for k, v in off.items() if k != "wall_seconds"}
    # ... action by action: the same scale-outs, drains and retires, at the same instants.
    def done(sim: Simulation) -> list[tuple[float, str, str, str, str]]:
        return [(e.at, e.kind, e.pool, e.target, e.outcome) for e in sim.executor.events]

    assert len(done(off_sim)) < off_sim.executor.events.maxlen  # type: ignore[operator]
    assert any(kind == "scale_out" for _, kind, *_ in done(off_sim))
    assert done(only_sim) == done(off_sim)
    # on: ordered ahead of the 08:00 ramp, so less demand went unmet.
    assert isinstance(on["unmet_gear_seconds"], float)
    assert isinstance(off["unmet_gear_seconds"], float)
    assert off["unmet_gear_seconds"] > 0
    assert on["unmet_gear_seconds"] < off["unmet_gear_seconds"] * 0.5
    assert isinstance(on["cost"], float) and isinstance(off["cost"], float)
    assert on["cost"] <= off["cost"] * 1.15


def test_gearshift_simulate_takes_a_warm_up(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    # A process of its own, as the other CLI tests: the CLI configures the process's logging.
    report = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "gearshift", "simulate", "--policies", str(EXAMPLE / "pools"),
         "--providers", str(EXAMPLE / "providers.yaml"),
         "--trace", str(EXAMPLE / "trace.csv"), "--warmup", "2d",
         "--duration", "10m", "--report-json", str(report)],
        capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(report.read_text())["simulated_seconds"] == 600
    with pytest.raises(ValueError, match="leaves nothing of the trace"):
        Simulation(load_policy_set([EXAMPLE / "pools", EXAMPLE / "providers.yaml"]),
                   pts((0, "small", 1), (60, "small", 2)), SimOptions(warmup=60))
