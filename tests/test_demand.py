"""Demand that did not fit (issue 13), table by table, all pure: the unplaced-gears report
sizing a scale-out, geometric growth without it, urgent slots within ``max_wait``, and
the wire model's bounds."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from builders import PROVIDERS, booting, nodes, policy_set, pool, snapshot
from gearshift.decide import plan
from gearshift.model import CapacityRequest, ScaleOut
from gearshift.observe.requests import RequestBook
from gearshift.observe.unplaced import parse_unplaced, record_unplaced
from gearshift.plan import PlannerState, PoolMemory

NOW = 1_800_000_000.0


def unplaced(gears: int, *, pool_name: str = "small", source: str = "broker") -> CapacityRequest:
    return CapacityRequest(request_id=f"unplaced:{source}:{pool_name}", pool=pool_name,
                           gears=gears, expires_at=NOW + 120, unplaced=True)


def scale_outs(result: Any) -> dict[str, int]:
    return {a.provider: a.count for a in result.actions if isinstance(a, ScaleOut)}


# -- the report sizes the scale-out in one reconcile ----------------------------------

@pytest.mark.parametrize(
    ("reported", "max_up", "expected"),
    [
        # 240/240 active (full) and nothing reported: the visible want is
        # ceil(240/0.65)=370 -> 130 short -> 3 nodes (1 urgent on vSphere).
        (0, 20, {"vsphere-dc1": 1, "rack-a": 2}),
        # 300 unplaced: demand 540 -> want 831 -> 591 short -> 10 nodes; the urgent
        # ceil(540/0.8)-240=435 slots (8 nodes) on vSphere (3m, within max_wait), the
        # rest in the policy's order.
        (300, 20, {"vsphere-dc1": 8, "rack-a": 2}),
        # Still within step.max_up.
        (300, 5, {"vsphere-dc1": 5}),
        # A large report: 10 000 unplaced wants 259 more nodes; size.max 40 caps it at
        # 36, all urgent: vSphere's 30, then burst-only EC2 (2m, within max_wait).
        (10_000, 40, {"vsphere-dc1": 30, "ec2-east": 6}),
    ],
)
def test_unplaced_gears_size_the_scale_out(reported: int, max_up: int,
                                           expected: dict[str, int]) -> None:
    requests = (unplaced(reported),) if reported else ()
    result = plan(snapshot(nodes(4, active=60), requests=requests),
                  policy_set(pool(step={"max_up": max_up, "max_down": 2})), now=NOW)
    assert scale_outs(result) == expected


def test_the_reason_says_how_the_step_was_sized() -> None:
    result = plan(snapshot(nodes(4, active=60), requests=(unplaced(300),)),
                  policy_set(pool(step={"max_up": 20, "max_down": 2})), now=NOW)
    reason = result.actions[0].reason
    assert "+10: 130 gears short + 300 unplaced reported by broker" in reason
    assert "300 unplaced reported by broker" in result.pools["small"].summary


def test_reports_add_up_across_sources_and_count_as_demand_not_as_a_hold() -> None:
    # Two brokers report 150 each: the same as one report of 300.
    two = plan(snapshot(nodes(4, active=60), requests=(unplaced(150, source="b1"),
                                                        unplaced(150, source="b2"))),
               policy_set(pool(step={"max_up": 20, "max_down": 2})), now=NOW)
    assert scale_outs(two) == {"vsphere-dc1": 8, "rack-a": 2}
    # An expired report counts for nothing.
    stale = CapacityRequest(request_id="unplaced:b:small", pool="small", gears=300,
                            expires_at=NOW, unplaced=True)
    result = plan(snapshot(nodes(4, active=60), requests=(stale,)),
                  policy_set(pool(step={"max_up": 20, "max_down": 2})), now=NOW)
    assert scale_outs(result) == {"vsphere-dc1": 1, "rack-a": 2}


# -- geometric growth without a report ------------------------------------------------

@pytest.mark.parametrize(
    ("case", "fleet", "memory", "requests", "nodes_added", "full_step"),
    [
        # Full, first time: the visible shortfall (3 nodes), at least 1; remembered.
        ("full, first step", nodes(4, active=60), PoolMemory(), (), 3, 3),
        # Still full once the last step (3) is up: twice it.
        ("full again", nodes(4, active=60), PoolMemory(full_step=3), (), 6, 6),
        ("full a third time", nodes(4, active=60), PoolMemory(full_step=6), (), 12, 12),
        # Capped by step.max_up (20); the cap is what is remembered.
        ("capped", nodes(4, active=60), PoolMemory(full_step=16), (), 20, 20),
        # Nodes still booting: no doubling (they count as capacity); the step is kept.
        ("booting", nodes(4, active=60) , PoolMemory(full_step=6), ("pending",), 0, 6),
        # A broker report says how much: sized by it, no guess, the step forgotten.
        ("reported", nodes(4, active=60), PoolMemory(full_step=6), ("unplaced",), 10, 0),
        # A hook reporting 0 is watching: nothing refused, so the visible shortfall only.
        ("reported 0", nodes(4, active=60), PoolMemory(full_step=6), ("zero",), 3, 0),
        # No longer full (0.83 < 0.95): the normal rules (68 short), the step reset.
        ("not full", nodes(4, active=50), PoolMemory(full_step=6), (), 2, 0),
    ],
)
def test_a_full_pool_without_a_report_doubles_its_step(
        case: str, fleet: list[Any], memory: PoolMemory, requests: tuple[str, ...],
        nodes_added: int, full_step: int) -> None:
    extra: dict[str, Any] = {}
    if "pending" in requests:
        extra["pending"] = (booting("b1"),)
    if "unplaced" in requests:
        extra["requests"] = (unplaced(300),)
    if "zero" in requests:
        extra["requests"] = (unplaced(0),)
    state = PlannerState(pools={"small": memory})
    result = plan(snapshot(fleet, **extra), policy_set(pool(step={"max_up": 20, "max_down": 2})),
                  now=NOW, state=state)
    assert sum(scale_outs(result).values()) == nodes_added, case
    assert result.state.pool("small").full_step == full_step, case


def test_the_geometric_reason_says_so() -> None:
    state = PlannerState(pools={"small": PoolMemory(full_step=3)})
    result = plan(snapshot(nodes(4, active=60)),
                  policy_set(pool(step={"max_up": 20, "max_down": 2})), now=NOW, state=state)
    reason = result.actions[0].reason
    assert "no unplaced gears reported: step 6 nodes (twice the last)" in reason
    assert "+6: full, no broker report: 6 node step" in reason


# -- urgent slots: within max_wait, else the fastest (burst-only included) ------------

def flash_providers(*, b_quota: int = 30) -> dict[str, Any]:
    """A (3.5m, cheap, preferred), B (2m), EC2 (90s, burst-only): the issue's pool."""
    data = copy.deepcopy(PROVIDERS)
    data["providers"] = [
        {"name": "vsphere-a", "kind": "vsphere", "quota": {"max_nodes": 200},
         "cost_per_hour": 0.05, "boot_time": "3m30s"},
        {"name": "vsphere-b", "kind": "vsphere", "quota": {"max_nodes": b_quota},
         "cost_per_hour": 0.06, "boot_time": "2m"},
        {"name": "ec2-east", "kind": "ec2", "quota": {"max_nodes": 100},
         "cost_per_hour": 0.19, "boot_time": "90s"},
    ]
    data["blueprints"] = [
        {"name": f"web-{p}", "provider": p, "node_profile": "small", "max_active_gears": 100}
        for p in ("vsphere-a", "vsphere-b", "ec2-east")]
    return data


def flash_pool(urgency: dict[str, Any]) -> Any:
    return pool(size={"min": 2, "max": 200}, step={"max_up": 40, "max_down": 2},
                urgency=urgency, placement=[
                    {"provider": "vsphere-a", "blueprint": "web-vsphere-a"},
                    {"provider": "vsphere-b", "blueprint": "web-vsphere-b"},
                    {"provider": "ec2-east", "blueprint": "web-ec2-east", "burst_only": True}])


@pytest.mark.parametrize(
    ("case", "urgency", "expected"),
    [
        # The issue: 1 200 gears flashing to 9 500 put the whole max_up on the 3.5m
        # placement and skipped the 2m one as "not needed" (here: min_time_saved 2m,
        # no max_wait).
        ("before: no max_wait", {"min_time_saved": "2m", "max_wait": None},
         {"vsphere-a": 40}),
        # A (3.5m) cannot cover it within 3m: B (2m) first, then burst-only EC2 (90s).
        ("max_wait 3m", {"min_time_saved": "2m"}, {"vsphere-b": 30, "ec2-east": 10}),
        # Within 4m both preferred ones cover it: the policy's order (B saves < 2m).
        ("max_wait 4m", {"min_time_saved": "2m", "max_wait": "4m"}, {"vsphere-a": 40}),
        # ... and with the default min_time_saved (1m), B (90s sooner) goes first.
        ("max_wait 4m, min_time_saved 1m", {"max_wait": "4m"},
         {"vsphere-b": 30, "vsphere-a": 10}),
        # Nothing within 1m: fastest first, burst-only EC2 included.
        ("max_wait 1m", {"max_wait": "1m"}, {"ec2-east": 40}),
    ],
)
def test_urgent_slots_go_where_they_are_ready_within_max_wait(
        case: str, urgency: dict[str, Any], expected: dict[str, int]) -> None:
    fleet = nodes(12, active=100, max_gears=100, provider="vsphere-a")
    result = plan(snapshot(fleet, requests=(unplaced(8300),)),
                  policy_set(flash_pool(urgency), providers=flash_providers()), now=NOW)
    assert scale_outs(result) == expected, case
    if case == "max_wait 3m":
        action = result.actions[0]
        assert isinstance(action, ScaleOut)
        notes = {c.provider: c.note for c in action.candidates}
        assert notes["vsphere-b"] == "chosen: 30 of 30 free (30 urgent: ready in ~2m)"
        assert "vsphere-b (~2m, 0.06/h) ahead of vsphere-a (~3m30s, 0.05/h)" in action.reason


# -- the wire model -------------------------------------------------------------------

@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"pool": "small", "gears": -1}, "gears: must be an integer from 0 to 100000"),
        ({"pool": "small", "gears": 100_001}, "gears: must be an integer from 0 to 100000"),
        ({"pool": "small", "gears": "5"}, "gears: must be an integer"),
        ({"pool": "nope", "gears": 5}, "pool: must name a pool"),
        ({"pool": "small", "gears": 5, "source": "a b"}, "source: must be 1 to 64"),
        ({"pool": "small", "gears": 5, "source": "x" * 65}, "source: must be 1 to 64"),
        ({"pool": "small", "gears": 5, "ttl": "soon"}, "ttl: must be a duration"),
        ({"pool": "small", "gears": 5, "id": "x"}, "unknown field(s): id"),
    ],
)
def test_bad_reports_are_refused_with_a_clear_error(body: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_unplaced(body, pools={"small"})
    assert problem in str(caught.value)


def test_the_latest_report_of_a_source_replaces_the_last_and_expires() -> None:
    book = RequestBook()
    parse = lambda body: parse_unplaced(body, pools={"small"})  # noqa: E731
    record_unplaced(book, parse({"pool": "small", "gears": 300, "source": "b1"}), now=NOW)
    record_unplaced(book, parse({"pool": "small", "gears": 200, "source": "b1"}), now=NOW)
    record_unplaced(book, parse({"pool": "small", "gears": 50, "source": "b2", "ttl": "30s"}),
                    now=NOW)
    assert sorted(r.gears for r in book.active(NOW)) == [50, 200]
    assert all(r.unplaced for r in book.active(NOW))
    assert [r.gears for r in book.active(NOW + 30)] == [200]  # b2's expired
    # 0 replaces it too, and stays: a hook watching, nothing refused.
    record_unplaced(book, parse({"pool": "small", "gears": 0, "source": "b1"}), now=NOW + 40)
    assert [r.gears for r in book.active(NOW + 40)] == [0]
    assert book.active(NOW + 160) == []
    # A ttl above an hour is capped at an hour: a level, renewed by its hook.
    until = record_unplaced(book, parse({"pool": "small", "gears": 9, "ttl": "7d"}), now=NOW)
    assert until == NOW + 3600
    with pytest.raises(TypeError):
        parse_unplaced([1], pools=None)
