"""Unit tests of the observe logic: trust after a loss, retained replays, back-off, the
incremental edge watch (checked against a naive recount), and message routing."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from builders import policy_set, pool
from gearshift.metrics import Metrics
from gearshift.model import GearCounts, Machine, NodeFacts, NodeState, PendingNode
from gearshift.observe.edges import EdgeWatch
from gearshift.observe.fleet import MAX_OFFLINE_WITHOUT_FACTS, FleetModel
from gearshift.observe.mqtt import MqttFactSource
from gearshift.observe.requests import RequestBook
from gearshift.policy.schema import PolicySet
from gearshift.settings import MqttSettings
from gearshift.wire.mqtt import Backoff


def facts(identity: str = "n1", *, ts: float | None = None, seq: int | None = 1,
          active: int = 10, max_gears: int = 60, profile: str = "small",
          district_active: bool = True) -> NodeFacts:
    return NodeFacts(identity=identity, node_profile=profile, max_active_gears=max_gears,
                     gears=GearCounts(total=active, active=active), produced_at=ts, seq=seq,
                     district_active=district_active,
                     bad_reason=None if max_gears > 0 else "max_active_gears is 0")


def test_retained_replay_without_ts_is_no_sign_of_life() -> None:
    fleet = FleetModel(stale_after=60)
    fleet.ingest(facts(seq=None), received_at=100)
    fleet.ingest(facts(seq=None), received_at=200, retained=True)  # replay on resubscribe
    assert not fleet.is_fresh("n1", 170)
    fleet.ingest(facts(seq=None), received_at=200)  # live
    assert fleet.is_fresh("n1", 250)


def test_retained_facts_without_ts_of_an_unknown_node_are_stale_until_heard_live() -> None:
    fleet = FleetModel(stale_after=60)
    fleet.ingest(facts(seq=None), received_at=1000, retained=True)  # perhaps long dead
    assert fleet.snapshot(1000).nodes[0].state is NodeState.UNKNOWN
    fleet.ingest(facts(seq=None, active=11), received_at=1005)  # heard live
    assert fleet.snapshot(1005).nodes[0].state is NodeState.ACTIVE


def test_facts_from_the_future_are_refused_and_do_not_block_later_ones() -> None:
    import time

    src, metrics = source()
    now = time.time()

    def message(ts: float, active: int) -> bytes:
        stamp = datetime.fromtimestamp(ts, UTC).isoformat()
        return json.dumps({"schema": "gearshift.node.facts/1", "identity": "n1", "ts": stamp,
                           "node_profile": "small", "limits": {"max_active_gears": 60},
                           "gears": {"total": active, "active": active}}).encode()

    src.handle("gs/v1/nodes/n1/facts", message(now + 86400 * 365 * 70, 50))  # year 2096
    src.handle("gs/v1/nodes/n1/facts", message(now, 12))
    assert 'gearshift_bad_messages_total{reason="clock_skew"} 1.0' in metrics.exposition().decode()
    assert src.fleet.facts("n1").gears.active == 12  # type: ignore[union-attr]


def test_offline_then_facts_produced_after_the_will_bring_the_node_back() -> None:
    fleet = FleetModel(stale_after=60)
    fleet.ingest(facts(ts=100), received_at=100)
    fleet.set_online("n1", False, at=110)
    fleet.ingest(facts(ts=105, seq=2), received_at=111)  # in flight before the will
    assert fleet.snapshot(112).nodes[0].state is NodeState.UNKNOWN
    fleet.ingest(facts(ts=112, seq=3), received_at=120, retained=True)  # replay, but newer ts
    assert fleet.snapshot(121).nodes[0].state is NodeState.ACTIVE


def test_online_before_facts_clears_an_earlier_offline() -> None:
    fleet = FleetModel(stale_after=60)
    fleet.set_online("n1", False, at=10)
    fleet.set_online("n1", True, at=11)
    fleet.ingest(facts(ts=5), received_at=12)
    assert fleet.snapshot(12).nodes[0].state is NodeState.ACTIVE


def test_offline_memory_without_facts_is_bounded() -> None:
    fleet = FleetModel(stale_after=60)
    for i in range(MAX_OFFLINE_WITHOUT_FACTS + 50):
        fleet.set_online(f"ghost{i}", False, at=i)
    assert len(fleet._offline) == MAX_OFFLINE_WITHOUT_FACTS


def test_recovery_waits_for_facts_produced_after_the_loss_or_for_staleness() -> None:
    fleet = FleetModel(stale_after=60)
    for name in ("a", "b", "c"):
        fleet.ingest(facts(name, ts=100), received_at=100)
    fleet.ingest(facts("d", ts=None, seq=None), received_at=100)  # legacy, no ts
    assert fleet.await_fresh(since=130) == 4
    fleet.ingest(facts("a", ts=100, seq=1), received_at=140, retained=True)  # old replay
    fleet.ingest(facts("b", ts=120, seq=2), received_at=140)  # live but produced before
    assert not fleet.recovered(140) and fleet.waiting_for == 4
    fleet.ingest(facts("a", ts=135, seq=2), received_at=140, retained=True)  # after the loss
    fleet.ingest(facts("b", ts=141, seq=3), received_at=141)
    fleet.ingest(facts("d", ts=None, seq=None), received_at=142, retained=True)
    assert fleet.waiting_for == 2  # c and d
    fleet.ingest(facts("d", ts=None, seq=None), received_at=143)  # live legacy facts
    fleet.set_online("c", False, at=144)  # c's will: unknown anyway, no need to wait
    assert fleet.recovered(144)


def test_recovery_gives_up_on_nodes_that_go_stale() -> None:
    fleet = FleetModel(stale_after=60)
    fleet.ingest(facts("a", ts=100), received_at=100)
    fleet.await_fresh(since=130)
    assert not fleet.recovered(159)
    assert fleet.recovered(161)


def test_snapshot_reuses_unchanged_nodes() -> None:
    fleet = FleetModel(stale_after=60)
    fleet.ingest(facts("a", ts=100), received_at=100)
    fleet.ingest(facts("b", ts=100), received_at=100)
    first = fleet.snapshot(110).nodes
    fleet.ingest(facts("b", ts=105, seq=2, active=20), received_at=105)
    second = fleet.snapshot(111).nodes
    assert first[0] is second[0]  # a: same Node object
    assert first[1] is not second[1] and second[1].facts.gears.active == 20  # type: ignore[union-attr]
    third = fleet.snapshot(170).nodes  # a is stale now: a new Node that says so
    assert third[0].state is NodeState.UNKNOWN


def test_backoff_is_jittered_doubling_and_capped() -> None:
    backoff = Backoff(initial=1.0, maximum=8.0, rng=random.Random(3))
    delays = [backoff.next() for _ in range(8)]
    bases = [1, 2, 4, 8, 8, 8, 8, 8]
    assert all(0.5 * b <= d <= b for d, b in zip(delays, bases, strict=True))
    assert len({round(d, 6) for d in delays}) == len(delays)  # jittered, never in lockstep
    backoff.reset()
    assert backoff.next() <= 1.0


def naive_sums(fleet: FleetModel, policies: PolicySet, now: float) -> dict[str, list[int]]:
    """Each pool's [active gears, capacity] over its fresh district members, recounted."""
    sums = {p.name: [0, 0] for p in policies.pools}
    for identity in fleet.identities():
        f = fleet.facts(identity)
        if f is None or not f.district_active or not fleet.is_fresh(identity, now):
            continue
        owner = next((p for p in policies.pools if p.selector.matches(f)), None)
        if owner is not None:
            sums[owner.name][0] += f.gears.active
            sums[owner.name][1] += f.max_active_gears
    return sums


def naive_outside(fleet: FleetModel, policies: PolicySet, now: float) -> dict[str, bool]:
    sums = naive_sums(fleet, policies, now)
    return {p.name: sums[p.name][1] > 0 and (
        sums[p.name][0] / sums[p.name][1] > p.density.scale_up_above
        or sums[p.name][1] - sums[p.name][0] < p.headroom_gears) for p in policies.pools}


step = st.one_of(
    st.tuples(st.just("facts"), st.integers(0, 7), st.integers(0, 60),
              st.sampled_from(["small", "large"]), st.booleans(), st.sampled_from([60, 15, 0])),
    st.tuples(st.just("offline"), st.integers(0, 7)),
    st.tuples(st.just("forget"), st.integers(0, 7)),
    st.tuples(st.just("wait"), st.integers(1, 40)),
    st.tuples(st.just("touch"), st.integers(0, 7)),
    st.tuples(st.just("heartbeat"), st.integers(1, 3)),
    st.tuples(st.just("reload")),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(step, min_size=1, max_size=40))
@example([("facts", 1, 10, "small", True, 60), ("wait", 20), ("heartbeat", 1), ("wait", 11),
          ("wait", 20)])  # re-published, due while fresh, then silent: it must still expire
def test_incremental_edge_watch_agrees_with_a_full_recount(steps: list[tuple]) -> None:
    policies = policy_set(pool(headroom_gears=20),
                          pool(name="big", selector={"node_profile": "large"}, priority=5))
    fleet = FleetModel(stale_after=30)
    # Messages update the sums incrementally; a wait lets nodes go stale without a message
    # (and a touch revive them without one); a reload hands over new, equal policies.
    watch = EdgeWatch()
    now = 1000.0
    previous = {p.name: False for p in policies.pools}
    for seq, item in enumerate(steps, start=1):
        if item[0] == "facts":
            _, n, active, profile, active_district, max_gears = item
            fleet.ingest(facts(f"n{n}", ts=now, seq=seq, active=min(active, max_gears or 60),
                               max_gears=max_gears, profile=profile,
                               district_active=active_district), received_at=now)
        elif item[0] == "offline":
            fleet.set_online(f"n{item[1]}", False, at=now)
        elif item[0] == "forget":
            fleet.forget(f"n{item[1]}")
        elif item[0] == "touch":
            fleet.touch(f"n{item[1]}", at=now)
        elif item[0] == "heartbeat":  # the simulator's round: re-published, no listener told
            fleet.touch_many(list(fleet.identities())[::item[1]], at=now)
        elif item[0] == "reload":
            policies = PolicySet(pools=tuple(list(policies.pools)),  # a new tuple
                                 providers=policies.providers)
        else:
            now += item[1]
        changed = watch.check(fleet, policies, now)
        expected = naive_outside(fleet, policies, now)
        assert sorted(changed) == sorted(k for k in expected if expected[k] != previous[k])
        assert watch._sums == naive_sums(fleet, policies, now)
        previous = expected


def fleet_of(count: int, *, pools: int, now: float) -> FleetModel:
    fleet = FleetModel(stale_after=60)
    for i in range(count):
        fleet.ingest(facts(f"n{i}", ts=now, profile=f"p{i % pools}"), received_at=now)
    return fleet


def test_a_check_with_nothing_changed_matches_nothing_and_looks_at_no_node() -> None:
    policies = policy_set(*(pool(name=f"p{k}", selector={"node_profile": f"p{k}"})
                            for k in range(10)))
    fleet = fleet_of(1000, pools=10, now=100)
    watch = EdgeWatch()
    watch.check(fleet, policies, 100)
    assert watch.full_resyncs == 1
    assert 10 <= watch.matches <= 55  # once per distinct profile, not once per node
    matched = watch.matches
    looked: list[str] = []
    fleet.add_listener(looked.append)
    for at in (101.0, 131.0, 159.0):  # past the old 30 s resync period, before going stale
        assert watch.check(fleet, policies, at) == []
    assert watch.matches == matched and watch.full_resyncs == 1 and looked == []
    # one node's gears change: no matching either (its profile was matched before)
    fleet.ingest(facts("n3", ts=160, seq=2, active=40, profile="p3"), received_at=160)
    watch.check(fleet, policies, 160)
    assert watch.matches == matched and watch.full_resyncs == 1


def test_a_new_profile_or_a_policy_reload_is_matched_again() -> None:
    policies = policy_set(pool(name="p0", selector={"node_profile": "p0"}),
                          pool(name="p1", selector={"node_profile": "p1"}))
    fleet = fleet_of(100, pools=2, now=100)
    watch = EdgeWatch()
    watch.check(fleet, policies, 100)
    matched = watch.matches
    fleet.ingest(facts("n0", ts=101, seq=2, profile="p1"), received_at=101)  # moves pools
    watch.check(fleet, policies, 101)
    assert watch.matches == matched  # p1 is known already
    fleet.ingest(facts("n1", ts=101, seq=2, profile="new"), received_at=101)
    watch.check(fleet, policies, 101)
    assert watch.matches == matched + 2  # a new profile: tried against both pools
    # The reload moves every p1 node to a pool of a new name: all re-matched.
    reloaded = policy_set(pool(name="p0", selector={"node_profile": "p0"}),
                          pool(name="q1", selector={"node_profile": "p1"}, headroom_gears=10**6))
    assert watch.check(fleet, reloaded, 102) == ["q1"]  # capacity below the new headroom
    assert watch.full_resyncs == 2 and watch.matches > matched + 2


def test_the_pool_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from gearshift.observe import edges

    monkeypatch.setattr(edges, "MAX_SELECTOR_KEYS", 5)
    policies = policy_set(pool(name="p0", selector={"node_profile": "p0"}))
    fleet = FleetModel(stale_after=60)
    watch = EdgeWatch()
    for i in range(20):  # a new profile every message: a new key each time
        fleet.ingest(facts(f"n{i}", ts=100, profile=f"x{i}"), received_at=100)
        watch.check(fleet, policies, 100)
        assert len(watch._pool_of) <= 5


def test_nodes_going_stale_without_a_message_are_dropped_from_the_sums_when_due() -> None:
    policies = policy_set(pool(name="p0", selector={"node_profile": "p0"}, headroom_gears=100))
    fleet = FleetModel(stale_after=60)
    for i in range(4):
        fleet.ingest(facts(f"n{i}", ts=100 + i, profile="p0"), received_at=100 + i)
    watch = EdgeWatch()
    assert watch.check(fleet, policies, 110) == []  # 4 x 50 free gears >= 100 headroom
    assert watch.check(fleet, policies, 160.5) == []  # n0 stale: 150 free, still inside
    assert watch.check(fleet, policies, 162.5) == ["p0"]  # n0..n2 stale: 50 free, outside
    fleet.touch("n1", at=163)  # heard again without new facts: counted again
    assert watch.check(fleet, policies, 163) == ["p0"]  # n1 and n3: 100 free, inside


def source(**kwargs: object) -> tuple[MqttFactSource, Metrics]:
    metrics = Metrics()
    return MqttFactSource(MqttSettings(prefix="gs/v1"), FleetModel(stale_after=60),
                          metrics=metrics, **kwargs), metrics  # type: ignore[arg-type]


def test_routing_rejects_what_no_subscription_should_deliver() -> None:
    src, metrics = source(requests=RequestBook())
    src.handle("elsewhere/nodes/n1/facts", b"{}")
    src.handle("gs/v1/nodes/n1/other", b"{}")
    src.handle("gs/v1/nodes//facts", b"{}")
    src.handle("gs/v1/nodes/" + "x" * 300 + "/facts", b"{}")
    src.handle("gs/v1/requests", json.dumps({"pool": "small", "gears": 3}).encode(),
               retained=True)
    src.handle("gs/v1/requests", json.dumps({"pool": "small", "gears": 3, "ttl": "soon"}).encode())
    src.handle("gs/v1/nodes/n1/status", b"x" * 100)
    text = metrics.exposition().decode()
    assert 'gearshift_bad_messages_total{reason="unknown_topic"} 3.0' in text
    assert 'gearshift_bad_messages_total{reason="bad_identity"} 1.0' in text
    assert 'gearshift_bad_messages_total{reason="retained_request"} 1.0' in text
    assert 'gearshift_bad_messages_total{reason="bad_request"} 1.0' in text
    assert 'gearshift_bad_messages_total{reason="bad_status"} 1.0' in text


def test_a_bug_in_handling_is_counted_not_raised() -> None:
    def explode() -> None:
        raise RuntimeError("bug")

    src, metrics = source(on_facts=explode)
    payload = json.dumps({"schema": "gearshift.node.facts/1", "identity": "n1",
                          "node_profile": "small", "limits": {"max_active_gears": 60}}).encode()
    src.handle("gs/v1/nodes/n1/facts", payload)
    assert 'reason="internal_error"} 1.0' in metrics.exposition().decode()


def test_snapshots_are_reused_until_something_they_show_changes() -> None:
    from gearshift.model import DrainProgress, Machine

    fleet = FleetModel(stale_after=60)
    fleet.ingest(facts("a", ts=100), received_at=100)
    fleet.ingest(facts("b", ts=130), received_at=130)
    machines = {"a": Machine(provider="p", machine_id="m-a", name="a")}
    first = fleet.snapshot(140, machines=machines).nodes
    assert fleet.snapshot(150, machines=dict(machines)).nodes is first  # nothing changed
    changed = fleet.snapshot(150, machines={}).nodes  # the journal forgot a machine
    assert changed is not first and changed[0].machine is None
    again = fleet.snapshot(150).nodes
    assert fleet.snapshot(161).nodes is not again  # a went stale at 160
    assert fleet.snapshot(161).nodes[0].state is NodeState.UNKNOWN
    drain = DrainProgress(identity="b", pool="small", started_at=0, deadline=1e9, phase="moving")
    assert fleet.snapshot(161, drains=[drain]).nodes[1].state is NodeState.DRAINING
    before = fleet.snapshot(162).nodes
    fleet.ingest(facts("b", ts=162, seq=2, active=30), received_at=162)
    after = fleet.snapshot(162).nodes
    assert after is not before and after[1].facts.gears.active == 30  # type: ignore[union-attr]
    fleet.set_online("b", False, at=163)
    assert fleet.snapshot(163).nodes[1].state is NodeState.UNKNOWN


def test_a_silent_node_shows_its_silence_to_the_second() -> None:
    """A snapshot one second after another shows the new count, not the cached text
    (hypothesis found "silent for 31s" where a whole rebuild said 32s)."""
    fleet = FleetModel(stale_after=30)
    fleet.ingest(facts("n1", ts=1_000, seq=1), received_at=1_000)
    assert fleet.snapshot(1_031).nodes[0].why_unknown == "silent for 31s"
    assert fleet.snapshot(1_032).nodes[0].why_unknown == "silent for 32s"
    assert fleet.snapshot(1_032.4).nodes[0].why_unknown == "silent for 32s"
    assert fleet.snapshot(1_032.6).nodes[0].why_unknown == "silent for 33s"


def test_a_dispute_ends_in_the_snapshot_at_its_end() -> None:
    """A dispute held until T no longer holds at T, in a snapshot rebuilt in part too
    (hypothesis found the cached record reused at exactly T: "disputed" where a whole
    rebuild said active)."""
    fleet = FleetModel(stale_after=30)
    for name in ("n0", "n1"):
        fleet.ingest(facts(name, ts=1_000, seq=1), received_at=1_000)
    fleet.dispute("n1", "not in its district", until=1_001)
    assert fleet.snapshot(1_000).nodes[1].state is NodeState.UNKNOWN
    assert fleet.snapshot(1_001).nodes[1].state is NodeState.ACTIVE


def _whole(fleet: FleetModel, now: float, machines: dict[str, Machine],
           draining: frozenset[str], parked: frozenset[str]) -> tuple[object, ...]:
    """The nodes a snapshot built from scratch shows, no Node reused (the model's cache
    and reusable Nodes left as they were)."""
    kept, removed = fleet._built.cache, fleet._built.removed
    built = [(entry, entry.node) for entry in fleet._entries.values()]
    fleet._built.cache, fleet._built.removed = None, set()
    for entry, _ in built:
        entry.node = None
    whole = fleet._nodes(now, machines, draining, parked)
    fleet._built.cache, fleet._built.removed = kept, removed
    for entry, node in built:
        entry.node = node
    return whole


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["ingest", "touch", "offline", "online", "forget",
                                           "tick", "snapshot", "drain", "adopt", "release",
                                           "park", "dispute", "vouch", "heartbeat"]),
                          st.integers(0, 30)), max_size=80))
def test_snapshots_rebuilt_in_part_equal_snapshots_rebuilt_whole(
        steps: list[tuple[str, int]]) -> None:
    """After any sequence of changes (nodes new and forgotten, machines made and released,
    drains, parking, disputes, re-published facts), a snapshot built from the last one
    (only the nodes that changed rebuilt) shows exactly what one built from scratch shows,
    and its index gives each node's position."""
    fleet = FleetModel(stale_after=30)
    now = 1_000.0
    machines: dict[str, Machine] = {}
    draining: frozenset[str] = frozenset()
    parked: frozenset[str] = frozenset()
    for i in range(20):
        fleet.ingest(facts(f"n{i}", ts=now, seq=1), received_at=now)
    seq = 1
    for action, n in steps:
        identity = f"n{n}"
        seq += 1
        if action == "ingest":
            fleet.ingest(facts(identity, ts=now, seq=seq, active=n % 7), received_at=now)
        elif action == "touch":
            fleet.touch(identity, at=now)
        elif action == "heartbeat":
            fleet.touch_many(list(fleet.identities())[::1 + n % 3], at=now)
        elif action in ("offline", "online"):
            fleet.set_online(identity, action == "online", at=now)
        elif action == "forget":
            fleet.forget(identity)
        elif action == "tick":
            now += n  # nodes go stale as time passes
        elif action == "drain":
            draining = draining ^ {identity}
        elif action == "park":
            parked = parked ^ {identity}
        elif action == "adopt":
            machines = {**machines, identity: Machine("rack-a", f"m-{identity}", identity)}
        elif action == "release":
            machines = {i: m for i, m in machines.items() if i != identity}
        elif action == "dispute":
            fleet.dispute(identity, "not in its district", until=now + n)
        elif action == "vouch":
            fleet.set_vouched(None if n % 2 else frozenset(f"n{i}" for i in range(n)))
        if action == "snapshot" or n % 3 == 0:
            fleet.disputes(now)
            partial = fleet._nodes(now, machines, draining | parked, parked)
            assert partial == _whole(fleet, now, machines, draining | parked, parked)
            assert fleet._built.cache is not None and fleet._built.cache.nodes is partial
            assert {node.identity: i for i, node in enumerate(partial)} == fleet._built.cache.index
    partial = fleet._nodes(now, machines, draining | parked, parked)
    assert partial == _whole(fleet, now, machines, draining | parked, parked)


def test_a_new_node_outside_any_district_is_still_on_its_way() -> None:
    """Booting until its facts show it can take gears: in a district, or active without
    one (a fleet that uses no districts)."""
    fleet = FleetModel(stale_after=30)
    booting = (PendingNode(identity="n1", pool="small", provider="rack-a",
                           blueprint="small-bm", max_active_gears=60, requested_at=0.0),)
    outside = replace(facts("n1", ts=100, seq=1, district_active=False), district_uuid="NONE")
    fleet.ingest(outside, received_at=100)
    assert fleet.snapshot(101, pending=booting).pending == booting
    fleet.ingest(replace(outside, seq=2, district_uuid="d1"), received_at=100)
    assert fleet.snapshot(101, pending=booting).pending == ()
    no_districts = FleetModel(stale_after=30)
    no_districts.ingest(replace(outside, district_active=True), received_at=100)
    assert no_districts.snapshot(101, pending=booting).pending == ()
