"""The simulation's report: what a run scored, as the dict ``gearshift simulate`` prints.

The run loop (``sim.runner``) counts as it goes; this module only turns the counts into the
report, the contract in ARCHITECTURE.md (``unmet_gear_seconds``, ``node_seconds``, ``cost``,
``actions``, ``max_nodes``, ``violations``) plus the figures that explain them. Kept apart
so the loop stays about time and the report's shape (pinned by
tests/test_simulate_golden.py) is read in one place.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from gearshift.policy.schema import PolicySet
from gearshift.sim.world import SimWorld


def simulation_report(*, world: SimWorld, policies: PolicySet,
                      counts: Counter[tuple[str, str]], max_nodes: Counter[str],
                      breaches: Mapping[str, Sequence[float]],
                      reactions: Mapping[str, list[float]],
                      preemptions: Counter[tuple[str, str]], burst_returns: Counter[str],
                      consolidations: Counter[str], simulated_seconds: float, reconciles: int,
                      unplaced_reports: int, seed: int) -> dict[str, Any]:
    """The report of a finished run (``counts``: the executor's, by (kind, outcome);
    ``breaches``: each pool's breach starts, and ends as negative times)."""
    assert policies.providers is not None
    actions = {k: counts[(k, "ok")] for k in ("scale_out", "drain", "cancel_drain", "retire")}
    # A warm pool's actions, only when there were any (reports without one stay as they were)
    actions.update({k: counts[(k, "ok")] for k in ("park", "resume", "retire_parked")
                    if counts[(k, "ok")]})
    failures = {f"{k}_{o}": n for (k, o), n in sorted(counts.items()) if o != "ok"}
    specs = policies.providers.providers
    costs = {spec.name: spec.cost_per_hour for spec in specs}
    node_seconds = {name: round(world.node_seconds.get(name, 0.0), 1) for name in costs}
    # Stopped machines (a warm pool) cost their disk: the provider's stopped_cost_per_hour.
    stopped_costs = {s.name: s.stopped_cost_per_hour for s in specs}
    stopped = {name: round(world.stopped_node_seconds.get(name, 0.0), 1) for name in costs}
    cost_by_provider = {n: node_seconds[n] / 3600 * costs[n]
                        + stopped[n] / 3600 * stopped_costs[n] for n in costs}
    reaction_figures = {pool: {"breaches": sum(1 for t in breaches[pool] if t >= 0),
                               "max_seconds": max(values, default=None),
                               "all_seconds": values}
                        for pool, values in reactions.items()}
    return {
        "unmet_gear_seconds": round(sum(world.unmet_gear_seconds.values()), 1),
        "unmet_gear_seconds_by_pool": {p.name: round(world.unmet_gear_seconds.get(p.name, 0.0), 1)
                                       for p in policies.pools},
        "node_seconds": node_seconds,
        "cost": round(sum(cost_by_provider.values()), 2),
        "cost_by_provider": {n: round(c, 2) for n, c in cost_by_provider.items()},
        # only when a machine was ever stopped, so reports without warm pools stay as
        # they were
        **({"stopped_node_seconds": stopped} if world.stopped_node_seconds else {}),
        "actions": actions,
        "failed_actions": failures,
        "max_nodes": {p.name: max_nodes[p.name] for p in policies.pools},
        "violations": world.violations.as_dict(),
        "breach_reactions": reaction_figures,
        "gear_moves": dict(world.move_stats),
        # Drains planned to free quota for a higher-priority pool: {preempting: {victim: n}}
        "preemptions": {by: {victim: n for (b, victim), n in sorted(preemptions.items())
                             if b == by}
                        for by in sorted({b for b, _ in preemptions})},
        # Burst nodes each pool set out to replace on a preferred placement.
        "burst_returns": dict(sorted(burst_returns.items())),
        # Nodes on dearer slots each pool set out to replace on a cheaper placement.
        "consolidations": dict(sorted(consolidations.items())),
        "simulated_seconds": simulated_seconds,
        "reconciles": reconciles,
        "unplaced_reports": unplaced_reports,
        "seed": seed,
    }
