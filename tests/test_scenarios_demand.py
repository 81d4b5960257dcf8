"""Scenarios in the simulator (fake time) for the demand that did not fit (issue 13), on
``policies/examples/scenarios/flash-big``: 1 200 active gears jump to 9 500 at t=1800.

* with the simulated broker's hook, the unplaced gears it reports size the scale-out in
  one reconcile, and the urgent nodes go to the placements ready within max_wait;
* without it, the full pool doubles its step each time the last one is up.
"""

from __future__ import annotations

from collections import Counter

from gearshift.policy.schema import PolicySet
from test_scenarios import ZERO, Run, by_provider, edit_pool

FLASH = 1800.0  # the jump, in seconds from the start
# The reactive floor's 684 000 gear-seconds (bench/bounds.py, the full run) come from the
# flash: 7 600 gears unplaced for about one EC2 boot (90s).
UNPLACED = 9500 - 1900  # 19 seeded nodes of 100 hold 1 900 once full


def test_the_unplaced_gears_signal_sizes_the_scale_out_in_one_reconcile() -> None:
    run = Run("flash-big", broker_hook=True, duration=3600.0)
    assert run.report["violations"] == ZERO
    assert run.report["unplaced_reports"] >= 2  # the flash, then 0 once placed
    grown = [e for e in run.ok("scale_out") if e.at >= FLASH
             and "burst-and-return" not in e.reason]
    # Every node of the flash asked for at the flash, in one reconcile: max_up (100).
    assert {e.at for e in grown} == {FLASH}
    assert len(grown) == 100
    reason = grown[0].reason
    assert "(1900/1900 active gears on 19 active nodes, 7600 unplaced reported by broker)" \
        in reason
    assert "+100: 1024 gears short + 7600 unplaced reported by broker" in reason
    # Unmet: the flash for about one boot (2m at most), nothing after.
    assert 0 < run.report["unmet_gear_seconds"] <= UNPLACED * 120
    assert run.unmet_between(FLASH + 130, 3600) == 0


def test_without_the_signal_a_full_pool_grows_geometrically() -> None:
    run = Run("flash-big", broker_hook=False, duration=3600.0)
    assert run.report["violations"] == ZERO
    steps = Counter(e.at for e in run.ok("scale_out") if e.at >= FLASH)
    # The visible shortfall first (11 nodes), then twice the last step each time the pool
    # is still full once it is up (dc1 boots in 3m30s): 22, 44, 88.
    assert [steps[t] for t in sorted(steps)] == [11, 22, 44, 88]
    second = next(e for e in run.ok("scale_out") if e.at == sorted(steps)[1])
    assert "no unplaced gears reported: step 22 nodes (twice the last)" in second.reason
    # Slower than with the signal, and it never tips into preemption or past max.
    hooked = Run("flash-big", broker_hook=True, duration=3600.0)
    assert run.report["unmet_gear_seconds"] > 3 * hooked.report["unmet_gear_seconds"]
    assert run.report["max_nodes"]["web"] <= 250


def test_urgent_nodes_go_to_the_fastest_placements_not_the_preferred_slow_one() -> None:
    run = Run("flash-big", broker_hook=True, duration=3600.0)
    # dc1 (preferred, 3m30s) cannot cover the flash within max_wait (3m): dc2 (2m) takes
    # its 60, burst-only EC2 (90s) the rest; dc1 is skipped, not "not needed" by default.
    assert by_provider(run.ok("scale_out", at=FLASH)) == {"vsphere-dc2": 60, "ec2-east": 40}
    reason = run.ok("scale_out", at=FLASH)[0].reason
    assert "vsphere-dc2 (~2m, 0.06/h) ahead of vsphere-dc1 (~3m30s, 0.05/h)" in reason
    assert "ec2-east (~1m30s, 0.19/h) ahead of vsphere-dc1" in reason

    def patient(policies: PolicySet) -> PolicySet:
        web = next(p for p in policies.pools if p.name == "web")
        return edit_pool(policies, "web", urgency=web.urgency.model_copy(
            update={"max_wait": 300.0}))

    # With 5m to wait, the preferred dc1 covers what dc2 cannot: no burst.
    slow = Run("flash-big", broker_hook=True, duration=3600.0, edit=patient)
    assert by_provider(slow.ok("scale_out", at=FLASH)) == {"vsphere-dc2": 60, "vsphere-dc1": 40}
    assert slow.report["unmet_gear_seconds"] > run.report["unmet_gear_seconds"]
