"""The bench scripts the README quotes still run, at a tiny scale, into a scratch file.

bench/ is not type-checked with the package, so a change to an interface it implements
can break a script without any check noticing: bench/ingest.py's stand-in provider
lacked the contract's stop/start for a whole stop, and its README command failed at the
first trial. Each script runs here end to end (a real mosquitto for the ingest one) with
the fewest nodes, runs and rounds, and must write its figures where ``--out`` says,
leaving bench/results/ untouched.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

CASES = {
    "plan": ["--nodes", "200", "--pools", "2", "--rounds", "1"],
    "ingest": ["--nodes", "50", "--pools", "2", "--runs", "1", "--trials", "2",
               "--rounds", "1"],
    "fleet_memory": ["--nodes", "200", "--pools", "2", "--runs", "1"],
    "simulate": ["--runs", "1", "--large-hours", "0"],
}


SLOW = {"ingest", "fleet_memory", "simulate"}  # mosquitto, child processes, a simulated week


@pytest.mark.parametrize("script", [pytest.param(s, marks=[pytest.mark.slow] if s in SLOW else [])
                                    for s in sorted(CASES)])
def test_each_bench_script_runs_and_writes_its_figures(script: str, tmp_path: Path) -> None:
    out = tmp_path / f"{script}.json"
    results = sorted((ROOT / "bench" / "results").iterdir())
    before = {p: p.read_bytes() for p in results}
    result = subprocess.run([sys.executable, str(ROOT / "bench" / f"{script}.py"),
                             *CASES[script], "--out", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures, script
    assert {p: p.read_bytes() for p in results} == before, "bench/results/ changed"
