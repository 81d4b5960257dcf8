"""The simulator's reports are pinned: every shipped example and scenario, seed 1.

``tests/golden/simulate.json`` holds, for each trace under ``policies/examples/``, the
full report ``gearshift simulate`` gives with ``SimOptions(seed=1)`` and digests of the
executor's events (what was done, when, why) and of the plotted timeline. Making the
simulator faster must not change what the daemon decides: these must stay equal.

When a change *means* to alter decisions (a planner rule, a new report figure), regenerate
the file and review its diff like code:

    GEARSHIFT_REGOLD=1 .venv/bin/pytest tests/test_simulate_golden.py -q

(it rewrites the whole file from the current code; run it with ``-m ""`` so the slow
cases are included).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT
from gearshift.policy.loader import load_policy_set
from gearshift.sim.runner import SimOptions, Simulation
from gearshift.sim.trace import read_trace

EXAMPLES = ROOT / "policies" / "examples"
GOLDEN = Path(__file__).resolve().parent / "golden" / "simulate.json"
SLOW = {"diurnal-week", "scenarios/urgent-week", "scenarios/monday-ramp",  # weeks of history
        "scenarios/monday-onprem"}
# A scenario simulated after a warm-up: its history (predictive scaling forecasts from it),
# as bench/compare.py runs it.
OPTIONS: dict[str, SimOptions] = {
    "scenarios/monday-ramp": SimOptions(seed=1, warmup=14 * 86400.0, duration=86400.0),
    "scenarios/monday-onprem": SimOptions(seed=1, warmup=14 * 86400.0, duration=86400.0)}
CASES = sorted(str(p.parent.relative_to(EXAMPLES)) for p in EXAMPLES.rglob("trace.csv"))


def _digest(rows: list[Any]) -> str:
    text = json.dumps(rows, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def outcome(case: str) -> dict[str, Any]:
    """The report of one example with seed 1, plus digests of its events and timeline."""
    directory = EXAMPLES / case
    policies = load_policy_set([directory / "pools", directory / "providers.yaml"])
    sim = Simulation(policies, read_trace(directory / "trace.csv"),
                     OPTIONS.get(case, SimOptions(seed=1)))
    result = asyncio.run(sim.run())
    events = [[e.at, e.kind, e.pool, e.target, e.outcome, e.reason, e.error]
              for e in sim.executor.events]
    timeline = [[s.t, s.pool, s.demand, s.capacity, s.nodes] for s in result.timeline]
    return {"report": result.report, "plans": result.plans,
            "events": {"count": len(events), "sha256": _digest(events)},
            "timeline": {"count": len(timeline), "sha256": _digest(timeline)}}


def _golden() -> dict[str, Any]:
    if not GOLDEN.exists():
        return {}
    loaded: dict[str, Any] = json.loads(GOLDEN.read_text())
    return loaded


def _params() -> list[Any]:
    return [pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c for c in CASES]


def test_every_shipped_trace_is_pinned() -> None:
    assert CASES, "no traces found under policies/examples"
    if os.environ.get("GEARSHIFT_REGOLD"):
        return
    assert sorted(_golden()) == CASES


@pytest.mark.parametrize("case", _params())
def test_report_is_unchanged(case: str) -> None:
    got = outcome(case)
    if os.environ.get("GEARSHIFT_REGOLD"):
        golden = _golden()
        golden[case] = json.loads(json.dumps(got))
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps(dict(sorted(golden.items())), indent=2, sort_keys=True)
                          + "\n")
        return
    expected = _golden().get(case)
    assert expected is not None, f"{case} is not pinned: regenerate (see the module docstring)"
    # Through JSON, as stored: tuples become lists, keys strings.
    assert json.loads(json.dumps(got)) == expected
