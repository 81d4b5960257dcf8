"""Each figure of the README's simulate table is what the README's own simulate command
prints, with the seed it names, for the example named in the row.

The figures are read from the README itself, so when `python bench/simulate.py` is run
again and the table regenerated, this test checks the new figures. The simulator runs on
simulated time, so a seed gives the same run on any machine: the only noise is the table's
rounding, so each figure must match to half a unit of its last digit shown (another seed
moves the flash crowd's cost and unmet demand past that: the test fails). Wall and CPU
time are the machine-dependent columns and are not compared. The large rows (20 pools,
made by `bench/make_traces.py` inside `bench/simulate.py`) take minutes of CPU and are
not run here; `test_the_simulate_table_names_every_shipped_example` checks the table
still holds both shipped traces.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from readme import commands, number, table


def shown(cell: str) -> object:
    """``pytest.approx`` of a table cell: within half a unit of its last digit shown."""
    figure = re.sub(r"\s*[A-Za-z]+$", "", cell.strip())  # "15.2 s" -> "15.2", "80.9 MB" -> "80.9"
    decimals = len(figure.split(".")[1]) if "." in figure else 0
    return pytest.approx(number(cell), abs=0.5 * 10 ** -decimals + 1e-9)

SIMULATE = ["example", "simulated", "peak nodes", "CPU s min/median", "wall s min/median",
            "CPU ÷ plain pass", "reconciles", "unmet gear-s", "cost", "violations"]
EXAMPLES = ROOT / "policies" / "examples"
COMPARE = ["trace", "simulated", "unmet gear-hours, full", "unmet gear-hours, baseline",
           "cost, full", "cost, baseline"]


def readme_simulate() -> list[str]:
    """The simulate command shown in the README, as argv (with its own ``--seed``)."""
    shown = [c for c in commands() if c.text.startswith(".venv/bin/gearshift simulate ")]
    assert len(shown) == 1, shown
    return shlex.split(shown[0].text)


def test_the_readme_simulate_command_names_its_seed() -> None:
    argv = readme_simulate()
    assert "--seed" in argv, "without --seed the command runs seed 0, not the table's"
    assert int(argv[argv.index("--seed") + 1]) >= 0


def _rows() -> list[object]:
    params: list[object] = []
    for row in table(SIMULATE):
        if not (EXAMPLES / row["example"]).is_dir():
            continue  # the large case: bench/simulate.py makes it (minutes of CPU), see above
        slow = number(row["simulated"]) > 24  # the diurnal week takes ~15 s
        params.append(pytest.param(row, id=row["example"],
                                   marks=[pytest.mark.slow] if slow else []))
    return params


@pytest.mark.parametrize("row", _rows())
def test_each_simulate_table_row_is_what_the_readme_command_prints(
        row: dict[str, str], tmp_path: Path) -> None:
    argv = readme_simulate()
    example = row["example"]
    argv = [a.replace("examples/flash-crowd/", f"examples/{example}/") for a in argv]
    argv[argv.index("--report-json") + 1] = str(tmp_path / "report.json")
    if "--plot" in argv:  # the plot has its own tests; the figures are the report's
        at = argv.index("--plot")
        del argv[at:at + 2]
    assert argv[0] == ".venv/bin/gearshift"
    result = subprocess.run([sys.executable, "-m", "gearshift", *argv[1:]], cwd=ROOT,
                            capture_output=True, text=True, check=False, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "report.json").read_text())
    where = f"README simulate table, row {example}"
    assert round(report["simulated_seconds"] / 3600, 1) == shown(row["simulated"]), where
    assert report["reconciles"] == shown(row["reconciles"]), where
    assert report["unmet_gear_seconds"] == shown(row["unmet gear-s"]), where
    assert report["cost"] == shown(row["cost"]), where
    assert sum(report["violations"].values()) == shown(row["violations"]), where
    # the comparison table's "full" columns are the same runs (same seed, policies as shipped)
    full = {r["trace"]: r for r in table(COMPARE)}.get(example)
    if full is not None:
        where = f"README comparison table, row {example}"
        assert report["unmet_gear_seconds"] / 3600 == shown(full["unmet gear-hours, full"]), where
        assert report["cost"] == shown(full["cost, full"]), where


def test_the_simulate_table_names_every_shipped_example() -> None:
    rows = {row["example"] for row in table(SIMULATE)}
    assert {"flash-crowd", "diurnal-week"} <= rows
