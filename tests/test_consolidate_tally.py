"""Consolidation's fast path (``decide.dear.dear_tally``) decides what the scan of
every node decides: tables of fleets where it must read the tallies, where it must fall
back to the scan, and the case that broke an earlier bound taken from blueprints alone (a
node whose own slots make it dearer than every blueprint); then random fleets planned
twice, with the fast path and with the scan forced, giving the same plan."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builders import PROVIDERS, node, nodes, policy_set, pool, snapshot
from gearshift.decide import consolidate, dear, plan
from gearshift.decide.budget import DrainBudget
from gearshift.decide.context import PlanContext
from gearshift.decide.pools import read_fleet
from gearshift.model import FleetSnapshot, Node, NodeState, ScaleOut
from gearshift.plan import BurstReturn, Plan, PlannerState, PoolMemory
from gearshift.policy.pricing import slot_cost
from gearshift.policy.schema import PolicySet

NOW = 1_800_000_000.0
HOUR = 3600.0
OLD = NOW - 10 * HOUR
# The rack holds exactly the nodes a fleet puts there: no room on the cheapest blueprint.
FULL_RACK = {**PROVIDERS, "providers": [
    {**p, "quota": {"max_nodes": 5}} if p["name"] == "rack-a" else p
    for p in PROVIDERS["providers"]]}
CHEAP_MOVES = {"consolidation": {"min_savings_per_hour": 0.005}}


def context(snap: FleetSnapshot, policies: PolicySet, *,
            taken: frozenset[str] = frozenset()) -> PlanContext:
    assert policies.providers is not None
    reading = read_fleet(snap, policies.pools)
    ctx = PlanContext(snapshot=snap, providers=policies.providers, statuses={}, now=NOW,
                      nodes_by_id=snap.by_id, views=reading.views, usage=reading.usage,
                      budget=DrainBudget(snap, snap.by_id, policies.providers,
                                         sizes={n: v.size for n, v in reading.views.items()}),
                      preemptions={})
    ctx.taken.update(taken)
    return ctx


def scanned(ctx: PlanContext, policies: PolicySet,
            returns: dict[str, BurstReturn]) -> tuple[int, float]:
    """What the scan of every node gives: how many are dear, and the dearest slot."""
    policy = policies.pools[0]
    listed = dear.dear_nodes(policy, ctx=ctx, returns=returns)
    return (len(listed), max((slot_cost(rate, n.facts.max_active_gears if n.facts else 0)
                              for n, rate in listed), default=0.0))


def swap(idents: tuple[str, ...], provider: str = "rack-a") -> dict[str, BurstReturn]:
    return {i: BurstReturn(identity=i, pool="small", provider=provider, requested_at=NOW - 60,
                           cause="consolidation") for i in idents}


RACK: dict[str, Any] = {"created_at": OLD}
VMW: dict[str, Any] = {"provider": "vsphere-dc1", "created_at": OLD}


@pytest.mark.parametrize(
    ("case", "fleet", "returns", "taken", "tally"),
    [
        ("all on the cheapest blueprint: none dear",
         nodes(4, active=33, **RACK), {}, frozenset(), (0, 0.0)),
        ("a dearer provider, uniform slots: all of its nodes",
         nodes(3, active=33, **RACK) + nodes(2, active=33, prefix="v", **VMW), {}, frozenset(),
         (2, 0.001)),
        ("vSphere nodes of several sizes, all dearer: the fewest slots are the dearest",
         nodes(2, active=33, **RACK) + [node("v1", active=20, max_gears=30, **VMW),
                                        node("v2", active=33, max_gears=60, **VMW),
                                        node("v3", active=60, max_gears=90, **VMW)],
         {}, frozenset(), (3, 0.002)),
        ("rack nodes with fewer slots than their blueprint are dear too",
         [node(f"r{i}", active=5, max_gears=10, **RACK) for i in range(3)], {}, frozenset(),
         (3, 0.002)),
        ("burst nodes are burst-and-return's, never consolidation's",
         nodes(3, active=33, **RACK)
         + nodes(2, active=33, prefix="e", provider="ec2-east", created_at=OLD),
         {}, frozenset(), (0, 0.0)),
        ("nodes not ours are never weighed",
         nodes(3, active=33, **RACK) + nodes(2, active=33, prefix="x", owned=False),
         {}, frozenset(), (0, 0.0)),
        ("a provider no providers file lists costs nothing",
         nodes(3, active=33, **RACK) + nodes(2, active=33, prefix="o", provider="elsewhere",
                                             created_at=OLD), {}, frozenset(), (0, 0.0)),
        # Falls back to the scan: some of a provider's nodes are dearer, some are not.
        ("one rack node dearer by its facts among cheap ones",
         nodes(3, active=33, **RACK) + [node("r-small", active=5, max_gears=10, **RACK)],
         {}, frozenset(), None),
        ("a node being swapped is left out of the count",
         nodes(3, active=33, **RACK) + nodes(2, active=33, prefix="v", **VMW),
         swap(("v00",)), frozenset(), None),
        ("a node drained by this plan is left out of the count",
         nodes(3, active=33, **RACK) + nodes(2, active=33, prefix="v", **VMW),
         {}, frozenset({"v01"}), None),
    ],
)
def test_the_tally_is_the_scan_or_none(case: str, fleet: list[Node],
                                       returns: dict[str, BurstReturn], taken: frozenset[str],
                                       tally: tuple[int, float] | None) -> None:
    policies = policy_set(pool())
    ctx = context(snapshot(fleet), policies, taken=taken)
    got = dear.dear_tally(policies.pools[0], ctx=ctx, returns=returns)
    assert got == (pytest.approx(tally) if tally is not None else None), case
    if got is not None:  # exactly what the scan gives, to the last bit
        assert got == scanned(ctx, policies, returns), case


def swaps(result: Plan) -> list[ScaleOut]:
    return [a for a in result.actions if isinstance(a, ScaleOut) and a.replaces]


def test_a_node_dearer_than_every_blueprint_by_its_facts_is_consolidated() -> None:
    """The case that broke the bound from blueprints alone: the rack (cheapest blueprint)
    is full, vSphere (the dearest non-burst blueprint) has room, so no blueprint is dearer
    than the room left; but a rack node that says it holds 10 gears pays 0.02/h for 10
    slots (0.002 per slot), twice vSphere's 0.001: it moves to vSphere."""
    fleet = nodes(4, active=33, **RACK) + [node("r-small", active=5, max_gears=10, **RACK)]
    policies = policy_set(pool(**CHEAP_MOVES), providers=FULL_RACK)
    result = plan(snapshot(fleet), policies, now=NOW)
    (make,) = swaps(result)
    assert (make.provider, make.count, make.replaces) == ("vsphere-dc1", 1, ("r-small",))
    assert "saves 0.01/h" in make.reason
    assert {i: r.cause for i, r in result.state.returns.items()} == {"r-small": "consolidation"}


def test_uniformly_small_rack_nodes_are_tallied_then_listed_for_the_swap() -> None:
    """Every rack node holds 10: the tally says all five are dear (no scan), vSphere has
    room, so the nodes are listed and the two with the most savings (then fewest gears)
    move, as many as ``max_concurrent`` allows."""
    fleet = [node(f"r{i}", active=5 + i, max_gears=10, **RACK) for i in range(5)]
    policies = policy_set(pool(**CHEAP_MOVES), providers=FULL_RACK)
    ctx = context(snapshot(fleet), policies)
    assert dear.dear_tally(policies.pools[0], ctx=ctx, returns={}) == (5, 0.002)
    (make,) = swaps(plan(snapshot(fleet), policies, now=NOW))
    assert (make.provider, make.count, make.replaces) == ("vsphere-dc1", 2, ("r0", "r1"))


def test_no_room_anywhere_cheaper_gives_the_note_with_the_tallied_count() -> None:
    fleet = nodes(3, active=33, **RACK) + nodes(2, active=33, prefix="v", **VMW)
    full = {**FULL_RACK, "providers": [
        {**p, "quota": {"max_nodes": 3}} if p["name"] == "rack-a" else p
        for p in FULL_RACK["providers"]]}
    result = plan(snapshot(fleet), policy_set(pool(), providers=full), now=NOW)
    assert not swaps(result)
    assert ("consolidate: 2 node(s) on dearer slots, no cheaper placement has room "
            "(rack-a full (quota 3/3 nodes))") in result.pools["small"].summary


# -- random fleets: the plan with the fast path is the plan with the scan ---------------

PROVIDER_NAMES = ("rack-a", "vsphere-dc1", "ec2-east", None)


@st.composite
def fleets(draw: st.DrawFn) -> list[Node]:
    built = []
    for i in range(draw(st.integers(0, 12))):
        provider = draw(st.sampled_from(PROVIDER_NAMES))
        slots = draw(st.sampled_from((1, 10, 30, 60, 60, 60, 90, 200)))
        built.append(node(
            # Mostly inside the density band: the pool is calm and consolidation weighs.
            f"n{i:02d}", active=draw(st.integers(slots // 2, slots * 3 // 4) | st.integers(
                0, slots)), max_gears=slots,
            provider=provider, owned=provider is not None,
            state=draw(st.sampled_from((NodeState.ACTIVE,) * 10 + (NodeState.DRAINING,
                                                                  NodeState.UNKNOWN))),
            created_at=draw(st.sampled_from((OLD, NOW - 60))),
            pool_name=draw(st.sampled_from(("small", "small", "other")))))
    return built


@st.composite
def providers_files(draw: st.DrawFn) -> dict[str, Any]:
    """Room or none on each provider; the rack sometimes free, vSphere sometimes cheaper."""
    quotas = {"rack-a": draw(st.integers(0, 12)), "vsphere-dc1": draw(st.integers(0, 12)),
              "ec2-east": 100}
    costs = {"rack-a": draw(st.sampled_from((0.02, 0.06, 0.0))),
             "vsphere-dc1": draw(st.sampled_from((0.06, 0.02, 0.07)))}
    return {**PROVIDERS, "providers": [
        {**p, "quota": {"max_nodes": quotas[p["name"]]},
         "cost_per_hour": costs.get(p["name"], p["cost_per_hour"])}
        for p in PROVIDERS["providers"]]}


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_random_fleets_plan_the_same_with_and_without_the_fast_path(
        data: st.DataObject) -> None:
    fleet = data.draw(fleets())
    providers = data.draw(providers_files())
    policy = pool(consolidation={"min_savings_per_hour": data.draw(st.sampled_from((0, 0.005,
                                                                                    0.02)))},
                  size={"min": 1, "max": data.draw(st.integers(2, 40))})
    policies = policy_set(policy, providers=providers)
    ids = [n.identity for n in fleet]
    returns = swap(tuple(data.draw(st.lists(st.sampled_from(ids), max_size=2, unique=True)))
                   if ids else ())
    state = PlannerState(pools={"small": PoolMemory()}, returns=returns)
    snap = snapshot(fleet)
    fast = plan(snap, policies, now=NOW, state=state)
    with mock.patch.object(consolidate, "dear_tally", return_value=None):
        slow = plan(snapshot(fleet), policies, now=NOW, state=state)
    assert fast == slow


@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_the_policy_sets_cheapest_slot_is_the_one_worked_out_per_plan(
        data: st.DataObject) -> None:
    """``PolicySet.cheapest_slots`` (worked out once) is what ``cheapest_blueprint`` works
    out from the placements when the context has no such figures, to the last bit."""
    burst = data.draw(st.sets(st.sampled_from(("rack-a", "vsphere-dc1", "ec2-east"))))
    blueprint = {"rack-a": "small-bm", "vsphere-dc1": "small-vmw", "ec2-east": "small-ec2"}
    policy = pool(placement=[{"provider": p, "blueprint": blueprint[p], "burst_only": p in burst}
                             for p in ("rack-a", "vsphere-dc1", "ec2-east")])
    policies = policy_set(policy, providers=data.draw(providers_files()))
    ctx = context(snapshot([]), policies)
    assert ctx.cheapest_slots is None
    assert policies.cheapest_slots == {"small": dear.cheapest_blueprint(policy, ctx)}
