"""How fast `gearshift simulate` runs the shipped traces, and what it reports.

    .venv/bin/python bench/simulate.py

Prints a table and writes bench/results/simulate.json. The diurnal week is a fleet of
about 200 nodes at its weekday peak; the target is well under a minute on one core.
"""

from __future__ import annotations

import asyncio
import json
import platform
import time
from pathlib import Path

from gearshift.logs import configure
from gearshift.policy.loader import load_policy_set
from gearshift.sim.runner import SimOptions, Simulation
from gearshift.sim.trace import read_trace

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "policies" / "examples"


def run(example: str, seed: int) -> dict[str, object]:
    policies = load_policy_set([EXAMPLES / example / "pools", EXAMPLES / example / "providers.yaml"])
    trace = read_trace(EXAMPLES / example / "trace.csv")
    started = time.perf_counter()
    result = asyncio.run(Simulation(policies, trace, SimOptions(seed=seed)).run())
    wall = time.perf_counter() - started
    report = result.report
    return {
        "example": example,
        "simulated_hours": round(report["simulated_seconds"] / 3600, 1),
        "wall_seconds": round(wall, 2),
        "speedup": round(report["simulated_seconds"] / wall),
        "reconciles": report["reconciles"],
        "max_nodes": report["max_nodes"],
        "unmet_gear_seconds": report["unmet_gear_seconds"],
        "cost": report["cost"],
        "violations": sum(report["violations"].values()),
    }


def main() -> None:
    configure(level="warning")
    rows = [run("flash-crowd", 1), run("diurnal-week", 1)]
    print(f"{'example':<14} {'sim h':>6} {'wall s':>7} {'x real':>8} {'reconciles':>10} "
          f"{'unmet gear-s':>13} {'cost':>8} {'violations':>10}")
    for r in rows:
        print(f"{r['example']:<14} {r['simulated_hours']:>6} {r['wall_seconds']:>7} "
              f"{r['speedup']:>8} {r['reconciles']:>10} {r['unmet_gear_seconds']:>13} "
              f"{r['cost']:>8} {r['violations']:>10}")
    out = ROOT / "bench" / "results" / "simulate.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                               "python": platform.python_version(), "runs": rows}, indent=2)
                   + "\n")
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
