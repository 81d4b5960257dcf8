"""How long one ``decide.plan`` takes, next to one plain pass over the same nodes.

    .venv/bin/python bench/plan.py [--nodes 1000 10000 100000] [--pools 10 100] [--rounds 5]

Each case is a fleet of N nodes spread evenly over P pools (one profile each, every node
a machine of ours, half on a rack whose quota they fill and half on dearer vSphere, all
fresh), in three shapes: *steady* (every
pool inside its density band: the planner looks and does nothing), *scale-out* (every
pool above its band past stabilisation: the planner places new nodes) and *scale-in*
(every pool far below its band and past stabilisation: the planner picks drain victims).
Each round plans a fresh snapshot of the same nodes, carrying the identity index the
fleet model keeps between snapshots (as the daemon's do), with the memory the planner
would have (steady: what its own last plan returned). The baseline, timed in the same
run on the same nodes, is one plain Python pass that sums every node's active gears and
capacity, each round right after the plan's: the ratio plan ÷ pass (medians; of CPU time,
which other processes disturb least, and of wall time) is the figure that travels between
machines (this one is shared and noisy). Min and median of the rounds.

Prints a table and writes bench/results/plan.json (``--out``).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from gearshift import decide
from gearshift.model import FleetSnapshot, GearCounts, Machine, Node, NodeFacts, NodeState
from gearshift.plan import PlannerState, PoolMemory
from gearshift.policy.schema import PolicySet, PoolPolicy, ProvidersFile

ROOT = Path(__file__).resolve().parent.parent
NOW = 1_800_000_000.0
PROVIDERS = ("rack", "vmw", "cloud")


def providers_file(pools: int, *, rack_nodes: int) -> ProvidersFile:
    # The rack's quota is what it holds: the cheap provider is full, the dearer one holds
    # the rest, so consolidation looks (as it does every reconcile) and finds no room.
    return ProvidersFile.model_validate({
        "apiVersion": "gearshift/v1", "kind": "Providers",
        "providers": [{"name": name, "kind": "simulated",
                       "quota": {"max_nodes": rack_nodes if name == "rack" else 1_000_000},
                       "cost_per_hour": cost, "boot_time": boot}
                      for name, cost, boot in (("rack", 0.02, "6m"), ("vmw", 0.07, "3m"),
                                               ("cloud", 0.21, "90s"))],
        "blueprints": [{"name": f"p{i}-{name}", "provider": name, "node_profile": f"p{i}",
                        "max_active_gears": 60}
                       for i in range(pools) for name in PROVIDERS]})


def pool_policy(index: int, nodes: int) -> PoolPolicy:
    return PoolPolicy.model_validate({
        "apiVersion": "gearshift/v1", "kind": "Pool", "name": f"p{index}",
        "priority": 1000 - index, "selector": {"node_profile": f"p{index}"},
        "size": {"min": 1, "max": nodes * 4},
        "density": {"scale_up_above": 0.8, "scale_down_below": 0.45, "target": 0.65},
        "step": {"max_up": 50, "max_down": 10},
        "scale_in": {"strategy": "fewest_gears", "max_concurrent_drains": 10},
        "placement": [{"provider": name, "blueprint": f"p{index}-{name}",
                       "max_nodes": nodes * 4, "burst_only": name == "cloud"}
                      for name in PROVIDERS]})


def fleet(nodes: int, pools: int, *, active: int) -> tuple[FleetSnapshot, PolicySet]:
    per_pool = max(1, nodes // pools)
    policies = PolicySet(pools=tuple(pool_policy(i, per_pool) for i in range(pools)),
                         providers=providers_file(pools, rack_nodes=(nodes + 1) // 2))
    built = []
    for n in range(nodes):
        pool = n % pools
        identity = f"n{n}.p{pool}.example.com"
        facts = NodeFacts(identity=identity, node_profile=f"p{pool}", max_active_gears=60,
                          gears=GearCounts(total=active + 5 + n % 7, active=active + n % 3,
                                           idle=5 + n % 7),
                          district_uuid=f"d{pool}", produced_at=NOW - 5)
        machine = Machine(provider=PROVIDERS[n % 2], machine_id=f"m{n}", name=identity,
                          pool=f"p{pool}", created_at=NOW - 86_400 - n)
        built.append(Node(identity=identity, state=NodeState.ACTIVE, facts=facts,
                          last_seen=NOW - 5, machine=machine))
    return FleetSnapshot(taken_at=NOW, nodes=tuple(built),
                         index={n.identity: i for i, n in enumerate(built)}), policies


def plain_pass(snapshot: FleetSnapshot) -> int:
    total = 0
    for node in snapshot.nodes:
        facts = node.facts
        if facts is not None:
            total += facts.gears.active + facts.max_active_gears
    return total


def timed(function: Any) -> tuple[float, float]:
    """Wall and CPU seconds of one call (CPU time is what other agents on a shared machine
    disturb least)."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def figures(times: list[float], digits: int) -> dict[str, float]:
    return {"min": round(min(times) * 1000, digits),
            "median": round(statistics.median(times) * 1000, digits)}


ACTIVE = {"steady": 42, "scale-out": 55, "scale-in": 6}  # of 60 slots per node


def case(nodes: int, pools: int, shape: str, rounds: int) -> dict[str, Any]:
    snapshot, policies = fleet(nodes, pools, active=ACTIVE[shape])
    # Long past stabilisation and cooldowns: a scale-out or scale-in may happen now.
    state = PlannerState(pools={p.name: PoolMemory(low_since=NOW - 86_400,
                                                   high_since=NOW - 86_400)
                                for p in policies.pools})
    plan = decide.plan(snapshot, policies, now=NOW, state=state)
    drains = sum(1 for a in plan.actions if a.kind == "drain")
    scale_outs = sum(1 for a in plan.actions if a.kind == "scale_out")
    assert (drains > 0) == (shape == "scale-in"), (shape, drains)
    assert (scale_outs > 0) == (shape == "scale-out"), (shape, scale_outs)
    if shape == "steady":
        state = plan.state  # what the planner remembers of a calm fleet

    def one_plan() -> None:
        decide.plan(replace(snapshot), policies, now=NOW, state=state)

    plans: list[tuple[float, float]] = []
    passes: list[tuple[float, float]] = []
    for _ in range(rounds):  # interleaved: both see the same load
        plans.append(timed(one_plan))
        passes.append(timed(lambda: plain_pass(snapshot)))
    plan_wall, plan_cpu = [w for w, _ in plans], [c for _, c in plans]
    pass_wall, pass_cpu = [w for w, _ in passes], [c for _, c in passes]
    return {"nodes": nodes, "pools": pools, "shape": shape, "drains": drains,
            "scale_outs": scale_outs,
            "plan_ms": figures(plan_wall, 2), "plan_cpu_ms": figures(plan_cpu, 2),
            "pass_ms": figures(pass_wall, 3), "pass_cpu_ms": figures(pass_cpu, 3),
            "ratio": round(statistics.median(plan_wall) / statistics.median(pass_wall), 1),
            "cpu_ratio": round(statistics.median(plan_cpu) / statistics.median(pass_cpu), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--pools", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "plan.json")
    args = parser.parse_args()
    results = []
    print(f"{'nodes':>7} {'pools':>5} {'shape':>9} {'plan min/med ms':>16} "
          f"{'cpu med ms':>10} {'pass cpu ms':>11} {'ratio cpu':>9} {'wall':>6}")
    for nodes in args.nodes:
        for pools in args.pools:
            for shape in ("steady", "scale-out", "scale-in"):
                r = case(nodes, pools, shape, args.rounds)
                results.append(r)
                print(f"{nodes:>7} {pools:>5} {shape:>9} "
                      f"{r['plan_ms']['min']:>7.1f}/{r['plan_ms']['median']:<8.1f} "
                      f"{r['plan_cpu_ms']['median']:>10.1f} {r['pass_cpu_ms']['median']:>11.2f} "
                      f"{r['cpu_ratio']:>9.1f} {r['ratio']:>6.1f}", flush=True)
    out = args.out
    out.write_text(json.dumps({"command": " ".join(["python", "bench/plan.py", *sys.argv[1:]]),
                               "machine": platform.machine(),
                               "python": platform.python_version(),
                               "rounds": args.rounds, "cases": results}, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
