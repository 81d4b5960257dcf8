"""The README's comparison tables reproduce: every baseline figure, every bound and floor,
the full policy's min / median / max over seeds 1, 2 and 3, and each feature switched off
on its own.

tests/test_readme_figures.py checks the "full" columns against the README's own simulate
command (seed 1); this checks the rest of `python bench/compare.py`'s two tables, by the
very functions that script uses (the baseline cut-down, the yardsticks of bench/bounds.py,
the simulator options per scenario). The simulator runs on simulated time, so each figure
must match to half a unit of its last digit shown; when `bench/compare.py` is run again
after a change of decisions and the tables are regenerated, this checks the new figures.
Every row is marked slow (together the rows simulate for minutes: CI runs them, the daily
subset does not); tests/test_readme_figures.py keeps the short traces' full runs daily.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT
from readme import table
from test_readme_figures import COMPARE, shown

sys.path.insert(0, str(ROOT / "bench"))
import compare  # type: ignore[import-not-found]  # bench/compare.py

from gearshift.policy.loader import load_policy_set

BOUNDS = ["trace", "bound", "cost, full", "cost ÷ bound", "floor (gear-hours)",
          "unmet gear-hours, full", "unmet ÷ floor"]


def directory(trace: str) -> Path:
    return ROOT / "policies" / "examples" / trace


def params(rows: list[dict[str, str]]) -> list[Any]:
    """Every row a test of its own, all slow: together they simulate for over a minute."""
    return [pytest.param(row, id=row["trace"], marks=[pytest.mark.slow]) for row in rows]


RELAXED = ["trace", "cost ÷ bound", "cost ÷ bound, rails relaxed", "unmet ÷ floor",
           "unmet ÷ floor, rails relaxed"]


ABLATIONS = {"no hook": ("full", False), "no urgency": ("urgency", True),
             "no burst-and-return": ("burst_return", True),
             "no consolidation": ("consolidation", True)}
FEATURES = ["trace", "full", *ABLATIONS]


def triple(cell: str) -> list[Any]:
    """``"5.50 / 5.51 / 5.57"`` -> three ``approx`` figures (min, median, max)."""
    parts = [part.strip() for part in cell.split("/")]
    assert len(parts) == 3, cell
    return [shown(part) for part in parts]


@pytest.mark.parametrize("row", params(table(COMPARE)))
def test_each_baseline_figure_is_what_bench_compare_simulates(row: dict[str, str]) -> None:
    where = f"README comparison table, row {row['trace']}"
    policies = load_policy_set([directory(row["trace"]) / "pools",
                                directory(row["trace"]) / "providers.yaml"])
    run = compare.simulate(directory(row["trace"]), compare.baseline(policies), 1,
                           broker_hook=False)
    assert run["violations"] == 0, where
    assert run["unmet_gear_seconds"] / 3600 == shown(row["unmet gear-hours, baseline"]), where
    assert run["cost"] == shown(row["cost, baseline"]), where


@pytest.mark.parametrize("row", params(table(BOUNDS)))
def test_each_bounds_row_is_what_bench_compare_measures(row: dict[str, str]) -> None:
    where = f"README bounds table, row {row['trace']}"
    trace_dir = directory(row["trace"])
    policies = load_policy_set([trace_dir / "pools", trace_dir / "providers.yaml"])
    runs = [compare.simulate(trace_dir, policies, seed) for seed in compare.SEEDS]
    measured = compare.against_bounds(trace_dir, policies, runs)
    assert measured["bound"]["cost"] == shown(row["bound"]), where
    assert measured["floor"]["unmet_gear_seconds"] / 3600 == shown(
        row["floor (gear-hours)"]), where
    for column, figures, scale in (
            ("cost, full", measured["cost"], 1.0),
            ("unmet gear-hours, full", measured["unmet_gear_seconds"], 3600.0),
            ("cost ÷ bound", measured["cost_over_bound"], 1.0),
            ("unmet ÷ floor", measured["unmet_over_floor"], 1.0)):
        if figures is None:  # a ratio over a floor of 0 is left out
            assert row[column] == "\N{EN DASH}", (where, column)
            continue
        expected = triple(row[column])
        got = [figures[k] / scale for k in ("min", "median", "max")]
        assert got == expected, (where, column)


@pytest.mark.parametrize("row", params(table(FEATURES)))
def test_each_feature_off_row_is_what_bench_compare_simulates(row: dict[str, str]) -> None:
    trace_dir = directory(row["trace"])
    policies = load_policy_set([trace_dir / "pools", trace_dir / "providers.yaml"])
    for column, (feature, hook) in {"full": ("full", True), **ABLATIONS}.items():
        where = f"README feature table, row {row['trace']}, column {column}"
        variant = policies if feature == "full" else compare.without(policies, feature)
        run = compare.simulate(trace_dir, variant, 1, broker_hook=hook)
        unmet, cost = (part.strip() for part in row[column].split("/"))
        assert run["violations"] == 0, where
        assert run["unmet_gear_seconds"] / 3600 == shown(unmet), where
        assert run["cost"] == shown(cost), where


@pytest.mark.parametrize("row", params(table(RELAXED)))
def test_each_rails_relaxed_row_is_what_bench_compare_measures(row: dict[str, str]) -> None:
    trace_dir = directory(row["trace"])
    policies = load_policy_set([trace_dir / "pools", trace_dir / "providers.yaml"])
    full = compare.simulate(trace_dir, policies, 1)
    loose = compare.simulate(trace_dir, compare.relaxed(policies), 1)
    assert full["violations"] == loose["violations"] == 0
    ratios = compare.against_bounds(trace_dir, policies, [full], relaxed_run=loose)
    for (shipped, relaxed), ratio in (
            (("cost ÷ bound", "cost ÷ bound, rails relaxed"),
             ratios["rails_relaxed"]["cost_over_bound"]),
            (("unmet ÷ floor", "unmet ÷ floor, rails relaxed"),
             ratios["rails_relaxed"]["unmet_over_floor"])):
        for column, got in zip((shipped, relaxed), ratio, strict=True):
            where = (f"README rails-relaxed table, row {row['trace']}", column)
            if got is None:  # a ratio over a floor of 0 is left out
                assert row[column] == "\N{EN DASH}", where
            else:
                assert got == shown(row[column]), where


def test_the_tables_name_every_shipped_trace() -> None:
    shipped = {"flash-crowd", "diurnal-week"} | {
        f"scenarios/{p.name}" for p in (compare.EXAMPLES / "scenarios").iterdir() if p.is_dir()}
    assert {row["trace"] for row in table(COMPARE)} == shipped
    assert {row["trace"] for row in table(BOUNDS)} == shipped
    assert {row["trace"] for row in table(FEATURES)} == shipped - {"diurnal-week"}
    assert {row["trace"] for row in table(RELAXED)} == shipped - {"diurnal-week"}
