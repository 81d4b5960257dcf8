"""`gearshift simulate` on the shipped traces: report figures, determinism, the CLI contract."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT
from gearshift.policy.loader import load_policy_set
from gearshift.sim.runner import SimOptions, Simulation
from gearshift.sim.trace import read_trace

EXAMPLES = ROOT / "policies" / "examples"
ZERO = {"above_max": 0, "below_min": 0, "retired_with_active_gears": 0, "duplicate_creates": 0,
        "leaked_nodes": 0}


def simulate(example: str, **options: Any) -> dict:
    policies = load_policy_set([EXAMPLES / example / "pools",
                                EXAMPLES / example / "providers.yaml"])
    trace = read_trace(EXAMPLES / example / "trace.csv")
    result = asyncio.run(Simulation(policies, trace, SimOptions(**options)).run())
    return result.report


@pytest.fixture(scope="module")
def flash() -> dict:
    return simulate("flash-crowd", seed=1)


def test_flash_crowd_has_no_violations(flash: dict) -> None:
    assert flash["violations"] == ZERO


def test_flash_crowd_reacts_within_one_reconcile_interval(flash: dict) -> None:
    reactions = flash["breach_reactions"]["small"]
    assert reactions["breaches"] >= 1
    assert reactions["max_seconds"] is not None and reactions["max_seconds"] <= 30


def test_flash_crowd_scales_up_then_back_down(flash: dict) -> None:
    assert flash["actions"]["scale_out"] >= 20  # 1800 gears need ~43 nodes; it starts with 11
    assert flash["actions"]["drain"] == flash["actions"]["retire"] >= 10
    # At the peak the pool holds 1800 gears under its scale-up edge (0.80 of 60 per node).
    assert math.ceil(1800 / 0.80 / 60) <= flash["max_nodes"]["small"] <= 60
    # The crowd outruns any boot time, so some demand goes unmet, but bounded: less than
    # the whole surge (1400 extra gears) for the ten minutes the slowest node takes.
    assert 0 < flash["unmet_gear_seconds"] < 1400 * 600
    assert flash["node_seconds"]["rack-a"] > 0 and flash["cost"] > 0


def test_same_seed_same_report() -> None:
    first = simulate("flash-crowd", seed=7)
    second = simulate("flash-crowd", seed=7)
    assert first == second


@pytest.mark.slow  # ~7.5 s; the other examples stay in the fast run
def test_two_days_of_the_diurnal_week() -> None:
    report = simulate("diurnal-week", seed=3, duration=2 * 86400)
    assert report["violations"] == ZERO
    assert report["max_nodes"]["small"] > 60  # the weekday peak and the 07:30 schedule floor
    assert report["actions"]["drain"] > 0 and report["actions"]["retire"] > 0
    # Peaks are followed: unmet demand is a tiny fraction of demanded gear-seconds.
    assert report["unmet_gear_seconds"] < 0.001 * 4000 * 2 * 86400


def test_cli_writes_the_report_and_the_plot(tmp_path: Path) -> None:
    report_file, plot = tmp_path / "report.json", tmp_path / "plot.png"
    result = subprocess.run(
        [sys.executable, "-m", "gearshift", "simulate",
         "--policies", str(EXAMPLES / "flash-crowd" / "pools"),
         "--providers", str(EXAMPLES / "flash-crowd" / "providers.yaml"),
         "--trace", str(EXAMPLES / "flash-crowd" / "trace.csv"), "--seed", "1",
         "--report-json", str(report_file), "--plot", str(plot)],
        capture_output=True, text=True, check=False, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    report = json.loads(report_file.read_text())
    for key in ("unmet_gear_seconds", "node_seconds", "cost", "actions", "max_nodes",
                "violations"):
        assert key in report
    assert set(report["violations"]) == set(ZERO)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_trace_errors_point_at_the_line(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("t,pool,active_gears\n0,small,10\n60,small,many\n")
    result = subprocess.run(
        [sys.executable, "-m", "gearshift", "simulate",
         "--policies", str(EXAMPLES / "flash-crowd" / "pools"),
         "--providers", str(EXAMPLES / "flash-crowd" / "providers.yaml"), "--trace", str(trace)],
        capture_output=True, text=True, check=False, cwd=ROOT)
    assert result.returncode == 1
    assert f"{trace}:3:" in result.stderr and "not an integer" in result.stderr


def test_simulate_leads_and_recovers_through_the_daemons_composition() -> None:
    """simulate is wired by gearshift.assembly, as run is: it holds the in-memory journal's
    lease (its writes are fenced with that token), recovers before its first reconcile, and
    sweeps again between reconciles."""
    example = EXAMPLES / "flash-crowd"
    policies = load_policy_set([example / "pools", example / "providers.yaml"])
    sim = Simulation(policies, read_trace(example / "trace.csv"), SimOptions(seed=1))

    async def run() -> tuple[bool, int | None, int, list[dict[str, int]]]:
        await sim.run()
        return (sim.parts.leadership.is_leader, sim.journal.token, sim.parts.recovery.runs,
                [r.summary for r in await sim.journal.recoveries()])

    leader, token, runs, records = asyncio.run(run())
    assert leader and token == sim.parts.leadership.token == 1
    assert runs > 1  # the start recovery, then sweeps every operations.orphan_sweep
    assert records and records[0]["open_operations"] == 0  # the start run: a clean journal
