"""Warm pools in the pure planner (``decide.warm``): park instead of retire, resume before
create, fill to ``min``, destroy idle and surplus machines, follow a resume through."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from builders import node, policy_set, pool, snapshot
from gearshift.decide import plan
from gearshift.model import (
    CancelDrain,
    DrainProgress,
    Machine,
    Node,
    NodeState,
    Park,
    ParkedMachine,
    ProviderStatus,
    Resume,
    Retire,
    RetireParked,
    ScaleOut,
)

NOW = 1_800_000_000.0
HOUR = 3600.0
STATUSES = {name: ProviderStatus(name=name) for name in ("rack-a", "vsphere-dc1", "ec2-east")}


def warm_pool(*, warm: dict[str, Any] | None = None, **overrides: Any) -> Any:
    """The builders' pool with a warm pool on its rack placement."""
    return pool(placement=[
        {"provider": "rack-a", "blueprint": "small-bm", "max_nodes": 20,
         "warm": warm if warm is not None else {"max": 3}},
        {"provider": "vsphere-dc1", "blueprint": "small-vmw", "max_nodes": 30},
    ], **overrides)


def ours(identity: str, *, active: int, total: int | None = None,
         state: NodeState = NodeState.ACTIVE, last_seen: float = NOW,
         provider: str = "rack-a", blueprint: str = "small-bm") -> Node:
    built = node(identity, active=active, total=total, state=state, provider=provider)
    machine = Machine(provider=provider, machine_id=f"m-{identity}", name=identity,
                      blueprint=blueprint, pool="small", created_at=0.0)
    return replace(built, machine=machine, last_seen=last_seen)


def parked(identity: str, *, phase: str = "parked", since: float = NOW - HOUR,
           provider: str = "rack-a", blueprint: str = "small-bm") -> ParkedMachine:
    return ParkedMachine(identity=identity, pool="small", provider=provider,
                         machine_id=f"m-{identity}", blueprint=blueprint, max_active_gears=60,
                         phase=phase, since=since)


def silent(identity: str, *, since: float = NOW - HOUR) -> Node:
    """A parked node as the fleet model shows it: silent, parked."""
    return ours(identity, active=0, total=0, state=NodeState.PARKED, last_seen=since - 60)


def drained(identity: str, *, cause: str | None = "scale_in") -> tuple[Node, DrainProgress]:
    return (ours(identity, active=0, total=0, state=NodeState.DRAINING),
            DrainProgress(identity=identity, pool="small", started_at=NOW - 600,
                          deadline=NOW + 600, phase="moving", cause=cause))  # type: ignore[arg-type]


def run(policy: Any, node_list: list[Node], **kwargs: Any) -> list[Any]:
    taken = snapshot(node_list, at=NOW, **kwargs)
    return list(plan(taken, policy_set(policy), now=NOW, statuses=STATUSES).actions)


def steady(count: int = 4) -> list[Node]:
    """Active nodes at the target density: neither grow nor shrink."""
    return [ours(f"a{i}", active=39) for i in range(count)]


@pytest.mark.parametrize(("cause", "kept", "parks"), [
    ("scale_in", 0, True),
    (None, 2, True),  # a drain journaled before causes were: a scale-in
    ("scale_in", 3, False),  # the warm pool is full (max 3): retired
    ("consolidation", 0, False),  # moved to a cheaper placement: must go
    ("burst_return", 0, False),
    ("preemption", 0, False),  # frees quota for another pool: a stopped machine holds it
])
def test_a_drained_node_is_parked_while_its_warm_pool_has_room(
        cause: str | None, kept: int, parks: bool) -> None:
    gone, drain = drained("d1", cause=cause)
    already = [parked(f"p{i}") for i in range(kept)]
    actions = run(warm_pool(), [*steady(), gone, *(silent(p.identity) for p in already)],
                  drains=(drain,), parked=tuple(already))
    mine = [a for a in actions if getattr(a, "identity", None) == "d1"]
    assert len(mine) == 1
    assert isinstance(mine[0], Park if parks else Retire), mine
    if parks:
        assert f"({kept + 1} of at most 3)" in mine[0].reason


def test_no_warm_pool_no_park() -> None:
    gone, drain = drained("d1")
    actions = run(pool(), [*steady(), gone], drains=(drain,))
    assert [type(a) for a in actions if getattr(a, "identity", None) == "d1"] == [Retire]


def test_a_growing_pool_resumes_parked_machines_before_creating() -> None:
    warm = [parked("p0", since=NOW - 2 * HOUR), parked("p1", since=NOW - HOUR)]
    hot = [ours(f"a{i}", active=57) for i in range(6)]  # 0.95: wants 527 slots, has 360
    actions = run(warm_pool(), [*hot, *(silent(p.identity) for p in warm)], parked=tuple(warm))
    resumes = [a for a in actions if isinstance(a, Resume)]
    creates = [a for a in actions if isinstance(a, ScaleOut)]
    # The newest parked first, both before any new node; the rest is created.
    assert [a.identity for a in resumes] == ["p1", "p0"]
    assert "resuming p1 from the rack-a/small-bm warm pool (parked 1h" in resumes[0].reason
    assert "ready in about 8m, a new node in 8m" in resumes[0].reason
    assert creates and sum(a.count for a in creates) + 2 <= 5  # within step.max_up
    assert actions.index(resumes[-1]) < actions.index(creates[0])


def test_resumes_only_what_the_shortfall_needs() -> None:
    warm = [parked(f"p{i}", since=NOW - HOUR - i) for i in range(3)]
    slightly_hot = [ours(f"a{i}", active=50) for i in range(4)]  # 200/240 = 0.83
    actions = run(warm_pool(), [*slightly_hot, *(silent(p.identity) for p in warm)],
                  parked=tuple(warm))
    resumes = [a for a in actions if isinstance(a, Resume)]
    # 200 gears want ceil(200 / 0.65) = 308 slots: 68 more, two nodes of 60.
    assert len(resumes) == 2 and not [a for a in actions if isinstance(a, ScaleOut)]


def test_an_unavailable_provider_is_not_resumed_from() -> None:
    warm = [parked("p0")]
    hot = [ours(f"a{i}", active=57) for i in range(4)]
    taken = snapshot([*hot, silent("p0")], at=NOW, parked=tuple(warm))
    statuses = {**STATUSES, "rack-a": ProviderStatus(name="rack-a", available=False)}
    actions = plan(taken, policy_set(warm_pool()), now=NOW, statuses=statuses).actions
    assert not [a for a in actions if isinstance(a, Resume)]


@pytest.mark.parametrize(("count", "idle", "warm", "retired"), [
    (3, 2 * HOUR, {"max": 3, "max_idle": "1d"}, 0),
    (3, 2 * 86400, {"max": 3, "max_idle": "1d"}, 3),  # all idle too long
    (3, 2 * 86400, {"min": 2, "max": 3, "max_idle": "1d"}, 1),  # min kept however idle
    (3, 2 * HOUR, {"max": 1}, 2),  # more than max (the policy changed): the oldest go
])
def test_idle_and_surplus_parked_machines_are_destroyed(
        count: int, idle: float, warm: dict[str, Any], retired: int) -> None:
    machines = [parked(f"p{i}", since=NOW - idle - i) for i in range(count)]
    actions = run(warm_pool(warm=warm), [*steady(), *(silent(p.identity) for p in machines)],
                  parked=tuple(machines))
    gone = [a for a in actions if isinstance(a, RetireParked)]
    assert len(gone) == retired
    # oldest first (p2 was parked first)
    assert [a.identity for a in gone] == [f"p{i}" for i in range(count - 1, count - 1 - retired, -1)]


def test_a_placement_without_a_warm_pool_any_more_destroys_its_parked_machines() -> None:
    machines = [parked("p0")]
    actions = run(pool(), [*steady(), silent("p0")], parked=tuple(machines))
    assert [(type(a), a.identity) for a in actions if isinstance(a, RetireParked)] == [
        (RetireParked, "p0")]


def test_a_resumed_node_is_reactivated_only_on_facts_newer_than_its_start() -> None:
    started = NOW - 120
    resuming = parked("p0", phase="resuming", since=started)
    old_facts = ours("p0", active=0, total=0, state=NodeState.DRAINING, last_seen=started - 5)
    new_facts = replace(old_facts, last_seen=started + 90)
    for shown, expect in ((old_facts, []), (new_facts, [CancelDrain])):
        actions = run(warm_pool(), [*steady(), shown], parked=(resuming,))
        assert [type(a) for a in actions if getattr(a, "identity", "") == "p0"] == expect


def test_a_resume_that_never_comes_back_is_destroyed_after_its_timeout() -> None:
    late = parked("p0", phase="resuming", since=NOW - 700)
    actions = run(warm_pool(), [*steady(), silent("p0", since=NOW - 700)], parked=(late,))
    gone = [a for a in actions if isinstance(a, RetireParked)]
    assert [a.identity for a in gone] == ["p0"] and "publishes no facts" in gone[0].reason
    # ... but never while the fact source is down: silence proves nothing then
    taken = snapshot([*steady(), silent("p0", since=NOW - 700)], at=NOW, parked=(late,),
                     facts_fresh=False)
    assert not [a for a in plan(taken, policy_set(warm_pool()), now=NOW,
                                statuses=STATUSES).actions if isinstance(a, RetireParked)]


def test_a_stop_that_did_not_finish_is_tried_again() -> None:
    stopping = parked("p0", phase="parking")
    actions = run(warm_pool(), [*steady(), silent("p0")], parked=(stopping,))
    assert [(type(a), a.identity) for a in actions if getattr(a, "identity", "") == "p0"] == [
        (Park, "p0")]


def test_a_warm_pool_below_min_is_filled_and_counts_what_is_on_its_way() -> None:
    policy = warm_pool(warm={"min": 3, "max": 4})
    fills = [a for a in run(policy, steady()) if isinstance(a, ScaleOut)]
    assert [(a.provider, a.count, a.warm) for a in fills] == [("rack-a", 3, True)]
    # one being made, one parked, one made and draining: nothing more to make
    on_the_way = [parked("f0", phase="filling"), parked("p0")]
    made, drain = drained("w0", cause="warm")
    actions = run(policy, [*steady(), silent("p0"), made], parked=tuple(on_the_way),
                  drains=(drain,))
    assert not [a for a in actions if isinstance(a, ScaleOut)]
    # the one made and drained is parked, not retired (it is counted once)
    assert [type(a) for a in actions if getattr(a, "identity", "") == "w0"] == [Park]


def test_filling_stays_within_the_placement_quota() -> None:
    policy = warm_pool(warm={"min": 5, "max": 5})
    full = [ours(f"a{i}", active=39) for i in range(18)]  # 18 of max_nodes 20 on the rack
    fills = [a for a in run(policy, full) if isinstance(a, ScaleOut) and a.warm]
    assert [a.count for a in fills] == [2]


def test_parked_nodes_count_for_nothing_but_quota() -> None:
    """A parked node is no capacity and no unknown node (so it never holds scale-in)."""
    machines = [parked(f"p{i}") for i in range(2)]
    cold = [ours(f"a{i}", active=5) for i in range(6)]  # density 0.08: shrink
    taken = snapshot([*cold, *(silent(p.identity) for p in machines)], at=NOW,
                     parked=tuple(machines))
    result = plan(taken, policy_set(warm_pool()), now=NOW, statuses=STATUSES)
    evaluation = result.pools["small"]
    assert evaluation.unknown == 0 and evaluation.active == 6
    assert evaluation.capacity_gears == 6 * 60


def two_warm_pools(*, rack_max: int = 20) -> Any:
    return pool(placement=[
        {"provider": "rack-a", "blueprint": "small-bm", "max_nodes": rack_max,
         "warm": {"max": 3}},
        {"provider": "vsphere-dc1", "blueprint": "small-vmw", "max_nodes": 30,
         "warm": {"max": 3}},
    ])


@pytest.mark.parametrize(("gears", "rack_max", "resumed", "created_on"), [
    # Growing, not full: a new rack node (preferred) beats running the dearer vSphere one.
    (51, 20, [], "rack-a"),
    # Full now (0.95): the warm pool is for this, whatever the placement (and urgency puts
    # the rest on the faster vSphere too).
    (57, 20, ["v1"], "vsphere-dc1"),
    # The rack has no room for the pool: the vSphere machine goes first, new ones after it.
    (51, 6, ["v1"], "vsphere-dc1"),
])
def test_a_parked_machine_of_a_later_placement_waits_while_an_earlier_one_has_room(
        gears: int, rack_max: int, resumed: list[str], created_on: str | None) -> None:
    hot = [ours(f"a{i}", active=gears) for i in range(6)]
    warm = parked("v1", provider="vsphere-dc1", blueprint="small-vmw")
    actions = run(two_warm_pools(rack_max=rack_max), [*hot, silent("v1")], parked=(warm,))
    assert [a.identity for a in actions if isinstance(a, Resume)] == resumed
    creates = [a for a in actions if isinstance(a, ScaleOut)]
    assert (creates[0].provider if creates else None) == created_on


def test_a_full_pool_resumes_the_fastest_parked_machine_first() -> None:
    hot = [ours(f"a{i}", active=57) for i in range(6)]
    warm = (parked("r1"), parked("v1", provider="vsphere-dc1", blueprint="small-vmw"))
    fast = {"rack-a": ProviderStatus(name="rack-a", resume_time=300.0),
            "vsphere-dc1": ProviderStatus(name="vsphere-dc1", resume_time=60.0),
            "ec2-east": ProviderStatus(name="ec2-east")}
    taken = snapshot([*hot, silent("r1"), silent("v1")], at=NOW, parked=warm)
    result = plan(taken, policy_set(two_warm_pools()), now=NOW, statuses=fast)
    assert [a.identity for a in result.actions if isinstance(a, Resume)] == ["v1", "r1"]


def test_a_stopped_machine_dearer_than_a_running_one_is_refused() -> None:
    from pydantic import ValidationError

    from gearshift.policy.schema import ProviderSpec

    with pytest.raises(ValidationError, match=r"stopped_cost_per_hour \(0.5\) must not exceed"):
        ProviderSpec.model_validate({"name": "x", "kind": "ec2", "quota": {"max_nodes": 1},
                                     "cost_per_hour": 0.2, "stopped_cost_per_hour": 0.5})
