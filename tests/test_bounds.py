"""The clairvoyant cost bound and the reactive unmet floor (bench/bounds.py), on traces
small enough to work out by hand, and the bound's cost model against the simulator's."""

from __future__ import annotations

import sys
from copy import deepcopy
from pathlib import Path
from typing import Any

import pytest

from builders import PROVIDERS, policy_set, pool
from gearshift.sim.runner import SimOptions, Simulation
from gearshift.sim.trace import Trace, TracePoint

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from bounds import clairvoyant_bound, reactive_floor  # type: ignore[import-not-found]  # bench/

BAND = {"scale_up_above": 0.8, "scale_down_below": 0.3, "target": 0.5}
RACK = {"provider": "rack-a", "blueprint": "small-bm"}
VSPHERE = {"provider": "vsphere-dc1", "blueprint": "small-vmw"}
EC2 = {"provider": "ec2-east", "blueprint": "small-ec2"}


def trace(*points: tuple[float, str, int]) -> Trace:
    return Trace(points=tuple(TracePoint(t=t, pool=p, active_gears=g) for t, p, g in points))


def providers(*, rack_quota: int = 24, gears: int = 60, boots: dict[str, str] | None = None
              ) -> dict[str, Any]:
    data = deepcopy(PROVIDERS)
    data["providers"][0]["quota"] = {"max_nodes": rack_quota}
    for spec in data["providers"]:
        spec["boot_time"] = (boots or {}).get(spec["name"], spec["boot_time"])
    for blueprint in data["blueprints"]:
        blueprint["max_active_gears"] = gears
    return data


def small(**overrides: Any) -> Any:
    return pool(**{"density": BAND, "size": {"min": 0, "max": 40}, "placement": [RACK],
                   **overrides})


# -- the bound ------------------------------------------------------------------------
def test_constant_demand_costs_n_nodes_times_rate_times_duration() -> None:
    # 100 gears at target 0.5 want 200 slots: 4 nodes of 60, for the trace's 0 s + 1 h.
    bound = clairvoyant_bound(policy_set(small(), providers=providers()), trace((0, "small", 100)))
    assert bound.node_seconds["rack-a"] == 4 * 3600
    assert bound.cost == pytest.approx(4 * 0.02)
    assert bound.cost_by_pool == {"small": pytest.approx(0.08)}


def test_headroom_when_it_asks_more_than_the_target() -> None:
    # max(100 / 0.5, 100 + 200) = 300 slots: 5 nodes.
    bound = clairvoyant_bound(policy_set(small(headroom_gears=200), providers=providers()),
                              trace((0, "small", 100)))
    assert bound.node_seconds["rack-a"] == 5 * 3600


def test_demand_steps_are_paid_for_exactly_as_long_as_they_last() -> None:
    # 4 nodes for 600 s, 10 nodes (300 gears) for 1200 s, 2 nodes for the last hour.
    points = trace((0, "small", 100), (600, "small", 300), (1800, "small", 50))
    bound = clairvoyant_bound(policy_set(small(), providers=providers()), points)
    assert bound.node_seconds["rack-a"] == 4 * 600 + 10 * 1200 + 2 * 3600


def test_cheapest_placement_first_then_quota_and_max_nodes_spill_in_order() -> None:
    # Preference says vSphere first; the rack is cheaper, but its quota is 3 nodes.
    # 500 gears want 1000 slots = 17 nodes: 3 on the rack, vSphere's max_nodes 10, 4 on EC2.
    policy = small(placement=[{**VSPHERE, "max_nodes": 10}, RACK, EC2])
    bound = clairvoyant_bound(policy_set(policy, providers=providers(rack_quota=3)),
                              trace((0, "small", 500)), duration=3600)
    assert bound.node_seconds == {"rack-a": 3 * 3600, "vsphere-dc1": 10 * 3600,
                                  "ec2-east": 4 * 3600}
    assert bound.cost == pytest.approx(3 * 0.02 + 10 * 0.06 + 4 * 0.19)


def test_size_min_and_max_hold() -> None:
    policies = policy_set(small(size={"min": 3, "max": 6}), providers=providers())
    idle = clairvoyant_bound(policies, trace((0, "small", 0)))
    crowd = clairvoyant_bound(policies, trace((0, "small", 5000)))
    assert idle.node_seconds["rack-a"] == 3 * 3600
    assert crowd.node_seconds["rack-a"] == 6 * 3600


def test_an_open_schedule_raises_the_floor_for_its_window_only() -> None:
    # Traces start on a Monday at 00:00 UTC: the schedule is open for the first 30 minutes.
    policy = small(schedules=[{"cron": "0 0 * * 1", "duration": "30m", "min": 10}])
    bound = clairvoyant_bound(policy_set(policy, providers=providers()), trace((0, "small", 100)))
    assert bound.node_seconds["rack-a"] == 10 * 1800 + 4 * 1800


def test_quota_goes_to_the_higher_priority_pool_first() -> None:
    # A rack of 5 nodes: web (priority 100) wants 4, batch (10) wants 4 and gets 1.
    web = small(name="web", priority=100)
    batch = small(name="batch", priority=10, selector={"node_profile": "medium"})
    points = trace((0, "web", 100), (0, "batch", 100))
    bound = clairvoyant_bound(policy_set(web, batch, providers=providers(rack_quota=5)), points)
    assert bound.cost_by_pool == {"web": pytest.approx(4 * 0.02), "batch": pytest.approx(0.02)}


def test_a_pool_whose_only_placement_is_shared_keeps_it_when_a_higher_one_can_go_elsewhere(
        ) -> None:
    # A rack of 5: web (priority 100) may also use EC2, batch (10) only the rack. Both want
    # 4 nodes; serving both costs batch 4 rack nodes and web 1 rack node + 3 on EC2, not
    # web's 4 rack nodes and batch 1 (three of its nodes would be demand left unserved).
    web = small(name="web", priority=100, placement=[RACK, EC2])
    batch = small(name="batch", priority=10, selector={"node_profile": "medium"})
    points = trace((0, "web", 100), (0, "batch", 100))
    bound = clairvoyant_bound(policy_set(web, batch, providers=providers(rack_quota=5)), points)
    assert bound.cost_by_pool == {"web": pytest.approx(0.02 + 3 * 0.19),
                                  "batch": pytest.approx(4 * 0.02)}


def test_the_shared_placement_goes_where_it_saves_most() -> None:
    # A rack of 4: web's other placement is vSphere (0.06/h), batch's is EC2 (0.19/h). The
    # rack goes to batch, whatever the priorities: 4 x 0.02 + 4 x 0.06, not 4 x 0.19.
    web = small(name="web", priority=100, placement=[RACK, VSPHERE])
    batch = small(name="batch", priority=10, selector={"node_profile": "medium"},
                  placement=[RACK, EC2])
    points = trace((0, "web", 100), (0, "batch", 100))
    bound = clairvoyant_bound(policy_set(web, batch, providers=providers(rack_quota=4)), points)
    assert bound.node_seconds == {"rack-a": 4 * 3600, "vsphere-dc1": 4 * 3600, "ec2-east": 0}
    assert bound.cost == pytest.approx(4 * 0.02 + 4 * 0.06)


# -- the floor ------------------------------------------------------------------------
def test_a_step_up_is_unmet_for_exactly_one_boot_time() -> None:
    # Nothing held at 0 gears; 30 gears arrive at 600 s; nodes take 60 s to serve.
    policies = policy_set(small(placement=[EC2]), providers=providers(boots={"ec2-east": "60s"}))
    floor = reactive_floor(policies, trace((0, "small", 0), (600, "small", 30)))
    assert floor.unmet_gear_seconds == 30 * 60


def test_slots_already_held_serve_part_of_the_step() -> None:
    # 10 gears on 2 nodes of 10 (20 slots); at 600 s, 40 gears: 20 unmet for the boot time.
    policies = policy_set(small(placement=[EC2]),
                          providers=providers(gears=10, boots={"ec2-east": "60s"}))
    floor = reactive_floor(policies, trace((0, "small", 10), (600, "small", 40)))
    assert floor.unmet_gear_seconds == 20 * 60


def test_the_floor_orders_on_the_fastest_placement_whatever_the_preference() -> None:
    # The rack is preferred but boots in 8 minutes; EC2 in 1.
    policies = policy_set(small(placement=[RACK, EC2]),
                          providers=providers(boots={"ec2-east": "60s"}))
    floor = reactive_floor(policies, trace((0, "small", 0), (600, "small", 30)))
    assert floor.unmet_gear_seconds == 30 * 60


def test_nodes_released_on_a_drop_must_boot_again_on_the_rise() -> None:
    # 40 gears (8 nodes of 10), 10 gears at 600 s (2 nodes), 40 again at 630 s: the six
    # nodes released at 600 s are ordered again at 630 s and serve at 690 s.
    policies = policy_set(small(placement=[EC2]),
                          providers=providers(gears=10, boots={"ec2-east": "60s"}))
    points = trace((0, "small", 40), (600, "small", 10), (630, "small", 40))
    assert reactive_floor(policies, points).unmet_gear_seconds == 20 * 60


def test_quota_caps_the_floor_and_unknown_pools_are_all_unmet() -> None:
    # Quota 2 nodes of 60: 120 slots for 200 gears, for the whole hour; "other" has no pool.
    policies = policy_set(small(placement=[RACK]), providers=providers(rack_quota=2))
    floor = reactive_floor(policies, trace((0, "small", 200), (0, "other", 5)))
    assert floor.by_pool == {"small": 80 * 3600, "other": 5 * 3600}


# -- the same cost model as the simulator ---------------------------------------------
async def test_the_bound_is_what_the_simulator_charges_for_a_fleet_that_never_changes() -> None:
    # 100 gears on 4 nodes sit at density 0.42, inside the band: the simulator's fleet is
    # the bound's fleet, and it must be charged the same, to the cent.
    policies = policy_set(small(), providers=providers())
    points = trace((0, "small", 100))
    report = (await Simulation(policies, points, SimOptions(seed=1, move_failure_rate=0)).run()
              ).report
    bound = clairvoyant_bound(policies, points)
    assert report["node_seconds"]["rack-a"] == bound.node_seconds["rack-a"]
    assert report["cost"] == round(bound.cost, 2)
    assert report["unmet_gear_seconds"] == reactive_floor(policies, points).unmet_gear_seconds == 0
