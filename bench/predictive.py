"""Predictive scaling against reactive, in ``gearshift simulate``: unmet demand and cost.

    .venv/bin/python bench/predictive.py [--seeds 1 2 3]

Three week-shaped runs, each reactive (``predictive: off``) and predictive (``on``,
p90, 30 min horizon, at most 20 extra nodes), same seeds, each with its shipped pools and
providers (the same for every run of a trace):

- **diurnal-week** (policies/examples/diurnal-week): its first two days are the warm-up
  history (``SimOptions.warmup``), the last five are simulated.
- **monday-ramp** (policies/examples/scenarios/monday-ramp, made by bench/make_traces.py,
  seed 7): two weeks of history, then a Monday whose office hours start with a ramp from
  night level to peak in 20 minutes at 08:00, as every weekday before it did; the rack
  nodes take 8 minutes to boot.
- **monday-onprem** (policies/examples/scenarios/monday-onprem, same maker): the same weeks
  with a 10-minute ramp, on a fleet without cloud (rack 8 minutes, vSphere 4): the one
  trace here where the reactive floor is above 0 (the other two have 2-minute EC2 boots,
  fast enough for their ramps), so predictive scaling can show it goes below it.

Each also with **warm pools** (``WARM``: every pool keeps up to 20 stopped machines, at
least 10, on its first placement, the rack, whose machines resume in 2 minutes instead of
an 8-minute boot and cost 0.004/h stopped; see the providers files), reactive and
predictive: ``reactive+warm``, ``predictive+warm``.

Writes bench/results/predictive.json: per run, unmet gear-seconds, cost, max nodes,
scale-outs, resumes, wall time; and per scenario the medians, the ratios
predictive/reactive, and the yardsticks of bench/bounds.py over the simulated part: the
clairvoyant cost bound and the reactive floor (the least unmet demand any reactive
autoscaler can reach, waiting for boots).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import platform
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bounds import clairvoyant_bound, reactive_floor

from gearshift.logs import configure
from gearshift.policy.loader import load_policy_set
from gearshift.policy.predictive import Predictive
from gearshift.policy.schema import PolicySet
from gearshift.policy.warm import WarmPool
from gearshift.sim.runner import DEFAULT_START, SimOptions, Simulation
from gearshift.sim.trace import Trace, read_trace, split_trace

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "policies" / "examples" / "diurnal-week"
MONDAY = ROOT / "policies" / "examples" / "scenarios" / "monday-ramp"
ONPREM = ROOT / "policies" / "examples" / "scenarios" / "monday-onprem"
RESULTS = ROOT / "bench" / "results" / "predictive.json"
DAY = 86400.0
ON = Predictive(mode="on", horizon=1800.0, quantile=0.9, max_extra_nodes=20)
OFF = Predictive(mode="off")
WARM = WarmPool(min=10, max=20, max_idle=DAY)
MODES = ("reactive", "predictive", "reactive+warm", "predictive+warm")
# Each scenario: its directory, the warm-up (history) and the simulated duration (None:
# the rest of the trace).
SCENARIOS = {
    "diurnal-week (warm-up 2d, 5d simulated)": (EXAMPLE, 2 * DAY, None),
    "monday-ramp (warm-up 14d, Monday simulated)": (MONDAY, 14 * DAY, DAY),
    "monday-onprem (warm-up 14d, Monday simulated)": (ONPREM, 14 * DAY, DAY),
}


def with_predictive(policies: PolicySet, spec: Predictive) -> PolicySet:
    return replace(policies, pools=tuple(p.model_copy(update={"predictive": spec})
                                         for p in policies.pools))


def with_warm_pools(policies: PolicySet, spec: WarmPool) -> PolicySet:
    """Every pool keeps a warm pool on its first placement."""
    return replace(policies, pools=tuple(
        p.model_copy(update={"placement": [p.placement[0].model_copy(update={"warm": spec}),
                                           *p.placement[1:]]})
        for p in policies.pools))


def variants(base: PolicySet) -> dict[str, PolicySet]:
    """The four runs of a scenario: reactive and predictive, each without and with warm
    pools."""
    return {"reactive": with_predictive(base, OFF),
            "predictive": with_predictive(base, ON),
            "reactive+warm": with_warm_pools(with_predictive(base, OFF), WARM),
            "predictive+warm": with_warm_pools(with_predictive(base, ON), WARM)}


def run(policies: PolicySet, trace: Trace, *, seed: int, warmup: float,
        duration: float | None) -> dict[str, Any]:
    started = time.perf_counter()
    options = SimOptions(seed=seed, warmup=warmup, duration=duration)
    report = asyncio.run(Simulation(policies, trace, options).run()).report
    return {"seed": seed, "unmet_gear_seconds": report["unmet_gear_seconds"],
            "cost": report["cost"], "max_nodes": report["max_nodes"],
            "scale_outs": report["actions"]["scale_out"],
            "resumes": report["actions"].get("resume", 0),
            "wall_seconds": round(time.perf_counter() - started, 1)}


def measure(seeds: list[int], *, echo: bool = True) -> dict[str, Any]:
    """Every scenario reactive and predictive over ``seeds``, with the yardsticks
    (bench/compare.py shows the same figures beside its own)."""
    out: dict[str, Any] = {}
    for name, (directory, warmup, duration) in SCENARIOS.items():
        base = load_policy_set([directory / "pools", directory / "providers.yaml"])
        trace = read_trace(directory / "trace.csv")
        out[name] = {}
        for label, policies in variants(base).items():
            runs = [run(policies, trace, seed=s, warmup=warmup, duration=duration)
                    for s in seeds]
            out[name][label] = {
                "runs": runs,
                "unmet_median": statistics.median(r["unmet_gear_seconds"] for r in runs),
                "cost_median": statistics.median(r["cost"] for r in runs)}
            if echo:
                print(f"{name:45s} {label:15s} unmet {[r['unmet_gear_seconds'] for r in runs]} "
                      f"cost {[r['cost'] for r in runs]}")
        simulated = split_trace(trace, warmup)[1]
        bound = clairvoyant_bound(base, simulated, duration=duration,
                                  start=DEFAULT_START + warmup).cost
        floor = reactive_floor(base, simulated, duration=duration,
                               start=DEFAULT_START + warmup).unmet_gear_seconds
        out[name]["bound_cost"] = round(bound, 2)
        out[name]["floor_unmet_gear_seconds"] = round(floor, 1)
        for label in MODES:
            figures = out[name][label]
            figures["cost_over_bound"] = round(figures["cost_median"] / bound, 3)
            figures["unmet_over_floor"] = (round(figures["unmet_median"] / floor, 3)
                                           if floor else None)
            if echo:
                print(f"{name:45s} {label:15s} cost/bound {figures['cost_over_bound']} "
                      f"unmet/floor {figures['unmet_over_floor']} (floor {floor:.0f} gear-s)")
        reactive, predictive = out[name]["reactive"], out[name]["predictive"]
        out[name]["cost_ratio"] = round(predictive["cost_median"] / reactive["cost_median"], 3)
        out[name]["unmet_ratio"] = (round(predictive["unmet_median"] / reactive["unmet_median"], 3)
                                    if reactive["unmet_median"] else
                                    (0.0 if not predictive["unmet_median"] else math.inf))
        if echo:
            print(f"{name:45s} predictive/reactive: cost x{out[name]['cost_ratio']}, "
                  f"unmet x{out[name]['unmet_ratio']}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    configure(level="warning")
    out = measure(args.seeds)
    RESULTS.write_text(json.dumps({
        "command": "bench/predictive.py --seeds " + " ".join(map(str, args.seeds)),
        "predictive": ON.model_dump(), "warm": WARM.model_dump(), "python": platform.python_version(),
        "scenarios": out}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
