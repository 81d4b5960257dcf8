"""Placement scoring, preemption, burst-and-return and disruption budgets, table by table.

All pure: the planner is given a snapshot, policies, provider statuses and its memory.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import pytest

from builders import PROVIDERS, booting, drain, node, nodes, policy_set, pool, snapshot
from gearshift.decide import plan
from gearshift.model import CancelDrain, Drain, NodeState, ProviderStatus, ScaleOut
from gearshift.plan import BurstReturn, PlannerState, PoolMemory, Preemption

NOW = 1_800_000_000.0
HOUR = 3600.0


def providers(**changes: dict[str, Any]) -> dict[str, Any]:
    """The builders' providers file with some providers changed (by name)."""
    data = copy.deepcopy(PROVIDERS)
    for spec in data["providers"]:
        spec.update(changes.get(spec["name"].replace("-", "_"), {}))
    return data


def scale_outs(result: Any, pool_name: str | None = None) -> dict[str, int]:
    return {a.provider: a.count for a in result.actions
            if isinstance(a, ScaleOut) and (pool_name is None or a.pool == pool_name)}


def drains_of(result: Any) -> list[Drain]:
    return [a for a in result.actions if isinstance(a, Drain)]


# -- urgency: speed beats price when the pool is full now ------------------------------

@pytest.mark.parametrize(
    ("case", "active", "urgency", "statuses", "expected"),
    [
        # 0.92 is above the band but below full_at 0.95: the policy's order.
        ("not full", 55, {}, {}, {"rack-a": 2}),
        # Full: ceil(240/0.8)-240=60 slots needed now -> 1 node; want ceil(240/.65)=370
        # -> +3 in all: the urgent one on vSphere (3m) ahead of the rack (8m), the rest
        # in the policy's order.
        ("full", 60, {}, {}, {"vsphere-dc1": 1, "rack-a": 2}),
        ("full, urgency off", 60, {"enabled": False}, {}, {"rack-a": 3}),
        # vSphere saves 5m; demanding 6m keeps the policy's order (without max_wait).
        ("full, small saving", 60, {"min_time_saved": "6m", "max_wait": None}, {},
         {"rack-a": 3}),
        # ... but the rack (8m) cannot cover it within max_wait (3m): vSphere goes first.
        ("full, small saving, rack too slow", 60, {"min_time_saved": "6m"}, {},
         {"vsphere-dc1": 1, "rack-a": 2}),
        # Both preferred ones within max_wait (10m): the policy's order.
        ("full, small saving, long max_wait", 60, {"min_time_saved": "6m", "max_wait": "10m"},
         {}, {"rack-a": 3}),
        # The rack has been measured at 90s: it is the fastest and the preferred one.
        ("full, measured fast rack", 60, {},
         {"rack-a": ProviderStatus("rack-a", boot_time=90.0)}, {"rack-a": 3}),
        # Measured slow vSphere (7m30s): saves 30s < 60s: the policy's order...
        ("full, measured slow vsphere, no max_wait", 60, {"max_wait": None},
         {"vsphere-dc1": ProviderStatus("vsphere-dc1", boot_time=450.0)}, {"rack-a": 3}),
        # ... but no preferred placement is ready within max_wait (3m): the urgent node
        # goes to the fastest one, burst-only EC2 (2m); the rest in the policy's order.
        ("full, measured slow vsphere", 60, {},
         {"vsphere-dc1": ProviderStatus("vsphere-dc1", boot_time=450.0)},
         {"ec2-east": 1, "rack-a": 2}),
    ],
)
def test_urgent_demand_goes_to_the_fastest_placement(case: str, active: int, urgency: dict,
                                                    statuses: dict, expected: dict) -> None:
    result = plan(snapshot(nodes(4, active=active)), policy_set(pool(urgency=urgency)),
                  now=NOW, statuses=statuses)
    assert scale_outs(result) == expected, case


def test_urgent_reason_says_why_the_faster_provider_went_first() -> None:
    result = plan(snapshot(nodes(4, active=60)), policy_set(pool()), now=NOW)
    reason = result.actions[0].reason
    assert "urgent: the pool is full now (demand / active nodes' slots 1.00 >= 0.95), 60 slots needed now" \
        in reason
    assert "vsphere-dc1 (~3m, 0.06/h) ahead of rack-a (~8m, 0.02/h)" in reason
    action = result.actions[0]
    assert isinstance(action, ScaleOut)
    notes = {c.provider: c for c in action.candidates}
    assert notes["vsphere-dc1"].note == "chosen: 1 of 30 free (1 urgent: ready in ~3m)"
    # The urgent order: vSphere (3m), burst-only EC2 (2m, within max_wait but burst),
    # then the rack (8m, beyond max_wait).
    assert notes["vsphere-dc1"].rank == 1 and notes["ec2-east"].rank == 2
    assert notes["rack-a"].rank == 3
    assert notes["ec2-east"].time_to_ready == 120 and notes["ec2-east"].cost_per_hour == 0.19


def test_only_the_urgent_share_goes_fast() -> None:
    # 10 full nodes: 150 slots needed now (3 nodes) go to vSphere; the rest of the
    # ceil(600/0.65)-600=324 slots (6 nodes) follow the policy's order.
    result = plan(snapshot(nodes(10, active=60)), policy_set(pool(step={"max_up": 10})), now=NOW)
    assert scale_outs(result) == {"vsphere-dc1": 3, "rack-a": 3}


@pytest.mark.parametrize(
    ("urgency", "expected"),
    [
        # Without max_wait, EC2 waits behind the rack because it is burst-only.
        ({"max_wait": None}, {"rack-a": 3}),
        # The rack (8m) cannot cover the urgent slots within max_wait (3m): the urgent
        # node goes to the fastest placement, burst-only EC2 (2m); the rest to the rack.
        ({}, {"ec2-east": 1, "rack-a": 2}),
        # Within a 10m max_wait the rack covers it: burst-only stays last.
        ({"max_wait": "10m"}, {"rack-a": 3}),
    ],
)
def test_burst_placements_take_urgent_slots_the_preferred_cannot_cover_in_time(
        urgency: dict[str, Any], expected: dict[str, int]) -> None:
    # EC2 boots in 2m, vSphere in 3m (gone here), the rack in 8m.
    statuses = {"vsphere-dc1": ProviderStatus("vsphere-dc1", available=False,
                                              why_unavailable="circuit open")}
    result = plan(snapshot(nodes(4, active=60)), policy_set(pool(urgency=urgency)), now=NOW,
                  statuses=statuses)
    assert scale_outs(result) == expected


@pytest.mark.parametrize(
    ("ago", "expected"),
    [(600, {"vsphere-dc1": 2}), (1799, {"vsphere-dc1": 2}), (1800, {"rack-a": 2})],
)
def test_a_provider_that_refused_capacity_recently_goes_after_healthy_ones(
        ago: float, expected: dict) -> None:
    statuses = {"rack-a": ProviderStatus("rack-a", capacity_error_at=NOW - ago,
                                         capacity_error="capacity error: no hosts")}
    result = plan(snapshot(nodes(4, active=55)), policy_set(pool()), now=NOW, statuses=statuses)
    assert scale_outs(result) == expected
    if "vsphere-dc1" in expected:
        action = result.actions[0]
        assert isinstance(action, ScaleOut)
        notes = {c.provider: c.note for c in action.candidates}
        assert notes["rack-a"].startswith("not needed: healthy providers first (refused "
                                          "capacity 10m ago" if ago == 600 else "not needed")


def test_a_recently_refusing_provider_is_still_used_when_nothing_else_has_room() -> None:
    statuses = {"rack-a": ProviderStatus("rack-a", capacity_error_at=NOW - 600,
                                         capacity_error="quota error")}
    data = providers(vsphere_dc1={"quota": {"max_nodes": 1}})
    result = plan(snapshot(nodes(4, active=55)), policy_set(pool(), providers=data), now=NOW,
                  statuses=statuses)
    assert scale_outs(result) == {"vsphere-dc1": 1, "rack-a": 1}


# -- preemption -----------------------------------------------------------------------

RACK_ONLY = [{"provider": "rack-a", "blueprint": "small-bm"}]


def contest(*, low: dict | None = None, high: dict | None = None, rack: dict | None = None,
            low_nodes: int = 8) -> tuple[Any, Any]:
    """A rack of 10 nodes shared by pool high (priority 100, 2 nodes nearly full) and a
    preemptible pool low (priority 10, ``low_nodes`` nodes at 0.5)."""
    data = providers(rack_a={"quota": {"max_nodes": 10}, **(rack or {})})
    low_policy = pool(**{"name": "low", "priority": 10, "preemptible": True,
                         "selector": {"node_profile": "small", "labels": {"t": "batch"}},
                         "size": {"min": 2, "max": 20}, "placement": RACK_ONLY, **(low or {})})
    high_policy = pool(**{"name": "high", "priority": 100, "placement": RACK_ONLY,
                          "selector": {"node_profile": "small", "labels": {"t": "web"}},
                          **(high or {})})

    def labelled(n: Any, value: str) -> Any:
        return replace(n, facts=replace(n.facts, labels={"t": value}))

    fleet = [labelled(node(f"h{i}", active=58, pool_name="high"), "web") for i in (1, 2)]
    fleet += [labelled(n, "batch") for n in nodes(low_nodes, active=30, prefix="l",
                                                  pool_name="low", total=40)]
    return fleet, policy_set(high_policy, low_policy, providers=data)


def test_high_priority_pool_preempts_a_preemptible_pool_on_a_full_provider() -> None:
    fleet, policies = contest()
    result = plan(snapshot(fleet), policies, now=NOW)
    assert scale_outs(result) == {}
    (taken,) = drains_of(result)
    # high: 116 gears want ceil(116/0.65)=179 slots, has 120 -> +1 node; the rack is full.
    assert (taken.pool, taken.preempted_by, taken.cause) == ("low", "high", "preemption")
    assert "preempted by pool high (priority 100 > 10)" in taken.reason
    assert "rack-a skipped: full (quota 10/10 nodes)" in taken.reason
    assert "low keeps 7 node(s) (min 2)" in taken.reason
    assert taken.candidates[0].chosen and taken.candidates[0].identity == taken.identity
    assert result.state.preemptions[taken.identity].by_pool == "high"
    assert "preempting 1 node(s)" in result.pools["high"].summary


def test_preemption_never_takes_a_pool_below_its_min() -> None:
    fleet, policies = contest(low={"size": {"min": 8, "max": 20}})
    result = plan(snapshot(fleet), policies, now=NOW)
    assert drains_of(result) == []
    assert "would take pool low below its min 8" in result.pools["high"].summary


def test_only_preemptible_lower_priority_pools_are_victims() -> None:
    fleet, policies = contest(low={"preemptible": False})
    assert drains_of(plan(snapshot(fleet), policies, now=NOW)) == []
    fleet, policies = contest(low={"priority": 100, "name": "a-low"})
    assert drains_of(plan(snapshot(fleet), policies, now=NOW)) == []


def test_a_paused_unseen_or_stale_pool_is_never_preempted() -> None:
    fleet, policies = contest()
    assert drains_of(plan(snapshot(fleet), policies, now=NOW, paused=frozenset({"low"}))) == []
    unseen = [replace(n, state=NodeState.UNKNOWN) if n.identity == "l07" else n for n in fleet]
    assert drains_of(plan(snapshot(unseen), policies, now=NOW)) == []
    result = plan(snapshot(fleet, facts_fresh=False), policies, now=NOW)
    assert drains_of(result) == []
    assert "no preemption while facts are not fresh" in result.pools["high"].summary


def test_no_preemption_while_another_placement_has_room() -> None:
    fleet, policies = contest(high={"placement": RACK_ONLY + [
        {"provider": "ec2-east", "blueprint": "small-ec2", "burst_only": True}]})
    result = plan(snapshot(fleet), policies, now=NOW)
    assert scale_outs(result, "high") == {"ec2-east": 1}
    assert drains_of(result) == []


def test_a_preemption_in_flight_is_not_repeated_nor_reactivated_by_its_pool() -> None:
    fleet, policies = contest()
    fleet = [replace(n, state=NodeState.DRAINING) if n.identity == "l00" else n for n in fleet]
    memory = PlannerState(preemptions={"l00": Preemption("l00", "low", "high", "rack-a",
                                                         NOW - 60)})
    inflight = snapshot(fleet, drains=(drain("l00", started=NOW - 60, deadline=NOW + 600,
                                             pool_name="low"),))
    result = plan(inflight, policies, now=NOW, state=memory)
    assert drains_of(result) == []
    assert not [a for a in result.actions if isinstance(a, CancelDrain)]
    assert "1 node(s) of low draining to free quota for it" in result.pools["high"].summary
    assert "l00" in result.state.preemptions
    # Once the victim has gone, the memory goes too.
    done = snapshot([n for n in fleet if n.identity != "l00"])
    assert plan(done, policies, now=NOW + 600, state=memory).state.preemptions == {}


def test_preemption_respects_the_providers_disruption_budget() -> None:
    fleet, policies = contest(rack={"disruption_budget": {"max_draining": 1}})
    fleet = [replace(n, state=NodeState.DRAINING) if n.identity == "l07" else n for n in fleet]
    busy = snapshot(fleet, drains=(drain("l07", started=NOW - 60, deadline=NOW + 600,
                                         pool_name="low"),))
    result = plan(busy, policies, now=NOW)
    assert drains_of(result) == []
    assert "provider rack-a drain budget used" in result.pools["high"].summary


# -- burst-and-return -----------------------------------------------------------------

def bursty(*, ec2_age: float = 2 * HOUR, active: int = 33, **overrides: Any) -> list:
    """4 rack nodes and 2 EC2 burst nodes at 0.55: calm, and the rack has room."""
    return (nodes(4, active=active, created_at=NOW - 10 * HOUR)
            + nodes(2, active=active, prefix="e", provider="ec2-east", created_at=NOW - ec2_age,
                    **overrides))


def test_burst_nodes_are_replaced_on_the_preferred_placement_first() -> None:
    result = plan(snapshot(bursty()), policy_set(pool()), now=NOW)
    (make,) = [a for a in result.actions if isinstance(a, ScaleOut)]
    assert (make.provider, make.count, make.replaces) == ("rack-a", 2, ("e00", "e01"))
    assert "burst-and-return" in make.reason and "saving 0.34/h" in make.reason
    assert drains_of(result) == []  # make before break
    assert set(result.state.returns) == {"e00", "e01"}
    notes = {c.provider: c.note for c in make.candidates}
    assert notes["rack-a"].startswith("chosen: 2 of 16 free")  # placement max_nodes 20
    assert notes["ec2-east"] == "burst placement"


@pytest.mark.parametrize(
    ("case", "kwargs", "policy", "memory", "why"),
    [
        ("too young", {"ec2_age": 20 * 60}, {}, {}, None),
        ("saves too little", {}, {"burst_return": {"min_savings_per_hour": 0.5}}, {},
         "saves 0.17/h per node < 0.5"),
        ("pool at max", {}, {"size": {"min": 2, "max": 6}}, {},
         "the pool is at its max 6"),
        ("grew lately", {}, {}, {"last_scale_up": NOW - 300}, None),
        ("paused after a failed swap", {}, {}, {"returns_paused_until": NOW + 60}, None),
        ("disabled", {}, {"burst_return": {"enabled": False}}, {}, None),
    ],
)
def test_anti_churn_guards(case: str, kwargs: dict, policy: dict, memory: dict,
                           why: str | None) -> None:
    state = PlannerState(pools={"small": PoolMemory(**memory)})
    result = plan(snapshot(bursty(**kwargs)), policy_set(pool(**policy)), now=NOW, state=state)
    assert scale_outs(result) == {}, case
    if why:
        assert why in result.pools["small"].summary, result.pools["small"].summary


def swap(identity: str, *, ago: float = 300, drained: float | None = None) -> BurstReturn:
    return BurstReturn(identity=identity, pool="small", provider="rack-a",
                       requested_at=NOW - ago, drained_at=drained)


def test_the_burst_node_is_drained_once_its_replacement_is_up() -> None:
    # The two replacements have registered: 4 + 2 rack nodes and 2 EC2 at 0.41 density.
    fleet = (nodes(4, active=25, created_at=NOW - 10 * HOUR)
             + nodes(2, active=25, prefix="r", created_at=NOW - 200)
             + nodes(2, active=25, prefix="e", provider="ec2-east", created_at=NOW - 2 * HOUR))
    state = PlannerState(returns={"e00": swap("e00"), "e01": swap("e01")})
    result = plan(snapshot(fleet), policy_set(pool()), now=NOW, state=state)
    drained = drains_of(result)
    assert [(d.identity, d.cause) for d in drained] == [("e00", "burst_return"),
                                                        ("e01", "burst_return")]
    assert "its replacement on rack-a is up" in drained[0].reason
    assert result.state.returns["e00"].drained_at == NOW
    assert scale_outs(result) == {}  # no second swap while this one runs


def test_no_break_while_the_replacement_boots_or_if_the_pool_still_needs_the_node() -> None:
    state = PlannerState(returns={"e00": swap("e00")})
    waiting = snapshot(bursty(), pending=(booting("r1"),))
    result = plan(waiting, policy_set(pool()), now=NOW, state=state)
    assert drains_of(result) == []
    assert "waiting for 1 replacement(s) on rack-a before draining e00" in \
        result.pools["small"].summary
    # Up, but the pool got busier: 322 gears on 7 nodes is 0.77, fine; without e00 it
    # would be 322/360 = 0.89 > 0.80, so e00 stays.
    busy = bursty(active=46) + [node("r0", active=46, created_at=NOW - 200)]
    result = plan(snapshot(busy), policy_set(pool()), now=NOW, state=state)
    assert drains_of(result) == []
    assert "keeping e00 for now: without it projected density would be 0.89 (> 0.80)" in \
        result.pools["small"].summary


def test_a_replacement_that_was_never_made_abandons_the_swap_at_once() -> None:
    # The create failed (quota or capacity): nothing boots, nothing new is up. The burst
    # node stays, however calm the pool, and returns pause.
    state = PlannerState(returns={"e00": swap("e00", ago=0)})
    result = plan(snapshot(bursty()), policy_set(pool()), now=NOW, state=state)
    assert drains_of(result) == []
    assert result.state.returns == {}
    assert result.state.pools["small"].returns_paused_until == NOW + 1800
    assert "its replacement on rack-a was not made" in result.pools["small"].summary


def test_a_swap_that_does_not_complete_is_abandoned_and_returns_pause() -> None:
    state = PlannerState(returns={"e00": swap("e00", ago=31 * 60)})
    waiting = snapshot(bursty(), pending=(booting("r1"),))
    result = plan(waiting, policy_set(pool()), now=NOW, state=state)
    assert result.state.returns == {}
    assert result.state.pools["small"].returns_paused_until == NOW + 1800
    assert "abandoned (its replacement on rack-a is not up after 31m)" in \
        result.pools["small"].summary


def test_a_cancelled_return_drain_pauses_returns() -> None:
    state = PlannerState(returns={"e00": swap("e00", drained=NOW - 60)})
    result = plan(snapshot(bursty()), policy_set(pool()), now=NOW, state=state)
    assert "e00" not in result.state.returns
    assert result.state.pools["small"].returns_paused_until == NOW + 1800
    assert scale_outs(result) == {}


def test_a_retired_burst_node_completes_its_swap() -> None:
    state = PlannerState(returns={"e00": swap("e00", drained=NOW - 600)})
    fleet = [n for n in bursty() if n.identity != "e00"]
    result = plan(snapshot(fleet), policy_set(pool()), now=NOW, state=state)
    assert "e00" not in result.state.returns
    assert result.state.pools["small"].returns_paused_until is None


def test_growth_beats_returns_for_the_last_quota() -> None:
    # rack-a has 2 nodes of quota left. A busy higher-priority pool needs both; the
    # calm pool's swap goes to its next preferred placement instead.
    data = providers(rack_a={"quota": {"max_nodes": 8}})
    busy = pool(name="busy", priority=200, selector={"node_profile": "large"},
                placement=[{"provider": "rack-a", "blueprint": "large-bm"}],
                size={"min": 1, "max": 10})
    fleet = bursty() + nodes(2, active=15, max_gears=15, profile="large", prefix="b",
                             pool_name="busy")
    result = plan(snapshot(fleet), policy_set(busy, pool(), providers=data), now=NOW)
    assert scale_outs(result, "busy") == {"rack-a": 2}
    assert scale_outs(result, "small") == {"vsphere-dc1": 2}


# -- disruption budgets ---------------------------------------------------------------

def low_memory() -> PlannerState:
    return PlannerState(pools={"small": PoolMemory(low_since=NOW - HOUR)})


@pytest.mark.parametrize(
    ("case", "policy", "rack", "expected"),
    [
        ("scale_in.max_concurrent_drains", {}, {}, 2),
        ("pool disruption budget", {"disruption_budget": {"max_draining": 1}}, {}, 1),
        ("provider disruption budget", {}, {"disruption_budget": {"max_draining": 1}}, 1),
        # A share of the pool's 10 nodes, rounded up, at least one.
        ("30% of the pool", {"scale_in": {"max_concurrent_drains": "30%"}}, {}, 3),
        ("25% of the pool, rounded up", {"scale_in": {"max_concurrent_drains": "25%"}}, {}, 3),
        ("5% of the pool, at least one", {"scale_in": {"max_concurrent_drains": "5%"}}, {}, 1),
        ("a pool disruption budget still caps a share",
         {"scale_in": {"max_concurrent_drains": "30%"},
          "disruption_budget": {"max_draining": 1}}, {}, 1),
    ],
)
def test_scale_in_respects_every_disruption_budget(case: str, policy: dict, rack: dict,
                                                   expected: int) -> None:
    result = plan(snapshot(nodes(10, active=6)),
                  policy_set(pool(**policy), providers=providers(rack_a=rack)),
                  now=NOW, state=low_memory())
    assert len(drains_of(result)) == expected, case
    chosen = [c for c in drains_of(result)[0].candidates if c.chosen]
    assert len(chosen) == expected
    skipped = [c.note for c in drains_of(result)[0].candidates if not c.chosen]
    assert skipped and all(n.startswith("skipped: ") for n in skipped)


# -- lessons from the scenarios ---------------------------------------------------------

def test_a_spill_round_finishes_the_growth_decided_at_the_same_instant() -> None:
    # Round one aimed for 360 slots and got 300 (a provider refused one node): with 2
    # booting the pool is no longer under pressure (0.73), but the growth is finished.
    fleet = snapshot(nodes(3, active=55), pending=(booting("b1"), booting("b2")))
    state = PlannerState(pools={"small": PoolMemory(last_scale_up=NOW, growing_to=360)})
    result = plan(fleet, policy_set(pool()), now=NOW, state=state)
    assert sum(scale_outs(result).values()) == 1
    assert "finishing the growth to 360 slots decided this reconcile" in result.actions[0].reason
    # Only at that instant: the next reconcile judges the pool afresh.
    later = plan(fleet, policy_set(pool()), now=NOW + 30, state=state)
    assert scale_outs(later) == {}


def test_a_provider_that_refused_recently_gets_a_one_node_probe() -> None:
    statuses = {"rack-a": ProviderStatus("rack-a", capacity_error_at=NOW - 600,
                                         capacity_error="capacity error")}
    data = providers(vsphere_dc1={"quota": {"max_nodes": 0}})
    result = plan(snapshot(nodes(4, active=60)), policy_set(pool(), providers=data), now=NOW,
                  statuses=statuses)
    # Wants 3 (one urgent); the rack gets one probe, burst-only EC2 the rest.
    assert scale_outs(result) == {"rack-a": 1, "ec2-east": 2}
    assert "rack-a +1 (16 free, a probe, after healthy providers" in result.actions[0].reason


def test_a_node_made_after_the_error_lifts_the_penalty() -> None:
    statuses = {"rack-a": ProviderStatus("rack-a", capacity_error_at=NOW - 600,
                                         capacity_error="capacity error")}
    # 330 gears on 6 nodes (0.92, not full): +3 nodes. One rack node was made 5m ago,
    # after the error: the rack is trusted again.
    fleet = nodes(5, active=55) + [node("r1", active=55, created_at=NOW - 300)]
    result = plan(snapshot(fleet), policy_set(pool()), now=NOW, statuses=statuses)
    assert scale_outs(result) == {"rack-a": 3}
    # Made 15m ago, before the error: healthy providers first.
    fleet = nodes(5, active=55) + [node("r1", active=55, created_at=NOW - 900)]
    result = plan(snapshot(fleet), policy_set(pool()), now=NOW, statuses=statuses)
    assert scale_outs(result) == {"vsphere-dc1": 3}


def test_preemption_takes_only_relief_unless_the_pool_is_full() -> None:
    def with_high(active: int) -> list:
        fleet, _ = contest(low_nodes=6)
        high = [replace(node(f"h{i}", active=active, pool_name="high"),
                        facts=replace(fleet[0].facts, identity=f"h{i}",
                                      gears=replace(fleet[0].facts.gears, active=active,
                                                    total=active)))
                for i in range(4)]
        return high + [n for n in fleet if n.machine and n.machine.pool == "low"]

    _, policies = contest(low_nodes=6)
    # 208 gears on 4 nodes (0.87, not full): the target wants ceil(208/.65)=320 slots
    # (+2 nodes) but ceil(208/.8)=260 end the pressure (+1): one victim only.
    result = plan(snapshot(with_high(52)), policies, now=NOW)
    assert len(drains_of(result)) == 1
    # Full (240/240): facts cannot show the refused demand: the whole growth (+3) is
    # preempted, as far as low's drain budget (2) allows.
    result = plan(snapshot(with_high(60)), policies, now=NOW)
    assert len(drains_of(result)) == 2


def test_a_timed_out_drain_holds_back_new_drains() -> None:
    fleet = nodes(9, active=6) + [replace(node("d1", active=2, total=10),
                                          state=NodeState.DRAINING)]
    overdue = snapshot(fleet, drains=(drain("d1", started=NOW - 1200, deadline=NOW),))
    state = PlannerState(pools={"small": PoolMemory(low_since=NOW - HOUR)})
    result = plan(overdue, policy_set(pool()), now=NOW, state=state)
    assert [type(a) for a in result.actions] == [CancelDrain]
    assert "a drain just passed its deadline" in result.pools["small"].summary
    assert result.state.pools["small"].last_scale_down == NOW


def test_explain_gives_every_drain_its_candidates() -> None:
    from gearshift.explain import plan_to_dict, plan_to_text

    fleet, policies = contest()
    preemption = plan_to_dict(plan(snapshot(fleet), policies, now=NOW))
    (drained,) = preemption["actions"]
    assert (drained["kind"], drained["cause"], drained["preempted_by"]) == \
        ("drain", "preemption", "high")
    assert drained["candidates"][0]["chosen"] is True
    assert drained["candidates"][0]["note"].startswith("chosen: pool low (priority 10, "
                                                       "preemptible) node on rack-a")
    scale_in = plan(snapshot(nodes(10, active=6)), policy_set(pool()), now=NOW,
                    state=PlannerState(pools={"small": PoolMemory(low_since=NOW - HOUR)}))
    text = plan_to_text(scale_in)
    assert "candidate n00 (rack-a): chosen: fewest_gears (6 gears, rack-a)" in text
    assert "candidate n02 (rack-a): skipped: step/drain budget (2) or floor 2 reached" in text
    swap = plan_to_dict(plan(snapshot(bursty()), policy_set(pool()), now=NOW))
    (make,) = swap["actions"]
    assert list(make["replaces"]) == ["e00", "e01"]
    assert [c["note"] for c in make["candidates"]][-1] == "burst placement"
