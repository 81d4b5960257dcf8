"""How fast `gearshift simulate` runs, against a plain pass over the same fleet.

    .venv/bin/python bench/simulate.py                      # 3 runs each, large case 24 h
    .venv/bin/python bench/simulate.py --runs 1 --large-hours 168 --out bench/results/simulate-week.json

Cases: the shipped flash crowd and diurnal week (~200 nodes at peak), and a large fleet
(20 pools, ~2 000 nodes at peak; made by bench/make_traces.py's ``write_large`` in a
temporary directory, seed-fixed, nothing committed) for ``--large-hours``. Each case runs
``--runs`` times (seed 1); the table shows min/median wall and CPU seconds and the ratio
of the median wall time to a baseline measured in the same run: one plain Python pass
over the case's peak number of nodes (summing a field of each) for every simulated step
of the tick grid. That ratio is the figure that travels between machines.

Prints a table and writes bench/results/simulate.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from make_traces import write_large

from gearshift.logs import configure
from gearshift.policy.loader import load_policy_set
from gearshift.sim.nodes import SimNode
from gearshift.sim.runner import SimOptions, Simulation
from gearshift.sim.trace import read_trace

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "policies" / "examples"


def once(directory: Path, *, seed: int, duration: float | None) -> tuple[float, float, dict[str, Any]]:
    """(wall s, CPU s, report) of one simulation of the example in ``directory``."""
    policies = load_policy_set([directory / "pools", directory / "providers.yaml"])
    trace = read_trace(directory / "trace.csv")
    wall, cpu = time.perf_counter(), time.process_time()
    result = asyncio.run(Simulation(policies, trace, SimOptions(seed=seed, duration=duration)).run())
    return time.perf_counter() - wall, time.process_time() - cpu, result.report


def plain_pass(nodes: int, steps: int) -> tuple[float, float]:
    """(wall s, CPU s) of one plain pass over ``nodes`` node records per step, ``steps``
    steps (the best of 3 timings of enough passes for a steady figure, then scaled)."""
    fleet = [SimNode(identity=f"n{i}", pool="p", profile="p", max_active_gears=60,
                     provider="x", machine_id=f"m{i}", key=f"k{i}", created_at=0.0,
                     ready_at=0.0, active=i % 60) for i in range(nodes)]
    passes = max(1, 2_000_000 // max(1, nodes))
    best, best_cpu = float("inf"), float("inf")
    for _ in range(3):
        started, cpu = time.perf_counter(), time.process_time()
        for _ in range(passes):
            total = 0
            for node in fleet:
                total += node.active
        best = min(best, time.perf_counter() - started)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best / passes * steps, best_cpu / passes * steps


def case(name: str, directory: Path, *, runs: int, duration: float | None) -> dict[str, Any]:
    walls, cpus, reports = [], [], []
    for _ in range(runs):
        wall, cpu, report = once(directory, seed=1, duration=duration)
        walls.append(wall)
        cpus.append(cpu)
        reports.append(report)
    report = reports[0]
    assert all(r == report for r in reports), "same seed, different reports"
    peak = sum(report["max_nodes"].values())
    steps = int(report["simulated_seconds"] // SimOptions().tick) + 1
    baseline, baseline_cpu = plain_pass(peak, steps)
    return {
        "example": name,
        "simulated_hours": round(report["simulated_seconds"] / 3600, 1),
        "runs": runs,
        "wall_seconds": {"min": round(min(walls), 2), "median": round(statistics.median(walls), 2)},
        "cpu_seconds": {"min": round(min(cpus), 2), "median": round(statistics.median(cpus), 2)},
        "baseline": f"one plain pass over {peak} nodes per step, {steps} steps",
        "baseline_seconds": {"wall": round(baseline, 3), "cpu": round(baseline_cpu, 3)},
        # median over baseline, wall and CPU (on a busy machine CPU time is the steadier)
        "ratio_to_baseline": round(statistics.median(walls) / baseline, 1),
        "cpu_ratio_to_baseline": round(statistics.median(cpus) / baseline_cpu, 1),
        "speedup": round(report["simulated_seconds"] / statistics.median(walls)),
        "reconciles": report["reconciles"],
        "peak_nodes": peak,
        "unmet_gear_seconds": report["unmet_gear_seconds"],
        "cost": report["cost"],
        "violations": sum(report["violations"].values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--large-hours", type=float, default=24.0,
                        help="simulated hours of the large case (168: the whole week; 0: skip)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "simulate.json",
                        help="where the figures go (the README's week row: "
                             "bench/results/simulate-week.json)")
    args = parser.parse_args()
    configure(level="warning")
    rows = [case("flash-crowd", EXAMPLES / "flash-crowd", runs=args.runs, duration=None),
            case("diurnal-week", EXAMPLES / "diurnal-week", runs=args.runs, duration=None)]
    if args.large_hours > 0:
        with tempfile.TemporaryDirectory() as tmp:
            write_large(Path(tmp))
            rows.append(case("large (20 pools)", Path(tmp), runs=args.runs,
                             duration=args.large_hours * 3600))
    print(f"{'example':<17} {'sim h':>6} {'peak':>5} {'wall s min/med':>15} "
          f"{'cpu s min/med':>14} {'x base':>6} {'x base cpu':>10} {'reconciles':>10} {'unmet gear-s':>13} "
          f"{'cost':>8} {'viol.':>5}")
    for r in rows:
        wall, cpu = r["wall_seconds"], r["cpu_seconds"]
        print(f"{r['example']:<17} {r['simulated_hours']:>6} {r['peak_nodes']:>5} "
              f"{wall['min']:>7}/{wall['median']:<7} {cpu['min']:>6}/{cpu['median']:<7} "
              f"{r['ratio_to_baseline']:>6} {r['cpu_ratio_to_baseline']:>10} {r['reconciles']:>10} "
              f"{r['unmet_gear_seconds']:>13} {r['cost']:>8} {r['violations']:>5}")
    out = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                               "python": platform.python_version(),
                               "command": "python bench/simulate.py --runs "
                                          f"{args.runs} --large-hours {args.large_hours:g}"
                                          + (f" --out {os.path.relpath(out, ROOT)}"
                                             if out.name != "simulate.json" else ""),
                               "runs": rows}, indent=2) + "\n")
    print(f"written to {os.path.relpath(out, ROOT)}")


if __name__ == "__main__":
    main()
