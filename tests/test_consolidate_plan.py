"""Consolidation in the pure planner: when a swap starts, which guards stop it, and how
it ends (make, then break), as tables over hand-built fleets."""

from __future__ import annotations

from typing import Any

import pytest

from builders import PROVIDERS, booting, nodes, policy_set, pool, snapshot
from gearshift.decide import plan
from gearshift.model import Drain, ScaleOut
from gearshift.plan import BurstReturn, Plan, PlannerState, PoolMemory

NOW = 1_800_000_000.0
HOUR = 3600.0


def fleet(*, active: int = 33, vsphere_age: float = 2 * HOUR) -> list[Any]:
    """4 rack nodes and 2 vSphere nodes (0.06/h vs 0.02/h for the same 60 slots) at 0.55:
    calm, and the rack has room (placement max_nodes 20, quota 24)."""
    return (nodes(4, active=active, created_at=NOW - 10 * HOUR)
            + nodes(2, active=active, prefix="v", provider="vsphere-dc1",
                    created_at=NOW - vsphere_age))


def swaps(result: Plan) -> list[ScaleOut]:
    return [a for a in result.actions if isinstance(a, ScaleOut) and a.replaces]


def test_dear_nodes_are_replaced_on_the_cheapest_placement_with_room() -> None:
    result = plan(snapshot(fleet()), policy_set(pool()), now=NOW)
    (make,) = swaps(result)
    assert (make.provider, make.count, make.replaces) == ("rack-a", 2, ("v00", "v01"))
    assert make.reason.startswith(
        "pool small: consolidate: rack-a 0.02/h has room (16 free); replacing vsphere-dc1 "
        "node v00 0.06/h, saves 0.04/h; vsphere-dc1 node v01 0.06/h, saves 0.04/h; "
        "0.08/h saved in all")
    assert "make-before-break" in make.reason
    assert not [a for a in result.actions if isinstance(a, Drain)]  # make before break
    assert {i: r.cause for i, r in result.state.returns.items()} == {
        "v00": "consolidation", "v01": "consolidation"}
    notes = {c.provider: c.note for c in make.candidates}
    assert notes["rack-a"] == "chosen: 2 of 16 free, 0.000333/h per slot"
    assert notes["vsphere-dc1"] == "skipped: 0.001/h per slot, not cheaper"


FULL_RACK = {**PROVIDERS, "providers": [
    {**p, "quota": {"max_nodes": 4}} if p["name"] == "rack-a" else p
    for p in PROVIDERS["providers"]]}


@pytest.mark.parametrize(
    ("case", "kwargs", "policy", "memory", "providers", "why"),
    [
        ("too young", {"vsphere_age": 20 * 60}, {}, {}, None,
         "consolidate: 2 node(s) on dearer slots younger than 30m"),
        ("saves too little", {}, {"consolidation": {"min_savings_per_hour": 0.05}}, {}, None,
         "consolidate: not worth it: replacing v00 on rack-a saves 0.04/h < "
         "min_savings_per_hour 0.05"),
        ("pool at max", {}, {"size": {"min": 2, "max": 6}}, {}, None,
         "the pool is at its max 6: no room to make before breaking"),
        ("no cheaper room", {}, {}, {}, FULL_RACK,
         "consolidate: 2 node(s) on dearer slots, no cheaper placement has room "
         "(rack-a full (quota 4/4 nodes))"),
        ("grew lately", {}, {}, {"last_scale_up": NOW - 300}, None, None),
        ("paused after a failed swap", {}, {}, {"returns_paused_until": NOW + 60}, None, None),
        # 300/360 is 0.83 > 0.80: the pool grows, it does not swap.
        ("under pressure", {"active": 50}, {}, {}, None, "growing"),
        # 60/360 is 0.17 < 0.45 and a node can go: scale-in drops the dear slots itself.
        ("could shrink instead", {"active": 10}, {}, {"low_since": NOW - 60}, None, None),
        ("disabled", {}, {"consolidation": {"enabled": False}}, {}, None, None),
    ],
)
def test_guards(case: str, kwargs: dict[str, Any], policy: dict[str, Any],
                memory: dict[str, Any], providers: dict[str, Any] | None,
                why: str | None) -> None:
    state = PlannerState(pools={"small": PoolMemory(**memory)})
    result = plan(snapshot(fleet(**kwargs)), policy_set(pool(**policy), providers=providers),
                  now=NOW, state=state)
    assert swaps(result) == [], case
    assert result.state.returns == {}
    if why:
        assert why in result.pools["small"].summary, result.pools["small"].summary


def swap(identity: str, *, ago: float = 600, drained: float | None = None) -> BurstReturn:
    return BurstReturn(identity=identity, pool="small", provider="rack-a",
                       requested_at=NOW - ago, drained_at=drained, cause="consolidation")


def test_the_dear_node_is_drained_once_its_replacement_is_up() -> None:
    # Two rack replacements registered since the swap began: 8 nodes at 198/480.
    up = fleet() + nodes(2, active=0, prefix="r", created_at=NOW - 100)
    state = PlannerState(returns={"v00": swap("v00"), "v01": swap("v01")})
    result = plan(snapshot(up), policy_set(pool()), now=NOW, state=state)
    drained = [a for a in result.actions if isinstance(a, Drain)]
    assert [(d.identity, d.cause) for d in drained] == [("v00", "consolidation"),
                                                        ("v01", "consolidation")]
    assert drained[0].reason.startswith(
        "pool small: consolidate: its replacement on rack-a is up")
    assert "draining vsphere-dc1 node v00" in drained[0].reason
    assert swaps(result) == []  # one batch at a time


def test_no_break_while_replacements_boot_and_a_missing_one_abandons() -> None:
    state = PlannerState(returns={"v00": swap("v00")})
    waiting = plan(snapshot(fleet(), pending=(booting("r9"),)), policy_set(pool()), now=NOW,
                   state=state)
    assert not [a for a in waiting.actions if isinstance(a, Drain)]
    assert "consolidate: waiting for 1 replacement(s) on rack-a before draining v00" in \
        waiting.pools["small"].summary
    # Nothing booting, nothing new up: the create failed; the node stays, swaps pause.
    gone = plan(snapshot(fleet()), policy_set(pool()), now=NOW, state=state)
    assert gone.state.returns == {}
    assert gone.state.pools["small"].returns_paused_until == NOW + 1800
    assert "consolidate of v00 abandoned (its replacement on rack-a was not made)" in \
        gone.pools["small"].summary


def test_burst_nodes_go_home_before_dear_ones_move() -> None:
    both = fleet() + nodes(1, active=33, prefix="e", provider="ec2-east",
                           created_at=NOW - 2 * HOUR)
    result = plan(snapshot(both), policy_set(pool()), now=NOW)
    (make,) = swaps(result)
    assert make.replaces == ("e00",) and "burst-and-return" in make.reason
    assert result.state.returns["e00"].cause == "burst_return"
