"""``decide.pools.read_fleet``, the one pass over the fleet a plan makes, gives what the
naive computations give (one pass each, written as plainly as the rules read) on random
fleets: the pool split, the sums per pool, the usage per provider and per (pool, provider),
the newest machine per provider, the burst lists and the active machines per provider
(count, fewest and most slots, capacity) that consolidation reads."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from builders import policy_set, pool
from gearshift.decide.pools import read_fleet
from gearshift.decide.scale_in import scale_in_order
from gearshift.model import (
    DrainProgress,
    FleetSnapshot,
    GearCounts,
    Machine,
    Node,
    NodeFacts,
    NodeState,
    PendingNode,
)
from gearshift.policy.schema import PoolPolicy

PROFILES = ("small", "large", "odd")  # "odd": no pool selects it
PROVIDERS = ("rack-a", "vsphere-dc1", "ec2-east")
STATES = tuple(NodeState)


@st.composite
def pools(draw: st.DrawFn) -> list[PoolPolicy]:
    """Two to four pools over two profiles, some selecting on district or labels too."""
    built = []
    for i in range(draw(st.integers(2, 4))):
        selector: dict[str, Any] = {"node_profile": draw(st.sampled_from(PROFILES[:2]))}
        if draw(st.booleans()):
            selector["district"] = draw(st.sampled_from(("d1", "d2")))
        if draw(st.booleans()):
            selector["labels"] = {"zone": draw(st.sampled_from(("a", "b")))}
        burst = draw(st.sets(st.sampled_from(PROVIDERS)))
        blueprint = {"rack-a": "small-bm", "vsphere-dc1": "small-vmw", "ec2-east": "small-ec2"}
        built.append(pool(name=f"p{i}", priority=draw(st.integers(0, 5)), selector=selector,
                          placement=[{"provider": p, "blueprint": blueprint[p],
                                      "burst_only": p in burst} for p in PROVIDERS]))
    return built


@st.composite
def fleets(draw: st.DrawFn, names: list[str]) -> FleetSnapshot:
    nodes = []
    count = draw(st.integers(0, 40))
    for i in range(count):
        identity = f"n{i}"
        facts = None if draw(st.integers(0, 9)) == 0 else NodeFacts(
            identity=identity, node_profile=draw(st.sampled_from(PROFILES)),
            max_active_gears=draw(st.integers(0, 60)),
            gears=GearCounts(total=draw(st.integers(0, 90)), active=draw(st.integers(0, 60))),
            district_uuid=draw(st.sampled_from(("d1", "d2", None))),
            labels=draw(st.sampled_from(({}, {"zone": "a"}, {"zone": "b", "x": "y"}))))
        machine = None if draw(st.booleans()) else Machine(
            provider=draw(st.sampled_from(PROVIDERS)), machine_id=f"m{i}", name=identity,
            pool=draw(st.sampled_from([*names, "gone", None])),
            created_at=draw(st.one_of(st.none(), st.floats(0, 1000))))
        nodes.append(Node(identity=identity, state=draw(st.sampled_from(STATES)), facts=facts,
                          last_seen=0.0, machine=machine))
    booting = [PendingNode(identity=f"n{i}" if draw(st.booleans()) else f"b{i}",
                           pool=draw(st.sampled_from(names)),
                           provider=draw(st.sampled_from(PROVIDERS)), blueprint="small-bm",
                           max_active_gears=draw(st.integers(1, 60)),
                           requested_at=draw(st.floats(0, 1000)))
               for i in range(draw(st.integers(0, 4)))]
    drains = [DrainProgress(identity=f"n{draw(st.integers(0, max(count - 1, 0)))}",
                            pool=draw(st.sampled_from(names)), started_at=0.0, deadline=1.0,
                            phase="moving")
              for _ in range(draw(st.integers(0, 4)))]
    return FleetSnapshot(taken_at=0.0, nodes=tuple(nodes), pending=tuple(booting),
                         drains=tuple(drains))


def naive_owner(node: Node, ordered: list[PoolPolicy]) -> str | None:
    facts = node.facts
    if facts is None:
        return None
    for policy in ordered:
        if policy.selector.matches(facts):
            return policy.name
    made_for = node.machine.pool if node.machine is not None else None
    return made_for if made_for in {p.name for p in ordered} else None


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_read_fleet_equals_the_naive_passes(data: st.DataObject) -> None:
    ordered = list(policy_set(*data.draw(pools())).pools)  # highest priority first
    names = [p.name for p in ordered]
    snapshot = data.draw(fleets(names))
    reading = read_fleet(snapshot, ordered)

    pending_ids = {p.identity for p in snapshot.pending}
    counted = [n for n in snapshot.nodes if n.identity not in pending_ids]
    for policy in ordered:
        view = reading.views[policy.name]
        mine = [n for n in counted if naive_owner(n, ordered) == policy.name]
        active = [n for n in mine if n.state is NodeState.ACTIVE]
        draining = [n for n in mine if n.state is NodeState.DRAINING]
        unknown = [n for n in mine if n.state is NodeState.UNKNOWN]
        assert view.active == tuple(active)
        assert view.draining == tuple(draining)
        assert view.unknown == tuple(unknown)
        assert view.active_gears == sum(n.facts.gears.active for n in active if n.facts)
        assert view.capacity_gears == sum(n.facts.max_active_gears for n in active if n.facts)
        burst = {p.provider for p in policy.placement if p.burst_only}
        assert view.burst == tuple(n for n in active
                                   if n.machine is not None and n.machine.provider in burst)
        ours_active = [n for n in active if n.machine is not None and n.facts is not None]
        tallied = {}
        for provider in {n.machine.provider for n in ours_active if n.machine}:
            slots = [n.facts.max_active_gears for n in ours_active
                     if n.machine and n.facts and n.machine.provider == provider]
            tallied[provider] = (len(slots), min(slots), max(slots), sum(slots),
                                 provider in burst)
        assert {provider: (s.count, s.least, s.most, s.capacity, s.burst)
                for provider, s in view.shares.items()} == tallied
        pending = [p for p in snapshot.pending if p.pool == policy.name]
        drains = [d for d in snapshot.drains if d.pool == policy.name]
        ours = {d.identity for d in drains}
        assert view.pending == tuple(pending)
        assert view.drains == tuple(drains)
        assert view.booting_gears == sum(p.max_active_gears for p in pending)
        assert view.draining_gears == sum(n.facts.gears.active for n in draining
                                          if n.facts and n.identity in ours)
        assert view.size == (len(active) + len(pending) + len(unknown)
                             + sum(1 for n in draining if n.identity not in ours))

    machines = [n.machine for n in counted if n.machine is not None]
    usage = reading.usage
    assert usage.by_provider == Counter([m.provider for m in machines]
                                        + [p.provider for p in snapshot.pending])
    assert usage.by_pool_provider == Counter(
        [(m.pool, m.provider) for m in machines if m.pool is not None]
        + [(p.pool, p.provider) for p in snapshot.pending])
    for provider in PROVIDERS:
        made = [m.created_at for m in machines
                if m.provider == provider and m.created_at is not None]
        made += [p.requested_at for p in snapshot.pending if p.provider == provider]
        assert usage.newest(provider) == (max(made) if made else None)


def test_a_profile_alone_decides_only_when_its_first_pool_selects_on_nothing_else() -> None:
    """The first pool of a profile that also names a district must not take the whole
    profile: a node of another district falls through to the next pool."""
    strict = pool(name="strict", priority=10, selector={"node_profile": "small",
                                                        "district": "d9"})
    loose = pool(name="loose", priority=5)
    ordered = list(policy_set(strict, loose).pools)
    facts = NodeFacts(identity="n1", node_profile="small", max_active_gears=60,
                      gears=GearCounts(total=3, active=3), district_uuid="d1")
    snapshot = FleetSnapshot(taken_at=0.0, nodes=(
        Node(identity="n1", state=NodeState.ACTIVE, facts=facts, last_seen=0.0),))
    views = read_fleet(snapshot, ordered).views
    assert [n.identity for n in views["loose"].active] == ["n1"]
    assert views["strict"].active == ()
    assert views["loose"].active_gears == 3


def naive_scale_in_order(policy: PoolPolicy, nodes: list[Node]) -> list[Node]:
    """The order as the rule reads: burst nodes first, then the strategy, then identity."""
    providers = policy_set(policy).providers
    assert providers is not None
    burst = {p.provider for p in policy.placement if p.burst_only}

    def value(node: Node) -> tuple[float, float]:
        assert node.facts is not None and node.machine is not None
        strategy = policy.scale_in.strategy
        spec = providers.provider(node.machine.provider)
        rate = spec.cost_per_hour if spec else 0.0
        if strategy == "oldest":
            return node.machine.created_at or 0.0, 0.0
        if strategy == "newest":
            return -(node.machine.created_at or 0.0), 0.0
        if strategy == "costliest_first":
            return -rate, 0.0
        if strategy == "costliest_per_slot":  # dearest slots first, then fewest gears
            return -rate / max(1, node.facts.max_active_gears), float(node.facts.gears.total)
        return float(node.facts.gears.total), 0.0

    eligible = [n for n in nodes if n.machine is not None and n.facts is not None]
    return sorted(eligible, key=lambda n: (n.machine is None or n.machine.provider not in burst,
                                           *value(n), n.identity))


@settings(max_examples=100, deadline=None)
@given(data=st.data(),
       strategy=st.sampled_from(("fewest_gears", "oldest", "newest", "costliest_first",
                                 "costliest_per_slot")))
def test_scale_in_order_is_the_full_sort_taken_lazily(data: st.DataObject, strategy: str) -> None:
    policy = pool(scale_in={"strategy": strategy, "max_concurrent_drains": 2},
                  placement=[{"provider": "rack-a", "blueprint": "small-bm"},
                             {"provider": "ec2-east", "blueprint": "small-ec2",
                              "burst_only": True}])
    nodes = list(data.draw(fleets(["small"])).nodes)
    providers = policy_set(policy).providers
    assert providers is not None
    assert list(scale_in_order(policy, nodes, providers)) == naive_scale_in_order(policy, nodes)
