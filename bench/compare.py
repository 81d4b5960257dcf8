"""Full policy vs. a naive baseline, on the shipped traces: unmet demand and cost.

    .venv/bin/python bench/compare.py

For every example (policies/examples/*) and scenario (policies/examples/scenarios/*)
it simulates the trace twice with the same seed:

* **full**: the policies as shipped (placement scoring and urgency, spillover,
  headroom, schedules, burst-and-return, preemption where a pool allows it);
* **baseline**: the same pools cut down to what a plain threshold autoscaler does: the
  first preferred placement only (one provider), the density band only (no headroom, no
  schedules, no extra signals), no urgency, no burst-and-return, no consolidation, no
  proportional scale-in, nothing preemptible, and no broker-side hook (it sees only the
  gears that fit).

and, to show what each feature is worth on its own (all but the diurnal week),
**no urgency**, **no burst-and-return**, **no consolidation** and **no hook** (no
unplaced-gears reports from the simulated broker), and where a pool ships with predictive
scaling (monday-ramp, monday-onprem) **no predictive**: the full policy with just that one switched off.
The baseline has no predictive scaling either. The Monday ramps are simulated after their
two-week warm-up (``OPTIONS``), bounds and floor over the simulated Monday.

Those use seed 1. The full policy also runs with seeds 2 and 3, and each of its three runs
is measured against the yardsticks of ``bench/bounds.py`` (computed once per trace, they
do not depend on the seed): **cost / bound**, the clairvoyant cost of serving the demand
at each pool's own target and headroom, and **unmet / floor**, the unmet gear-seconds of
an autoscaler that reacts at once but waits for boots. Reported as min/median/max; a
ratio over a floor of 0 is left out (``null``), the raw figures are kept.

And, seed 1, **rails relaxed**: the full policy with each pool's guard rails off (no
down stabilisation, drain and disruption budgets of the whole pool, burst-and-return and
consolidation without minimum lifetime, stability wait, saving or concurrency limit; see
``relaxed``), its cost / bound and unmet / floor beside the shipped policy's: how much of
the distance to the bound the rails account for, and what they save in unmet demand.

Then **reactive vs predictive**, side by side, seeds 1, 2 and 3: bench/predictive.py's runs
(the diurnal week after a 2-day warm-up, the Monday ramp after its two weeks; each with
``predictive`` off, then on at p90, 30 min horizon, at most 20 extra nodes), with the
clairvoyant bound and the reactive floor over the simulated part; and the same two with
warm pools (``reactive+warm``, ``predictive+warm``).

Prints those tables and writes bench/results/compare.json (the last under ``predictive``).
"""

from __future__ import annotations

import asyncio
import json
import platform
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bounds import clairvoyant_bound, reactive_floor
from predictive import ON
from predictive import measure as measure_predictive

from gearshift.logs import configure
from gearshift.policy.loader import load_policy_set
from gearshift.policy.predictive import Predictive
from gearshift.policy.schema import PolicySet, PoolPolicy
from gearshift.policy.share import ShareOfPool
from gearshift.sim.runner import DEFAULT_START, SimOptions, Simulation
from gearshift.sim.trace import read_trace, split_trace

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "policies" / "examples"
DAY = 86400.0
# The drain scenarios need slow, failing gear moves to mean anything; the Monday ramp's
# first two weeks are the history its forecasts are made from (a warm-up, not simulated).
OPTIONS: dict[str, dict[str, Any]] = {
    "slow-drain": {"move_time": 120, "move_failure_rate": 0.3, "duration": 7200},
    "drain-cancelled": {"move_time": 120, "move_failure_rate": 0.1, "duration": 3600},
    "monday-ramp": {"warmup": 14 * DAY, "duration": DAY},
    "monday-onprem": {"warmup": 14 * DAY, "duration": DAY},
}
SEEDS = (1, 2, 3)  # the full policy's runs measured against the bound and the floor


def baseline_pool(policy: PoolPolicy) -> PoolPolicy:
    first = next((p for p in policy.placement if not p.burst_only), policy.placement[0])
    return policy.model_copy(update={
        "placement": [first.model_copy(update={"max_nodes": None, "burst_only": False})],
        "headroom_gears": 0,
        "schedules": [],
        "signals": [],
        "preemptible": False,
        "predictive": Predictive(mode="off"),
        "urgency": policy.urgency.model_copy(update={"enabled": False}),
        "burst_return": policy.burst_return.model_copy(update={"enabled": False}),
        "consolidation": policy.consolidation.model_copy(update={"enabled": False}),
        "scale_in": policy.scale_in.model_copy(update={
            "proportional": policy.scale_in.proportional.model_copy(update={"enabled": False})}),
    })


def baseline(policies: PolicySet) -> PolicySet:
    return replace(policies, pools=tuple(baseline_pool(p) for p in policies.pools))


def simulate(directory: Path, policies: PolicySet, seed: int, *, broker_hook: bool = True
             ) -> dict[str, Any]:
    trace = read_trace(directory / "trace.csv")
    options = SimOptions(seed=seed, broker_hook=broker_hook, **OPTIONS.get(directory.name, {}))
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


def relaxed(policies: PolicySet) -> PolicySet:
    """The same decisions without the pools' guard rails: no down stabilisation, drain
    budgets of the whole pool (pool and provider disruption budgets off), burst-and-return
    and consolidation with no minimum lifetime, stability wait, saving or concurrency
    limit. The density band, steps, cooldowns and the drain rules stay. What the rails
    cost against the bound, and what they save in unmet demand."""
    unguarded = {"min_node_lifetime": 0.0, "stable_for": 0.0, "max_concurrent": 10_000,
                 "min_savings_per_hour": 0.0}

    def loosen(policy: PoolPolicy) -> PoolPolicy:
        return policy.model_copy(update={
            "stabilization": policy.stabilization.model_copy(update={"down": 0.0}),
            "scale_in": policy.scale_in.model_copy(
                update={"max_concurrent_drains": ShareOfPool(100.0)}),
            "disruption_budget": policy.disruption_budget.model_copy(
                update={"max_draining": None}),
            "burst_return": policy.burst_return.model_copy(update=unguarded),
            "consolidation": policy.consolidation.model_copy(update=unguarded)})

    assert policies.providers is not None
    providers = policies.providers.model_copy(update={"providers": [
        spec.model_copy(update={"disruption_budget": spec.disruption_budget.model_copy(
            update={"max_draining": None})}) for spec in policies.providers.providers]})
    return replace(policies, pools=tuple(loosen(p) for p in policies.pools),
                   providers=providers)


def reactive(policies: PolicySet) -> PolicySet:
    """Predictive scaling off, everything else as shipped."""
    return replace(policies, pools=tuple(p.model_copy(update={"predictive": Predictive()})
                                         for p in policies.pools))


def spread(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3),
            "max": round(max(values), 3)}


def against_bounds(directory: Path, policies: PolicySet, runs: list[dict[str, Any]],
                   *, relaxed_run: dict[str, Any] | None = None) -> dict[str, Any]:
    """The full policy's runs over the clairvoyant cost bound and the reactive floor."""
    assert policies.providers is not None
    trace = read_trace(directory / "trace.csv")
    options = OPTIONS.get(directory.name, {})
    duration, warmup = options.get("duration"), options.get("warmup", 0.0)
    if warmup:  # over the simulated part only, from the instant it starts
        trace = split_trace(trace, warmup)[1]
    bound = clairvoyant_bound(policies, trace, duration=duration, start=DEFAULT_START + warmup)
    floor = reactive_floor(policies, trace, duration=duration, start=DEFAULT_START + warmup)
    rates = {spec.name: spec.cost_per_hour for spec in policies.providers.providers}

    def cost_of(run: dict[str, Any]) -> float:
        """Unrounded, from the node-seconds the report gives per provider."""
        return sum(run["node_seconds"][n] / 3600 * rates[n] for n in rates)

    costs = [cost_of(r) for r in runs]
    unmet = [r["unmet_gear_seconds"] for r in runs]
    measured: dict[str, Any] = {
        "seeds": list(SEEDS),
        "bound": {"cost": round(bound.cost, 2),
                  "node_seconds": {n: round(v, 1) for n, v in bound.node_seconds.items()}},
        "floor": {"unmet_gear_seconds": round(floor.unmet_gear_seconds, 1),
                  "by_pool": {p: round(v, 1) for p, v in floor.by_pool.items()}},
        "cost": spread(costs),
        "unmet_gear_seconds": spread(unmet),
        "cost_over_bound": spread([c / bound.cost for c in costs]) if bound.cost else None,
        "unmet_over_floor": (spread([u / floor.unmet_gear_seconds for u in unmet])
                             if floor.unmet_gear_seconds else None),
    }
    if relaxed_run is not None:  # seed 1, shipped and relaxed: the same bound and floor
        measured["rails_relaxed"] = {
            "cost_over_bound": [round(c / bound.cost, 3) if bound.cost else None
                                for c in (costs[0], cost_of(relaxed_run))],
            "unmet_over_floor": [round(u / floor.unmet_gear_seconds, 3)
                                 if floor.unmet_gear_seconds else None
                                 for u in (unmet[0], relaxed_run["unmet_gear_seconds"])]}
    return measured


def compare(directory: Path, seed: int, *, ablations: bool) -> dict[str, Any]:
    policies = load_policy_set([directory / "pools", directory / "providers.yaml"])
    row: dict[str, Any] = {"example": str(directory.relative_to(EXAMPLES)),
                           "full": simulate(directory, policies, seed),
                           "baseline": simulate(directory, baseline(policies), seed,
                                                broker_hook=False)}
    if ablations:
        row["no_urgency"] = simulate(directory, without(policies, "urgency"), seed)
        row["no_burst_return"] = simulate(directory, without(policies, "burst_return"), seed)
        row["no_consolidation"] = simulate(directory, without(policies, "consolidation"), seed)
        row["no_hook"] = simulate(directory, policies, seed, broker_hook=False)
        if any(p.predictive.mode != "off" for p in policies.pools):
            row["no_predictive"] = simulate(directory, reactive(policies), seed)
        row["rails_relaxed"] = simulate(directory, relaxed(policies), seed)
    runs = [row["full"] if s == seed else simulate(directory, policies, s) for s in SEEDS]
    row["vs_bounds"] = against_bounds(directory, policies, runs,
                                      relaxed_run=row.get("rails_relaxed"))
    return row


def ratio_text(figures: dict[str, float] | None) -> str:
    if figures is None:
        return f"{'-':>20}"
    return f"{figures['min']:>6.2f}/{figures['median']:>6.2f}/{figures['max']:>6.2f}"


def print_bounds(rows: list[dict[str, Any]]) -> None:
    print(f"\nfull policy, seeds {', '.join(map(str, SEEDS))} (min/median/max)")
    print(f"{'example':<28}{'bound':>9}{'cost / bound':>21}{'floor gear-h':>14}"
          f"{'unmet / floor':>21}{'unmet gear-h':>21}")
    for row in rows:
        vs = row["vs_bounds"]
        unmet = vs["unmet_gear_seconds"]
        print(f"{row['example']:<28}{vs['bound']['cost']:>9.2f} {ratio_text(vs['cost_over_bound'])}"
              f"{vs['floor']['unmet_gear_seconds'] / 3600:>14.1f} "
              f"{ratio_text(vs['unmet_over_floor'])} "
              f"{ratio_text({k: v / 3600 for k, v in unmet.items()})}")


def print_relaxed(rows: list[dict[str, Any]]) -> None:
    print("\nseed 1, as shipped and with the pools' guard rails relaxed (same decisions)")
    print(f"{'example':<28}{'cost / bound':>14}{'relaxed':>9}{'unmet / floor':>15}{'relaxed':>9}")

    def cell(value: float | None, width: int) -> str:
        return f"{'-':>{width}}" if value is None else f"{value:>{width}.2f}"

    for row in rows:
        ratios = row["vs_bounds"].get("rails_relaxed")
        if ratios is None:
            continue
        (cost, cost_relaxed), (unmet, unmet_relaxed) = (ratios["cost_over_bound"],
                                                        ratios["unmet_over_floor"])
        print(f"{row['example']:<28}{cell(cost, 14)}{cell(cost_relaxed, 9)}"
              f"{cell(unmet, 15)}{cell(unmet_relaxed, 9)}")


def print_predictive(scenarios: dict[str, Any]) -> None:
    """Reactive vs predictive (bench/predictive.py's runs), seed by seed."""
    print(f"\nreactive vs predictive, seeds {', '.join(map(str, SEEDS))} (bench/predictive.py)")
    print(f"{'trace':<46}{'unmet gear-s, reactive':>26}{'unmet gear-s, predictive':>26}"
          f"{'cost, reactive':>26}{'cost, predictive':>26}{'pred/react cost':>16}"
          f"{'cost/bound r/p':>16}{'floor gear-s':>13}")
    for name, row in scenarios.items():
        cells = []
        for figure in ("unmet_gear_seconds", "cost"):
            for label in ("reactive", "predictive"):
                values = [r[figure] for r in row[label]["runs"]]
                cells.append(" / ".join(f"{v:,.0f}" if figure == "unmet_gear_seconds"
                                        else f"{v:.2f}" for v in values))
        bound = (f"{row['reactive']['cost_over_bound']:.3f}/"
                 f"{row['predictive']['cost_over_bound']:.3f}")
        print(f"{name:<46}{cells[0]:>26}{cells[1]:>26}{cells[2]:>26}{cells[3]:>26}"
              f"{row['cost_ratio']:>16.3f}{bound:>16}{row['floor_unmet_gear_seconds']:>13,.0f}")
    print("\n... and each with warm pools (bench/predictive.py's WARM on the first placement)")
    print(f"{'trace':<46}{'unmet gear-s, reactive+warm':>30}{'unmet gear-s, predictive+warm':>30}"
          f"{'cost, reactive+warm':>26}{'cost, predictive+warm':>26}{'cost/bound r/p':>16}")
    for name, row in scenarios.items():
        if "reactive+warm" not in row:
            continue
        cells = [" / ".join(f"{r[figure]:,.0f}" if figure == "unmet_gear_seconds"
                            else f"{r[figure]:.2f}" for r in row[label]["runs"])
                 for figure in ("unmet_gear_seconds", "cost")
                 for label in ("reactive+warm", "predictive+warm")]
        bound = (f"{row['reactive+warm']['cost_over_bound']:.3f}/"
                 f"{row['predictive+warm']['cost_over_bound']:.3f}")
        print(f"{name:<46}{cells[0]:>30}{cells[1]:>30}{cells[2]:>26}{cells[3]:>26}{bound:>16}")


def main() -> None:
    configure(level="error")
    directories = [EXAMPLES / "flash-crowd", EXAMPLES / "diurnal-week",
                   *sorted(p for p in (EXAMPLES / "scenarios").iterdir() if p.is_dir())]
    rows = [compare(d, seed=1, ablations=d.name != "diurnal-week") for d in directories]
    variants = ("full", "baseline", "no_urgency", "no_burst_return", "no_consolidation",
                "no_hook", "no_predictive")
    labels = "".join(f"{v:>11}" for v in ("full", "baseline", "-urgency", "-return", "-consol",
                                           "-hook", "-predict"))
    print(f"{'':<28}{'unmet gear-hours':^77}{'cost':^77}")
    print(f"{'example':<28}{labels}{labels}{'violations':>11}")
    for row in rows:
        unmet = "".join(f"{row[v]['unmet_gear_seconds'] / 3600:>11.1f}" if v in row
                        else f"{'-':>11}" for v in variants)
        cost = "".join(f"{row[v]['cost']:>11.2f}" if v in row else f"{'-':>11}"
                       for v in variants)
        violations = sum(row[v]["violations"] for v in variants if v in row)
        print(f"{row['example']:<28}{unmet}{cost}{violations:>11}")
    print_bounds(rows)
    print_relaxed(rows)
    ahead = measure_predictive(list(SEEDS), echo=False)
    print_predictive(ahead)
    out = ROOT / "bench" / "results" / "compare.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                               "python": platform.python_version(), "seed": 1, "seeds_vs_bounds": list(SEEDS),
                               "runs": rows,
                               "predictive": {"spec": ON.model_dump(), "scenarios": ahead}},
                              indent=2) + "\n")
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
