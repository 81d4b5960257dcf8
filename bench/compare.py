"""Full policy vs. a naive baseline, on the shipped traces: unmet demand and cost.

    .venv/bin/python bench/compare.py

For every example (policies/examples/*) and scenario (policies/examples/scenarios/*)
it simulates the trace twice with the same seed:

* **full**: the policies as shipped (placement scoring and urgency, spillover,
  headroom, schedules, burst-and-return, preemption where a pool allows it);
* **baseline**: the same pools cut down to what a plain threshold autoscaler does: the
  first preferred placement only (one provider), the density band only (no headroom, no
  schedules, no extra signals), no urgency, no burst-and-return, nothing preemptible.

and, to show what each feature is worth on its own (all but the week-long trace),
**no urgency** and **no burst-and-return**: the full policy with just that one switched off.

Prints a table and writes bench/results/compare.json.
"""

from __future__ import annotations

import asyncio
import json
import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from gearshift.logs import configure
from gearshift.policy.loader import load_policy_set
from gearshift.policy.schema import PolicySet, PoolPolicy
from gearshift.sim.runner import SimOptions, Simulation
from gearshift.sim.trace import read_trace

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "policies" / "examples"
# The drain scenarios need slow, failing gear moves to mean anything.
OPTIONS: dict[str, dict[str, float]] = {
    "slow-drain": {"move_time": 120, "move_failure_rate": 0.3, "duration": 7200},
    "drain-cancelled": {"move_time": 120, "move_failure_rate": 0.1, "duration": 3600},
}


def baseline_pool(policy: PoolPolicy) -> PoolPolicy:
    first = next((p for p in policy.placement if not p.burst_only), policy.placement[0])
    return policy.model_copy(update={
        "placement": [first.model_copy(update={"max_nodes": None, "burst_only": False})],
        "headroom_gears": 0,
        "schedules": [],
        "signals": [],
        "preemptible": False,
        "urgency": policy.urgency.model_copy(update={"enabled": False}),
        "burst_return": policy.burst_return.model_copy(update={"enabled": False}),
    })


def baseline(policies: PolicySet) -> PolicySet:
    return replace(policies, pools=tuple(baseline_pool(p) for p in policies.pools))


def simulate(directory: Path, policies: PolicySet, seed: int) -> dict[str, Any]:
    trace = read_trace(directory / "trace.csv")
    options = SimOptions(seed=seed, **OPTIONS.get(directory.name, {}))
    started = time.perf_counter()
    report = asyncio.run(Simulation(policies, trace, options).run()).report
    return {
        "unmet_gear_seconds": report["unmet_gear_seconds"],
        "cost": report["cost"],
        "node_seconds": report["node_seconds"],
        "max_nodes": report["max_nodes"],
        "actions": report["actions"],
        "violations": sum(report["violations"].values()),
        "simulated_hours": round(report["simulated_seconds"] / 3600, 1),
        "wall_seconds": round(time.perf_counter() - started, 2),
    }


def without(policies: PolicySet, feature: str) -> PolicySet:
    def off(policy: PoolPolicy) -> PoolPolicy:
        block = getattr(policy, feature)
        return policy.model_copy(update={feature: block.model_copy(update={"enabled": False})})

    return replace(policies, pools=tuple(off(p) for p in policies.pools))


def compare(directory: Path, seed: int, *, ablations: bool) -> dict[str, Any]:
    policies = load_policy_set([directory / "pools", directory / "providers.yaml"])
    row = {"example": str(directory.relative_to(EXAMPLES)),
           "full": simulate(directory, policies, seed),
           "baseline": simulate(directory, baseline(policies), seed)}
    if ablations:
        row["no_urgency"] = simulate(directory, without(policies, "urgency"), seed)
        row["no_burst_return"] = simulate(directory, without(policies, "burst_return"), seed)
    return row


def main() -> None:
    configure(level="error")
    directories = [EXAMPLES / "flash-crowd", EXAMPLES / "diurnal-week",
                   *sorted(p for p in (EXAMPLES / "scenarios").iterdir() if p.is_dir())]
    rows = [compare(d, seed=1, ablations=d.name != "diurnal-week") for d in directories]
    variants = ("full", "baseline", "no_urgency", "no_burst_return")
    labels = "".join(f"{v:>11}" for v in ("full", "baseline", "-urgency", "-return"))
    print(f"{'':<28}{'unmet gear-hours':^44}{'cost':^44}")
    print(f"{'example':<28}{labels}{labels}{'violations':>11}")
    for row in rows:
        unmet = "".join(f"{row[v]['unmet_gear_seconds'] / 3600:>11.1f}" if v in row
                        else f"{'-':>11}" for v in variants)
        cost = "".join(f"{row[v]['cost']:>11.2f}" if v in row else f"{'-':>11}"
                       for v in variants)
        violations = sum(row[v]["violations"] for v in variants if v in row)
        print(f"{row['example']:<28}{unmet}{cost}{violations:>11}")
    out = ROOT / "bench" / "results" / "compare.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                               "python": platform.python_version(), "seed": 1, "runs": rows},
                              indent=2) + "\n")
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
