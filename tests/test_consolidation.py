"""Consolidation and proportional scale-in in the simulator (fake time).

* ``scenarios/rebalance``: the rack is full of batch nodes when web grows, so web goes to
  vSphere (0.07/h); once batch shrinks, web's vSphere nodes are replaced on the rack
  (0.02/h) make-before-break, never below min, never while web is under pressure.
* the same with a savings threshold above what a swap saves: no churn at all.
* ``scenarios/ec2-capacity`` after its drop: capacity ~6x the target shrinks in shorter
  cooldowns, never more drains at once than the budget allows.
"""

from __future__ import annotations

import re
from typing import Any

from gearshift.policy.schema import PolicySet
from gearshift.sim.runner import Simulation
from test_scenarios import ZERO, Run, edit_pool, provider_of

FIGURES = re.compile(r"\((\d+)/(\d+) active gears on (\d+) active nodes\)")


def consolidation(policies: PolicySet, pool: str, **changes: Any) -> PolicySet:
    current = next(p for p in policies.pools if p.name == pool).consolidation
    return edit_pool(policies, pool, consolidation=current.model_copy(update=changes))


def test_web_moves_back_to_the_rack_once_it_has_room_make_before_break() -> None:
    run = Run("rebalance")
    report = run.report
    assert report["violations"] == ZERO  # never below min (4), never above max, no leaks
    makes = [e for e in run.ok("scale_out") if "consolidate:" in e.reason]
    drains = [e for e in run.ok("drain") if "consolidate:" in e.reason]
    # Every replacement on the rack, every replaced node a vSphere one, and only once
    # batch shrank (t=1h): before that the rack is full.
    assert makes and {provider_of(e) for e in makes} == {"rack-a"}
    assert {provider_of(e) for e in drains} == {"vsphere-dc1"}
    assert min(e.at for e in makes) > 3600
    # Every node set out to be replaced is drained in the end. A swap whose break is
    # refused (demand rose while the replacement booted, so it stays as capacity) is set
    # out again later: the report counts such a node once per swap.
    named = {m for e in makes for m in re.findall(r"node (web-vsphere-dc1-\w+) 0\.07/h", e.reason)}
    assert named == {e.target for e in drains} and len(drains) >= 6
    assert report["consolidations"]["web"] >= len(drains)
    assert "rack-a 0.02/h has room" in makes[0].reason and "saves 0.05/h" in makes[0].reason
    # Make before break: each drained node was named by a replacement ordered at least a
    # rack boot (5m) earlier, and was retired once empty.
    for drained in drains:
        made = [e.at for e in makes if drained.target in e.reason]
        assert made and drained.at - max(made) >= 300, drained
    assert {e.target for e in drains} <= {e.target for e in run.ok("retire")}
    # Never under pressure: each swap starts calm (density <= 0.80, headroom 60 kept)
    # and not within stable_for (10m) of a growth (the rise at t=4800).
    growths = [e.at for e in run.ok("scale_out")
               if e.pool == "web" and "consolidate:" not in e.reason]
    for make in makes:
        match = FIGURES.search(make.reason)
        assert match is not None
        gears, slots = int(match[1]), int(match[2])
        assert gears / slots <= 0.80 and slots - gears >= 60, make.reason
        assert not [g for g in growths if 0 <= make.at - g < 600], make
    assert any(e.at > 4800 for e in makes)  # it resumed after the rise
    # The swaps left nothing unmet and it pays: vSphere time and cost both fall.
    without = Run("rebalance", edit=lambda p: consolidation(p, "web", enabled=False))
    assert without.report["consolidations"] == {}
    assert report["unmet_gear_seconds"] <= without.report["unmet_gear_seconds"]
    seconds, before = report["node_seconds"], without.report["node_seconds"]
    assert seconds["vsphere-dc1"] < 0.8 * before["vsphere-dc1"]
    assert report["cost"] < 0.95 * without.report["cost"]


def summaries(pool: str) -> tuple[list[str], Any]:
    """A prepare hook collecting ``pool``'s plan summaries, every reconcile."""
    seen: list[str] = []

    def prepare(sim: Simulation) -> None:
        reconciler = sim.reconciler
        original = reconciler.reconcile_once

        async def recording() -> Any:
            plan = await original()
            if pool in plan.pools:
                seen.append(plan.pools[pool].summary)
            return plan

        reconciler.reconcile_once = recording  # type: ignore[method-assign]

    return seen, prepare


def test_no_churn_when_a_swap_saves_less_than_the_threshold() -> None:
    # A swap vSphere -> rack saves 0.05/h per node; ask for 0.06.
    seen, prepare = summaries("web")
    run = Run("rebalance", edit=lambda p: consolidation(p, "web", min_savings_per_hour=0.06),
              prepare=prepare)
    assert run.report["consolidations"] == {}
    assert not [e for e in run.events if "consolidate:" in e.reason]
    assert any("consolidate: not worth it: replacing web-vsphere-dc1-" in s
               and "saves 0.05/h < min_savings_per_hour 0.06" in s for s in seen)
    # Exactly what the pool does with consolidation off.
    off = Run("rebalance", edit=lambda p: consolidation(p, "web", enabled=False))

    def what(r: Run) -> list[tuple[float, str, str, str]]:
        return [(e.at, e.kind, e.target, e.outcome) for e in r.events]

    assert what(run) == what(off)


def drains_at_once(run: Run, pool: str) -> int:
    """The most drains of ``pool`` in flight at any moment (drain to retire or cancel)."""
    edges = sorted([(e.at, 1) for e in run.ok("drain") if e.pool == pool]
                   + [(e.at, -1) for e in run.ok("retire") + run.ok("cancel_drain")
                      if e.pool == pool], key=lambda x: (x[0], x[1]))
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most


def test_proportional_scale_in_is_faster_and_within_the_drain_budget() -> None:
    # ec2-capacity: 1300 gears drop to 200 at t=5400 on 30 nodes; want 308 slots. The
    # excess (1800 slots, 5.8x) shrinks in 10m/5.8 cooldowns, 3 drains at a time at most
    # (max_concurrent_drains unset: the larger of 2 and 10% of the pool's 30 nodes).
    run = Run("ec2-capacity")
    steady = Run("ec2-capacity", edit=lambda p: edit_pool(
        p, "api", scale_in=p.pools[0].scale_in.model_copy(update={
            "proportional": p.pools[0].scale_in.proportional.model_copy(
                update={"enabled": False})})))
    for r in (run, steady):
        assert r.report["violations"] == ZERO
        assert drains_at_once(r, "api") <= 3  # max_concurrent_drains
    assert drains_at_once(run, "api") == 3
    after = [e for e in run.ok("drain") if e.at > 5400]
    # Proportional while the slots are at least 2x the 308 wanted, then the usual pace.
    fast = [e for e in after if "proportional scale-in" in e.reason]
    assert len(fast) >= 10 and after[:len(fast)] == fast
    assert "5.8x the 308 wanted (>= 2x)" in after[0].reason
    assert "cooldown down 10m -> 1m43s" in after[0].reason
    slow = [e for e in steady.ok("drain") if e.at > 5400]
    assert not [e for e in slow if "proportional" in e.reason]
    # The first drains wait for the same stabilisation (15m after the drop)...
    assert min(e.at for e in after) == min(e.at for e in slow)
    # ...then the proportional pool sheds its first 10 nodes in under half the time
    # (4 cooldowns of 10m otherwise), and pays less.
    assert len(slow) >= 10
    assert after[9].at - after[0].at <= (slow[9].at - slow[0].at) / 2
    assert run.report["cost"] < steady.report["cost"]
    assert run.report["unmet_gear_seconds"] == steady.report["unmet_gear_seconds"]
