"""The pure planner, table by table. Time is a parameter; no I/O anywhere."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest

from builders import booting, drain, node, nodes, policy_set, pool, snapshot
from gearshift.decide import (
    CreateInFlight,
    ProvisioningTimeouts,
    RetireInFlight,
    plan,
    plan_in_flight,
)
from gearshift.model import (
    Abandon,
    CancelDrain,
    CapacityRequest,
    DestroyAgain,
    Drain,
    Node,
    NodeState,
    ProviderStatus,
    Retire,
    ScaleOut,
)
from gearshift.plan import PlannerState, PoolMemory

NOW = 1_800_000_000.0


def scale_outs(p) -> dict[str, int]:
    return {a.provider: a.count for a in p.actions if isinstance(a, ScaleOut)}


def added(p) -> int:
    return sum(scale_outs(p).values())


def drains(p) -> list[str]:
    return [a.identity for a in p.actions if isinstance(a, Drain)]


# -- growing ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("case", "fleet", "expected"),
    [
        # An empty pool is brought up to its min.
        ("empty pool", [], 2),
        # 4 nodes at 0.80 exactly: on the threshold is not above it.
        ("exactly on the threshold", nodes(4, active=48), 0),
        # 4 nodes at 0.8167 > 0.80: size to target 0.65 -> ceil(196/0.65)=302 slots -> +2.
        ("just above the threshold", nodes(3, active=48) + [node("n99", active=52)], 2),
        # 4 nodes at 0.92: want ceil(220/0.65)=339 slots, have 240 -> +2 nodes.
        ("hot pool", nodes(4, active=55), 2),
        # Far above: +ceil((ceil(1200/0.65)-1200)/60) = +11, capped by step.max_up 5.
        ("step limit", nodes(20, active=60), 5),
    ],
)
def test_scale_out_by_density(case: str, fleet: list, expected: int) -> None:
    result = plan(snapshot(fleet), policy_set(pool()), now=NOW)
    assert added(result) == expected, case


def test_reason_names_the_figures_and_the_placement() -> None:
    result = plan(snapshot(nodes(4, active=55)), policy_set(pool()), now=NOW)
    action = result.actions[0]
    assert isinstance(action, ScaleOut)
    assert "projected density 0.92 > 0.80" in action.reason
    assert "220/240 active gears on 4 active nodes" in action.reason
    assert "rack-a +2" in action.reason
    notes = {c.provider: c.note for c in action.candidates}
    assert notes["rack-a"].startswith("chosen: 2")
    assert "burst" in notes["ec2-east"] or "not needed" in notes["ec2-east"]


def test_headroom_alone_triggers_growth() -> None:
    # Density 0.50 is inside the band, but only 120 free slots < headroom 150.
    result = plan(snapshot(nodes(4, active=30)), policy_set(pool(headroom_gears=150)), now=NOW)
    # want max(ceil(120/0.65)=185, 120+150=270) slots, have 240 -> +1 node.
    assert added(result) == 1
    assert "free slots 120 < headroom 150" in result.actions[0].reason


def test_booting_nodes_count_as_capacity() -> None:
    fleet = snapshot(nodes(4, active=55), pending=(booting("b1"), booting("b2")))
    # 220 gears on 240 + 120 booting slots: projected 0.61, no second scale-out.
    result = plan(fleet, policy_set(pool()), now=NOW)
    assert added(result) == 0
    assert result.pools["small"].booting == 2


def test_cooldown_up_boundary() -> None:
    fleet = snapshot(nodes(4, active=55))
    policies = policy_set(pool())
    memory = PlannerState(pools={"small": PoolMemory(last_scale_up=NOW - 59)})
    assert added(plan(fleet, policies, now=NOW, state=memory)) == 0
    held = plan(fleet, policies, now=NOW, state=memory)
    assert "cooldown up 1s left" in held.pools["small"].summary
    memory = PlannerState(pools={"small": PoolMemory(last_scale_up=NOW - 60)})
    assert added(plan(fleet, policies, now=NOW, state=memory)) == 2


def test_floor_ignores_cooldown_but_not_max() -> None:
    policies = policy_set(pool(size={"min": 3, "max": 3}))
    memory = PlannerState(pools={"small": PoolMemory(last_scale_up=NOW - 1)})
    result = plan(snapshot(nodes(1, active=10)), policies, now=NOW, state=memory)
    assert added(result) == 2
    at_max = plan(snapshot(nodes(3, active=60)), policies, now=NOW)
    assert added(at_max) == 0
    assert "at max 3" in at_max.pools["small"].summary


def test_spillover_across_placements_by_quota() -> None:
    # rack-a's pool placement allows 20 nodes; 18 are there: 2 go to rack-a, 3 to vSphere.
    # (At 0.83 the pool is not full, so the policy's order decides; see the urgency tests.)
    result = plan(snapshot(nodes(18, active=50)), policy_set(pool()), now=NOW)
    assert scale_outs(result) == {"rack-a": 2, "vsphere-dc1": 3}


def test_burst_only_used_when_preferred_placements_are_full() -> None:
    fleet = (nodes(20, active=60) + nodes(30, active=60, prefix="v", provider="vsphere-dc1"))
    result = plan(snapshot(fleet), policy_set(pool(size={"min": 2, "max": 60})), now=NOW)
    assert scale_outs(result) == {"ec2-east": 5}
    assert "burst" in result.actions[0].reason


def test_unavailable_provider_is_skipped_with_its_reason() -> None:
    statuses = {"rack-a": ProviderStatus("rack-a", available=False,
                                         why_unavailable="circuit open after 5 failure(s)")}
    result = plan(snapshot(nodes(4, active=55)), policy_set(pool()), now=NOW, statuses=statuses)
    assert scale_outs(result) == {"vsphere-dc1": 2}
    assert "rack-a skipped: circuit open" in result.actions[0].reason


def test_higher_priority_pool_claims_contested_quota_first() -> None:
    providers = {**__import__("builders").PROVIDERS}
    providers["providers"] = [dict(p) for p in providers["providers"]]
    providers["providers"][0]["quota"] = {"max_nodes": 6}  # rack-a: 6 nodes for everybody
    low = pool(name="low", priority=10, selector={"node_profile": "small", "labels": {"t": "b"}},
               placement=[{"provider": "rack-a", "blueprint": "small-bm"}])
    high = pool(name="high", priority=100, placement=[{"provider": "rack-a",
                                                       "blueprint": "small-bm"}])
    fleet = [node("h1", active=58, pool_name="high"), node("h2", active=58, pool_name="high")]
    # Both pools want nodes: high needs +1 (116 gears want 179 slots), low is empty and
    # wants its min of 2; with 6 nodes of quota both get what they want.
    result = plan(snapshot(fleet), policy_set(high, low, providers=providers), now=NOW)
    by_pool = {a.pool: a.count for a in result.actions if isinstance(a, ScaleOut)}
    assert by_pool == {"high": 1, "low": 2}
    providers["providers"][0]["quota"] = {"max_nodes": 3}
    result = plan(snapshot(fleet), policy_set(high, low, providers=providers), now=NOW)
    by_pool = {a.pool: a.count for a in result.actions if isinstance(a, ScaleOut)}
    assert by_pool == {"high": 1}  # 2 used + 1 free: high takes it, low gets nothing


def test_capacity_request_drives_scale_out_until_it_expires() -> None:
    request = CapacityRequest("r1", pool="small", gears=120, expires_at=NOW + 60)
    fleet = snapshot(nodes(4, active=30), requests=(request,))
    result = plan(fleet, policy_set(pool()), now=NOW)
    # 120 active + 120 requested = 240 on 240 slots: want ceil(240/0.65)=370 -> +3 nodes.
    assert added(result) == 3
    assert "120 gears requested" in result.actions[0].reason
    assert added(plan(fleet, policy_set(pool()), now=NOW + 61)) == 0


# -- trust -----------------------------------------------------------------------------

def test_all_nodes_stale_means_no_action_and_degraded() -> None:
    fleet = [replace(n, state=NodeState.UNKNOWN) for n in nodes(5, active=59)]
    result = plan(snapshot(fleet), policy_set(pool()), now=NOW)
    assert result.actions == ()
    evaluation = result.pools["small"]
    assert evaluation.degraded and evaluation.unknown == 5 and evaluation.active_density is None


def test_bad_facts_node_counts_for_nothing() -> None:
    fleet = nodes(4, active=30) + [node("bad", active=0, max_gears=0, state=NodeState.UNKNOWN,
                                        bad="max_active_gears is 0")]
    result = plan(snapshot(fleet), policy_set(pool()), now=NOW)
    evaluation = result.pools["small"]
    assert evaluation.active_density == pytest.approx(0.5)
    assert evaluation.capacity_gears == 240
    assert evaluation.degraded


def test_scale_in_frozen_while_facts_are_not_fresh() -> None:
    memory = PlannerState(pools={"small": PoolMemory(low_since=NOW - 3600)})
    fleet = snapshot(nodes(10, active=6), facts_fresh=False)
    result = plan(fleet, policy_set(pool()), now=NOW, state=memory)
    assert drains(result) == []
    assert "scale-in frozen" in result.pools["small"].summary


def test_scale_out_continues_on_clear_evidence_while_degraded() -> None:
    fleet = nodes(4, active=55) + [replace(node("gone", active=10), state=NodeState.UNKNOWN)]
    assert added(plan(snapshot(fleet), policy_set(pool()), now=NOW)) == 2


# -- shrinking -------------------------------------------------------------------------

def low_memory(seconds: float) -> PlannerState:
    return PlannerState(pools={"small": PoolMemory(low_since=NOW - seconds)})


def test_stabilisation_window_before_scale_in() -> None:
    fleet = snapshot(nodes(10, active=6, total=9))
    policies = policy_set(pool())
    first = plan(fleet, policies, now=NOW)
    assert drains(first) == []
    assert first.state.pools["small"].low_since == NOW
    assert drains(plan(fleet, policies, now=NOW + 899, state=first.state)) == []
    assert len(drains(plan(fleet, policies, now=NOW + 900, state=first.state))) == 2


def test_scale_in_never_breaches_target_floor_or_budget() -> None:
    # 60 gears on 10 nodes: want ceil(60/0.65)=93 slots -> could drop 8, step allows 2.
    result = plan(snapshot(nodes(10, active=6)), policy_set(pool()), now=NOW,
                  state=low_memory(3600))
    assert len(drains(result)) == 2
    # min 9: only one may go.
    result = plan(snapshot(nodes(10, active=6)), policy_set(pool(size={"min": 9, "max": 40})),
                  now=NOW, state=low_memory(3600))
    assert len(drains(result)) == 1
    # two drains already running and max_concurrent_drains 2: none.
    ongoing = (drain("n00", started=NOW - 60, deadline=NOW + 600),
               drain("n01", started=NOW - 60, deadline=NOW + 600))
    fleet = [replace(n, state=NodeState.DRAINING) if n.identity in ("n00", "n01") else n
             for n in nodes(10, active=6)]
    result = plan(snapshot(fleet, drains=ongoing), policy_set(pool()), now=NOW,
                  state=low_memory(3600))
    assert drains(result) == []


def test_scale_in_keeps_headroom() -> None:
    # 120 gears on 10 nodes (600 slots), headroom 400: want 520 slots -> only 1 node may go.
    result = plan(snapshot(nodes(10, active=12)), policy_set(pool(headroom_gears=400)), now=NOW,
                  state=low_memory(3600))
    assert len(drains(result)) == 1


def test_cooldown_down_counts_from_the_last_scale_up() -> None:
    memory = PlannerState(pools={"small": PoolMemory(low_since=NOW - 3600,
                                                     last_scale_up=NOW - 599)})
    # 60 gears on 600 slots is 6.5x the 93 wanted: proportional scale-in (on by default)
    # would shorten the cooldown; off here, the full 10m counts.
    steady = pool(scale_in={"strategy": "fewest_gears", "proportional": {"enabled": False}})
    result = plan(snapshot(nodes(10, active=6)), policy_set(steady), now=NOW, state=memory)
    assert drains(result) == []
    assert "cooldown down 1s left" in result.pools["small"].summary


SCALE_IN = {"strategy": "fewest_gears", "drain_timeout": "20m", "max_concurrent_drains": 8}


@pytest.mark.parametrize(
    ("case", "active", "scale_in", "since_down", "expected", "why"),
    [
        # 40 nodes (2400 slots); 60 gears want 93 slots: 25.8x. Half the 38 excess nodes
        # is 19, capped by max_concurrent_drains 8; cooldown 10m / 25.8 = 23s.
        ("large excess", 60, SCALE_IN, 120, 8,
         "2400 slots is 25.8x the 93 wanted (>= 2x): step 2 -> 19 (half the 38 excess nodes), "
         "cooldown down 10m -> 23s; drain budgets still apply"),
        ("within the shorter cooldown", 60, SCALE_IN, 10, 0, "cooldown down 13s left"),
        ("the drain budget still caps it", 60, {**SCALE_IN, "max_concurrent_drains": 3}, 120,
         3, "step 2 -> 19"),
        # Unset, the budget is the larger of 2 and 10% of the pool's 40 nodes: 4.
        ("the default drain budget is a tenth of a large pool", 60,
         {"strategy": "fewest_gears", "drain_timeout": "20m"}, 120, 4, "step 2 -> 19"),
        ("switched off", 60, {**SCALE_IN, "proportional": {"enabled": False}}, 120, 0,
         "cooldown down 8m left"),
        # 900 gears want 1385 slots: 1.7x < 2x: the usual step and cooldown.
        ("a small excess is a wobble", 900, SCALE_IN, 900, 2, "shrinking: draining 2 node(s)"),
    ],
)
def test_proportional_scale_in(case: str, active: int, scale_in: dict[str, Any],
                               since_down: float, expected: int, why: str) -> None:
    fleet = [node(f"n{i:02d}", active=active // 40 + (1 if i < active % 40 else 0))
             for i in range(40)]
    memory = PlannerState(pools={"small": PoolMemory(low_since=NOW - 3600,
                                                     last_scale_down=NOW - since_down)})
    policies = policy_set(pool(scale_in=scale_in, size={"min": 2, "max": 60}))
    result = plan(snapshot(fleet), policies, now=NOW, state=memory)
    assert len(drains(result)) == expected, case
    assert why in result.pools["small"].summary, result.pools["small"].summary
    reasons = [a.reason for a in result.actions if isinstance(a, Drain)]
    proportional = "proportional scale-in" in result.pools["small"].summary
    assert proportional == (expected > 2)
    assert all(("proportional scale-in" in r) == proportional for r in reasons)


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("fewest_gears", ["b", "c"]),  # b has 2 gears, c 4, a 9
        ("oldest", ["c", "a"]),  # c created at 100, a at 200
        ("newest", ["b", "a"]),  # b created at 300
        ("costliest_first", ["a", "b"]),  # a and b are on vSphere (0.06) vs rack (0.02)
    ],
)
def test_victims_follow_the_strategy(strategy: str, expected: list[str]) -> None:
    fleet = [node("a", active=3, total=9, created_at=200, provider="vsphere-dc1"),
             node("b", active=1, total=2, created_at=300, provider="vsphere-dc1"),
             node("c", active=2, total=4, created_at=100),
             *nodes(7, active=3, created_at=150, prefix="z", total=50, owned=False)]
    policies = policy_set(pool(scale_in={"strategy": strategy}))
    assert drains(plan(snapshot(fleet), policies, now=NOW, state=low_memory(3600))) == expected


@pytest.mark.parametrize(
    ("scale_in", "expected"),
    [
        # The default weighs cost per active-gear slot: d (rack, 0.02/h for 10 slots) is
        # the dearest slot; a and b (vSphere, 0.06/h for 60) tie, b has fewer gears.
        ({}, ["d", "b"]),
        ({"strategy": "costliest_per_slot"}, ["d", "b"]),
        ({"strategy": "costliest_first"}, ["a", "b"]),  # the dearest node, whatever its size
        ({"strategy": "fewest_gears"}, ["b", "d"]),
    ],
)
def test_the_default_victims_are_the_dearest_slots(scale_in: dict[str, Any],
                                                   expected: list[str]) -> None:
    fleet = [node("a", active=3, total=9, provider="vsphere-dc1"),
             node("b", active=1, total=2, provider="vsphere-dc1"),
             node("d", active=2, total=4, max_gears=10),
             *nodes(7, active=3, prefix="z", total=50, owned=False)]
    policies = policy_set(pool(scale_in=scale_in))
    assert drains(plan(snapshot(fleet), policies, now=NOW, state=low_memory(3600))) == expected


def test_burst_nodes_go_first_and_unowned_nodes_never() -> None:
    fleet = [node("burst", active=5, total=40, provider="ec2-east"),
             node("mine", active=1, total=1),
             node("theirs", active=0, total=0, owned=False),
             *nodes(7, active=5, prefix="z", total=30)]
    result = plan(snapshot(fleet), policy_set(pool()), now=NOW, state=low_memory(3600))
    assert drains(result) == ["burst", "mine"]


# -- drains ----------------------------------------------------------------------------

def draining(identity: str, *, active: int, total: int) -> Node:
    return replace(node(identity, active=active, total=total), state=NodeState.DRAINING)


def test_drained_node_is_retired_with_its_machine() -> None:
    fleet = nodes(4, active=30) + [draining("d1", active=0, total=0)]
    result = plan(snapshot(fleet, drains=(drain("d1", started=NOW - 60, deadline=NOW + 60),)),
                  policy_set(pool()), now=NOW)
    retire = [a for a in result.actions if isinstance(a, Retire)]
    assert [(r.identity, r.provider, r.machine_id) for r in retire] == [("d1", "rack-a", "m-d1")]


def test_node_with_gears_left_is_never_retired_before_its_deadline() -> None:
    fleet = nodes(4, active=30) + [draining("d1", active=0, total=3)]
    result = plan(snapshot(fleet, drains=(drain("d1", started=NOW - 60, deadline=NOW + 60),)),
                  policy_set(pool()), now=NOW)
    assert not [a for a in result.actions if isinstance(a, Retire | CancelDrain)]


@pytest.mark.parametrize(
    ("on_timeout", "active", "expected"),
    [("reactivate", 0, CancelDrain), ("retire", 0, Retire), ("retire", 2, CancelDrain)],
)
def test_drain_deadline(on_timeout: str, active: int, expected: type) -> None:
    fleet = nodes(4, active=30) + [draining("d1", active=active, total=5)]
    result = plan(snapshot(fleet, drains=(drain("d1", started=NOW - 1200, deadline=NOW),)),
                  policy_set(pool(scale_in={"on_drain_timeout": on_timeout})), now=NOW)
    ended = [a for a in result.actions if isinstance(a, Retire | CancelDrain)]
    assert [type(a) for a in ended] == [expected]
    assert "passed its deadline" in ended[0].reason


def test_returning_demand_cancels_a_drain_before_provisioning() -> None:
    fleet = nodes(4, active=55) + [draining("d1", active=20, total=25)]
    result = plan(snapshot(fleet, drains=(drain("d1", started=NOW - 60, deadline=NOW + 600),)),
                  policy_set(pool()), now=NOW)
    cancels = [a for a in result.actions if isinstance(a, CancelDrain)]
    assert [c.identity for c in cancels] == ["d1"]
    assert "reactivating d1 beats provisioning" in cancels[0].reason
    # 240 gears (incl. the draining node's 20) want ceil(240/.65)=370 slots; 240 active + 60
    # reactivated = 300 -> two new nodes on top (without the reactivation it would be 3).
    assert added(result) == 2


@pytest.mark.parametrize(
    ("phase", "gears_left", "deadline", "demand", "expected"),
    [
        # Being removed from its district: past its deadline it is not reactivated (it
        # may be out of its district already); once empty, the retire resumes.
        ("removing", 3, NOW - 1, False, []),
        ("removing", 0, NOW - 1, False, [Retire]),
        # Demand returning never reactivates a node past the point of no return.
        ("removing", 3, NOW + 600, True, []),
        # Its machine is being destroyed: the executor finishes that on its own.
        ("retiring", 0, NOW - 1, False, []),
        ("retiring", 0, NOW + 600, True, []),
        # Before that point, both still happen.
        ("moving", 3, NOW - 1, False, [CancelDrain]),
        ("moving", 3, NOW + 600, True, [CancelDrain]),
    ],
)
def test_drains_past_the_point_of_no_return_are_never_reactivated(
        phase: str, gears_left: int, deadline: float, demand: bool, expected: list[type]) -> None:
    fleet = nodes(4, active=55 if demand else 30) + [
        draining("d1", active=0, total=gears_left)]
    progress = replace(drain("d1", started=NOW - 1200, deadline=deadline), phase=phase)
    result = plan(snapshot(fleet, drains=(progress,)), policy_set(pool()), now=NOW)
    ended = [type(a) for a in result.actions if isinstance(a, Retire | CancelDrain)]
    assert ended == expected


def test_a_spill_round_keeps_the_whole_growth_within_step_max_up() -> None:
    """Round one placed 5 (step.max_up), 2 were refused; the spill round places 2, not 5."""
    policies = policy_set(pool())
    hot = nodes(20, active=60)
    first = plan(snapshot(hot), policies, now=NOW)
    assert added(first) == 5
    made = [booting(f"b{i}") for i in range(3)]
    second = plan(snapshot(hot, pending=tuple(made)), policies, now=NOW, state=first.state)
    assert added(second) == 2
    assert "finishing the growth" in second.actions[0].reason
    # A later reconcile is a new growth with its own step.
    third = plan(snapshot(hot, pending=tuple(made)), policies, now=NOW + 3600,
                 state=second.state)
    assert added(third) == 5


# -- schedules -------------------------------------------------------------------------

def at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@pytest.mark.parametrize(
    ("when", "floor_applies"),
    [
        ("2026-11-23T07:59:00+01:00", False),  # Monday, a minute before the window
        ("2026-11-23T08:00:00+01:00", True),
        ("2026-11-23T17:59:00+01:00", True),
        ("2026-11-23T18:00:00+01:00", True),  # the 10h window includes its end
        ("2026-11-23T18:01:00+01:00", False),
        ("2026-11-28T09:00:00+01:00", False),  # Saturday
    ],
)
def test_schedule_raises_the_floor(when: str, floor_applies: bool) -> None:
    schedule = [{"cron": "0 8 * * 1-5", "duration": "10h", "timezone": "Europe/Berlin",
                 "min": 10}]
    result = plan(snapshot(nodes(2, active=30)), policy_set(pool(schedules=schedule)),
                  now=at(when))
    assert added(result) == (5 if floor_applies else 0)  # 8 missing, step 5


@pytest.mark.parametrize(
    ("when", "floor_applies"),
    [
        ("2026-11-23T21:59:00+00:00", False),
        ("2026-11-23T23:30:00+00:00", True),  # crosses midnight: opened 22:00 Monday
        ("2026-11-24T03:59:00+00:00", True),
        ("2026-11-24T04:01:00+00:00", False),
    ],
)
def test_schedule_crossing_midnight(when: str, floor_applies: bool) -> None:
    schedule = [{"cron": "0 22 * * 1", "duration": "6h", "timezone": "UTC", "min": 4}]
    result = plan(snapshot(nodes(2, active=30)), policy_set(pool(schedules=schedule)),
                  now=at(when))
    assert added(result) == (2 if floor_applies else 0)


@pytest.mark.parametrize(
    ("when", "floor_applies"),
    [
        # Spring forward in Berlin on 2026-03-29: 02:00 CET -> 03:00 CEST. A 02:30 fire
        # time does not exist; it fires at 03:30 CEST (01:30 UTC) and lasts one real hour.
        ("2026-03-29T01:29:00+00:00", False),
        ("2026-03-29T01:30:00+00:00", True),
        ("2026-03-29T02:30:00+00:00", True),
        ("2026-03-29T02:31:00+00:00", False),
        # Fall back on 2026-10-25: 02:30 happens twice; the window opens at the first one
        # (00:30 UTC) and lasts one real hour, not two.
        ("2026-10-25T00:29:00+00:00", False),
        ("2026-10-25T00:30:00+00:00", True),
        ("2026-10-25T01:30:00+00:00", True),
        ("2026-10-25T01:31:00+00:00", False),
    ],
)
def test_schedule_across_dst(when: str, floor_applies: bool) -> None:
    schedule = [{"cron": "30 2 * * *", "duration": "1h", "timezone": "Europe/Berlin", "min": 4}]
    result = plan(snapshot(nodes(2, active=30)), policy_set(pool(schedules=schedule)),
                  now=at(when))
    assert added(result) == (2 if floor_applies else 0)


# -- operators -------------------------------------------------------------------------

def test_paused_pool_is_evaluated_but_untouched() -> None:
    result = plan(snapshot(nodes(4, active=59)), policy_set(pool()), now=NOW,
                  paused=frozenset({"small"}))
    assert result.actions == ()
    assert result.pools["small"].paused
    assert result.pools["small"].active_density == pytest.approx(59 / 60)


def test_plan_is_deterministic_and_does_not_mutate_its_inputs() -> None:
    fleet = snapshot(nodes(10, active=6))
    state = low_memory(3600)
    first = plan(fleet, policy_set(pool()), now=NOW, state=state)
    second = plan(fleet, policy_set(pool()), now=NOW, state=state)
    assert first == second
    assert state.pools["small"] == PoolMemory(low_since=NOW - 3600)


def test_nodes_out_of_service_without_our_drain_still_count_against_max() -> None:
    """A node whose facts say it left its district, with no drain of ours, still has a
    machine: it counts against size.max, so facts claiming that (an SRE's deactivation,
    or forged facts) cannot push the pool past max."""
    hot = nodes(4, active=58)  # density 0.97: wants +5 (step)
    out = nodes(3, active=0, prefix="x", state=NodeState.DRAINING)
    result = plan(snapshot(hot + out), policy_set(pool(size={"min": 2, "max": 8})), now=NOW)
    assert added(result) == 1  # 4 active + 3 out of service + 1 = max 8
    ours = plan(snapshot(hot + out, drains=tuple(
        drain(n.identity, started=NOW - 60, deadline=NOW + 600) for n in out)),
        policy_set(pool(size={"min": 2, "max": 8})), now=NOW)
    assert added(ours) > 1  # our own drains are on their way out: they do not count


# -- operations in flight: nodes that never came up, destroys that failed ----------------
TIMEOUTS = ProvisioningTimeouts(factor=3.0, minimum=120.0)


def _create(*, started_at: float = 0.0, abandoning: bool = False, active_gears: int = 0,
            machine_id: str | None = "m-1", provider: str = "rack-a") -> CreateInFlight:
    return CreateInFlight(op_id="op-1", identity="n-new", pool="small", provider=provider,
                          machine_id=machine_id, started_at=started_at, abandoning=abandoning,
                          active_gears=active_gears)


@pytest.mark.parametrize(("create", "now", "boot_time", "facts_fresh", "expected"), [
    # boot time 60s x 3 = 180s: past it, the node is given up
    (_create(), 181.0, 60.0, True, "abandon"),
    (_create(), 180.0, 60.0, True, None),  # not past it yet
    (_create(), 121.0, None, True, "abandon"),  # no boot time: the minimum, 120s
    (_create(), 121.0, 30.0, True, "abandon"),  # 30s x 3 < 120s: the minimum
    (_create(), 1000.0, 60.0, False, None),  # the fact source is down: silence proves nothing
    (_create(active_gears=3), 1000.0, 60.0, True, None),  # reports active gears: held
    (_create(machine_id=None), 1000.0, 60.0, True, None),  # no machine to destroy
    (_create(provider="gone"), 1000.0, 60.0, True, None),  # provider no longer configured
    # its destroy failed before: tried again at once, whatever the facts say
    (_create(abandoning=True), 10.0, 60.0, False, "abandon"),
])
def test_in_flight_creates_are_abandoned_past_their_provisioning_timeout(
        create: CreateInFlight, now: float, boot_time: float | None, facts_fresh: bool,
        expected: str | None) -> None:
    result = plan_in_flight(creates=[create], retires=[], now=now, facts_fresh=facts_fresh,
                            statuses={"rack-a": ProviderStatus(name="rack-a",
                                                               boot_time=boot_time)},
                            timeouts=TIMEOUTS)
    assert [a.kind for a in result.actions] == ([expected] if expected else [])
    assert result.held == (("n-new",) if create.active_gears else ())
    if expected:
        action = result.actions[0]
        assert isinstance(action, Abandon)
        timeout = max(120.0, (boot_time or 0.0) * 3.0)
        assert (action.op_id, action.machine_id, action.timeout, action.resumed) == (
            "op-1", "m-1", timeout, create.abandoning)
        assert f"published no facts within {timeout:.0f}s" in action.reason


@pytest.mark.parametrize(("machine_id", "provider", "expected"), [
    ("m-9", "rack-a", ["destroy_again"]),
    (None, "rack-a", []),  # nothing known to destroy
    ("m-9", "gone", []),  # provider no longer configured
])
def test_a_retired_node_whose_destroy_failed_is_destroyed_again(
        machine_id: str | None, provider: str, expected: list[str]) -> None:
    retire = RetireInFlight(op_id="op-2", identity="n-old", pool="small", provider=provider,
                            machine_id=machine_id)
    result = plan_in_flight(creates=[], retires=[retire], now=0.0, facts_fresh=False,
                            statuses={"rack-a": ProviderStatus(name="rack-a")},
                            timeouts=TIMEOUTS)
    assert [a.kind for a in result.actions] == expected
    if expected:
        action = result.actions[0]
        assert isinstance(action, DestroyAgain)
        assert (action.op_id, action.identity, action.machine_id) == ("op-2", "n-old", "m-9")
        assert "destroy failed" in action.reason


def test_abandons_and_destroys_again_round_trip_through_the_plan_json() -> None:
    import json

    from gearshift.client import plan_from_dict
    from gearshift.explain import plan_to_dict, plan_to_text
    from gearshift.plan import Plan

    actions = (Abandon(pool="small", identity="n-new", provider="rack-a", machine_id="m-1",
                       op_id="op-1", reason="published no facts", timeout=180.0, waited=181.0),
               DestroyAgain(pool="small", identity="n-old", provider="rack-a", machine_id="m-9",
                            op_id="op-2", reason="destroy failed"))
    sent = Plan(at=NOW, actions=actions, pools={}, state=PlannerState())
    back = plan_from_dict(json.loads(json.dumps(plan_to_dict(sent))))
    assert back.actions == actions
    assert "abandon small: n-new" in plan_to_text(back)
