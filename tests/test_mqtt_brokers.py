"""The MQTT fact source against real brokers: every test runs on mosquitto AND ActiveMQ.

Retained fleet at start-up, ordering, bad numbers, garbage, broker loss and recovery,
capacity requests and edge-triggered reconciles — each through a real broker, with the
real fleet model, planner and (where it matters) reconciler.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from builders import policy_set, pool
from gearshift import decide
from gearshift.api.server import ApiServer
from gearshift.clock import ManualClock, SystemClock
from gearshift.metrics import Metrics
from gearshift.model import Drain, FleetSnapshot, Machine, NodeState, ScaleOut
from gearshift.observe.fleet import FleetModel
from gearshift.observe.mqtt import MqttFactSource
from gearshift.observe.requests import RequestBook
from gearshift.plan import Plan
from gearshift.policy.schema import PolicySet
from gearshift.reconcile.wakeup import EdgeWaker
from gearshift.sim.broker import free_port
from gearshift.wire.mqtt import client_for
from peers import Broker
from rigs import facts_payload, legacy_payload, running, sim_reconciler, wait_until


def bad_counts(metrics: Metrics) -> dict[str, float]:
    counts: dict[str, float] = {}
    for metric in metrics.bad_messages.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                counts[sample.labels["reason"]] = sample.value
    return counts


def plan_now(fleet: FleetModel, policies: PolicySet, now: float, **kwargs: Any) -> Plan:
    machines = {i: Machine(provider="rack-a", machine_id=f"m-{i}", name=i, created_at=0.0)
                for i in fleet.identities()}
    snapshot: FleetSnapshot = fleet.snapshot(now, machines=machines, **kwargs)
    return decide.plan(snapshot, policies, now=now)


async def test_retained_facts_are_all_in_when_the_source_has_caught_up(broker: Broker) -> None:
    settings = broker.settings()
    prefix = settings.prefix
    now = time.time()
    identities = [f"node{i}.example.com" for i in range(300)]
    async with client_for(settings) as publisher:
        for i, identity in enumerate(identities):
            payload = (legacy_payload(active=i % 60) if i % 3 == 0
                       else facts_payload(identity, active=i % 60, ts=now))
            await publisher.publish(f"{prefix}/nodes/{identity}/facts", payload, qos=1,
                                    retain=True)
        await publisher.publish(f"{prefix}/nodes/node7.example.com/status", b"offline", qos=1,
                                retain=True)
        fleet = FleetModel(stale_after=600)
        source = MqttFactSource(settings, fleet, metrics=Metrics())
        async with running(source):
            # The catch-up marker came back after the retained replay: all of it is in.
            assert len(fleet) == 300
            assert fleet.source_up
            states = {n.identity: n.state for n in fleet.snapshot(time.time()).nodes}
            assert states["node7.example.com"] is NodeState.UNKNOWN
            # Retained legacy facts carry no ts: they could be years old, so those 100
            # nodes are known but not trusted until they are heard live.
            legacy = {identities[i] for i in range(0, 300, 3)}
            assert all(states[i] is NodeState.UNKNOWN for i in legacy)
            assert sum(s is NodeState.ACTIVE for s in states.values()) == 300 - 100 - 1
            assert fleet.facts("node299.example.com").gears.active == 299 % 60  # type: ignore[union-attr]
            assert fleet.facts("node3.example.com").produced_at is None  # type: ignore[union-attr]
        for identity in identities:
            await publisher.publish(f"{prefix}/nodes/{identity}/facts", b"", qos=1, retain=True)


async def test_older_facts_never_win_and_bad_numbers_spoil_only_their_node(
        broker: Broker) -> None:
    settings = broker.settings()
    prefix = settings.prefix
    policies = policy_set(pool())
    metrics = Metrics()
    fleet = FleetModel(stale_after=600)
    source = MqttFactSource(settings, fleet, metrics=metrics)
    now = time.time()
    async with running(source), client_for(settings) as publisher:
        async def send(identity: str, payload: bytes) -> None:
            await publisher.publish(f"{prefix}/nodes/{identity}/facts", payload, qos=1)

        await send("n1", facts_payload("n1", active=30, ts=now, seq=7))
        await send("n2", facts_payload("n2", active=30, ts=now, seq=1))
        await send("n1", facts_payload("n1", active=59, ts=now - 10, seq=8))  # older ts
        await send("n1", facts_payload("n1", active=58, ts=now, seq=6))  # same ts, lower seq
        await send("n3", facts_payload("n3", active=10, ts=now, max_gears=0))
        await send("n4", legacy_payload(active=10, active_capacity="NaN"))
        await send("n5", legacy_payload(active=10, gears_active_usage_pct="Infinity"))
        await send("n6", facts_payload("n6", active=10, ts=now, active_usage_pct=float("inf")))
        await send("n7", legacy_payload(active=10, max_gears=0))
        await wait_until(lambda: len(fleet) == 7, what="7 nodes")
        await wait_until(lambda: bad_counts(metrics).get("out_of_order") == 2,
                         what="two out-of-order messages")
        assert fleet.facts("n1").gears.active == 30  # type: ignore[union-attr]
        evaluation = plan_now(fleet, policies, time.time()).pools["small"]
        # Only n1 and n2 count: 60 of 120. The bad nodes are unknown, not zero-capacity.
        assert evaluation.active == 2 and evaluation.unknown == 5
        assert evaluation.active_density == 0.5
        assert evaluation.degraded
        why = {n.identity: n.why_unknown for n in fleet.snapshot(time.time()).nodes}
        assert "max_active_gears is 0" in (why["n3"] or "")
        assert "nan" in (why["n4"] or "") and "inf" in (why["n5"] or "")
        assert "inf" in (why["n6"] or "") and "max_active_gears is 0" in (why["n7"] or "")
        # A newer good message makes a bad node good again.
        await send("n3", facts_payload("n3", active=10, ts=now + 1))
        await wait_until(lambda: fleet.is_fresh("n3", time.time()), what="n3 good again")


GARBAGE: list[tuple[str, bytes, str]] = [
    ("nodes/g1/facts", b"{not json", "invalid_json"),
    ("nodes/g1/facts", b"\xff\xfe\x00\x01", "invalid_json"),
    ("nodes/g1/facts", b"[1, 2, 3]", "not_an_object"),
    ("nodes/g1/facts", json.dumps({"schema": "gearshift.node.facts/9", "identity": "g1"}).encode(),
     "unknown_schema"),
    ("nodes/g1/facts", json.dumps({"something": 1, "else": [2]}).encode(), "unknown_schema"),
    ("nodes/g1/facts", json.dumps({
        "schema": "gearshift.node.facts/1", "identity": "g1", "node_profile": "small",
        "limits": {"max_active_gears": "sixty"}}).encode(), "wrong_type"),
    ("nodes/g1/facts", legacy_payload(active=3, gears_total_count="lots"), "wrong_type"),
    ("nodes/g1/facts", facts_payload("somebody-else", active=1, ts=1e9), "identity_mismatch"),
    ("nodes/g1/facts", b'{"pad": "' + b"x" * 70_000 + b'"}', "too_large"),
    ("nodes/g1/status", b"maybe", "bad_status"),
    ("requests", b"{", "invalid_json"),
    ("requests", json.dumps({"pool": "small", "gears": True}).encode(), "bad_request"),
    ("requests", json.dumps({"pool": "nope", "gears": 5}).encode(), "bad_request"),
]


async def test_a_burst_of_garbage_is_counted_and_good_facts_still_flow(broker: Broker) -> None:
    settings = broker.settings()
    prefix = settings.prefix
    metrics = Metrics()
    fleet = FleetModel(stale_after=600)
    book = RequestBook()
    source = MqttFactSource(settings, fleet, metrics=metrics, requests=book,
                            pool_names=lambda: {"small"})
    rounds = 15
    now = time.time()
    with capture_logs() as logs:
        async with running(source), client_for(settings) as publisher:
            for _ in range(rounds):
                for topic, payload, _reason in GARBAGE:
                    await publisher.publish(f"{prefix}/{topic}", payload, qos=1)
            for i in range(50):
                await publisher.publish(f"{prefix}/nodes/ok{i}/facts",
                                        facts_payload(f"ok{i}", active=i, ts=now), qos=1)
            await wait_until(lambda: len(fleet) == 50, what="the good facts after the garbage")
            await wait_until(lambda: sum(bad_counts(metrics).values()) == rounds * len(GARBAGE),
                             what="every bad message counted")
            assert source.connects == 1  # never dropped the connection, never died
    expected: dict[str, int] = {}
    for _topic, _payload, reason in GARBAGE:
        expected[reason] = expected.get(reason, 0) + rounds
    assert bad_counts(metrics) == expected
    assert fleet.facts("g1") is None and not book.active(now)
    # Rate-limited: one line per reason in the window, however many messages.
    dropped = [e for e in logs if e["event"] == "bad message dropped"]
    assert sorted(e["reason"] for e in dropped) == sorted(expected)
    assert all("x" * 300 not in json.dumps(e, default=str) for e in dropped)


def trust_policies() -> PolicySet:
    fast = {"stabilization": {"down": "0s"}, "cooldown": {"up": "0s", "down": "0s"}}
    low = pool(name="low", size={"min": 1, "max": 10}, **fast)
    high = pool(name="high", selector={"node_profile": "large"}, size={"min": 1, "max": 10},
                placement=[{"provider": "rack-a", "blueprint": "large-bm"}], **fast)
    return policy_set(low, high)


def kinds(plan: Plan, pool_name: str) -> set[str]:
    return {a.kind for a in plan.actions if a.pool == pool_name}


@pytest.mark.slow  # ~5 s per broker: waits for facts to go stale
async def test_broker_loss_freezes_scale_in_until_facts_are_fresh_again(broker: Broker) -> None:
    """Stop the real broker, start it again; retained facts with an old ts are not fresh."""
    settings = broker.settings()
    prefix = settings.prefix
    policies = trust_policies()
    metrics = Metrics()
    fleet = FleetModel(stale_after=5)
    source = MqttFactSource(settings, fleet, metrics=metrics, clock=SystemClock())
    small = ["n1", "n2", "n3"]

    async def publish(at: float, nodes: list[str], *, seq: int) -> None:
        async with client_for(settings) as publisher:
            for identity in nodes:
                payload = (facts_payload(identity, active=10, ts=at, seq=seq) if identity in small
                           else facts_payload(identity, active=14,
                                              ts=at, seq=seq, profile="large", max_gears=15))
                await publisher.publish(f"{prefix}/nodes/{identity}/facts", payload, qos=1,
                                        retain=True)

    t0 = time.time()
    await publish(t0, [*small, "h1", "g1"], seq=1)
    async with running(source):
        assert fleet.source_up
        plan = plan_now(fleet, policies, time.time())
        assert "drain" in kinds(plan, "low")  # fresh facts, low density: scale-in goes ahead
        assert "scale_out" in kinds(plan, "high")

        broker.stop()
        await wait_until(lambda: not fleet.source_up, what="the source to notice the loss")
        plan = plan_now(fleet, policies, time.time())
        assert not any(isinstance(a, Drain) for a in plan.actions)
        assert "fact source lost" in plan.pools["low"].summary
        assert plan.pools["low"].degraded
        assert any(isinstance(a, ScaleOut) and a.pool == "high" for a in plan.actions)

        broker.start()  # an empty broker (persistence off); put back facts as old as before
        await publish(t0, [*small, "h1", "g1"], seq=1)
        await wait_until(lambda: source.connects == 2 and source.caught_up.is_set(), 20,
                         "the reconnect")
        assert len(source.delays) >= 1
        assert all(settings.reconnect_min * 0.5 <= d <= settings.reconnect_max
                   for d in source.delays)
        assert not fleet.source_up and fleet.waiting_for == 5
        assert "drain" not in kinds(plan_now(fleet, policies, time.time()), "low")

        await publish(time.time(), [*small, "h1"], seq=2)  # g1 never speaks again
        await wait_until(lambda: fleet.waiting_for == 1, what="four nodes heard from")
        assert not fleet.source_up

        async def heartbeat() -> None:  # live agents keep publishing; g1 stays silent
            for seq in range(3, 100):
                await asyncio.sleep(1)
                await publish(time.time(), [*small, "h1"], seq=seq)

        beating = asyncio.create_task(heartbeat())
        # g1 goes stale (5 s after t0): it is unknown now, so there is nothing to wait for.
        await wait_until(lambda: fleet.source_up, 15, "facts fresh again")
        beating.cancel()
        assert time.time() - t0 >= 5
        plan = plan_now(fleet, policies, time.time())
        assert "drain" in kinds(plan, "low")
        assert plan.pools["high"].degraded and plan.pools["high"].unknown == 1
        assert "scale_out" in kinds(plan, "high")
        exposition = metrics.exposition().decode()
        assert "gearshift_fact_source_up 1.0" in exposition
        assert "gearshift_fact_source_reconnects_total 1.0" in exposition


async def test_capacity_requests_over_mqtt_drive_scale_out_until_met_or_expired(
        broker: Broker) -> None:
    settings = broker.settings()
    prefix = settings.prefix
    clock = ManualClock(start=time.time())
    policies = policy_set(pool(size={"min": 2, "max": 40}))
    fleet = FleetModel(stale_after=600)
    reconciler = sim_reconciler(policies, clock=clock, fleet=fleet)
    metrics = Metrics()
    source = MqttFactSource(settings, fleet, clock=clock, requests=reconciler.requests,
                            pool_names=lambda: {p.name for p in policies.pools},
                            on_facts=lambda: reconciler.wake("request"), metrics=metrics)
    async with client_for(settings) as publisher:
        # A retained request would come back with a new expiry on every reconnect: the
        # replay on subscribing is refused.
        await publisher.publish(f"{prefix}/requests", json.dumps(
            {"pool": "small", "gears": 50, "ttl": "1m"}).encode(), qos=1, retain=True)
    async with running(source), client_for(settings) as publisher:
        assert bad_counts(metrics) == {"retained_request": 1}
        await publisher.publish(f"{prefix}/requests", b"", qos=1, retain=True)
        for i in range(2):
            await publisher.publish(f"{prefix}/nodes/s{i}/facts",
                                    facts_payload(f"s{i}", active=20, ts=clock.now()), qos=1)
        await wait_until(lambda: len(fleet) == 2)
        plan = await reconciler.reconcile_once()
        assert not plan.actions  # 40 of 120: steady

        await publisher.publish(f"{prefix}/requests", json.dumps(
            {"pool": "small", "gears": 150, "ttl": "10m", "reason": "batch import",
             "id": "req-1"}).encode(), qos=1)
        await wait_until(lambda: len(reconciler.requests.active(clock.now())) == 1)
        snapshot = await reconciler.snapshot()
        assert [(r.request_id, r.gears) for r in snapshot.requests] == [("mqtt:req-1", 150)]
        plan = await reconciler.reconcile_once()
        grown = sum(a.count for a in plan.actions if isinstance(a, ScaleOut))
        assert grown >= 3  # 40 + 150 gears wanted at target 0.65 → ≥ 5 nodes, 2 there
        assert "150 gears requested" in plan.actions[0].reason
        plan = await reconciler.reconcile_once()
        assert not any(isinstance(a, ScaleOut) for a in plan.actions)  # met: nodes booting

        await clock.advance(601)
        assert not (await reconciler.snapshot()).requests  # expired

        # The same rules as POST /v1/capacity-requests: ttl capped at 7 days, nothing
        # unknown, no unknown pools.
        for body in ({"pool": "small", "gears": 5, "ttl": "99999999d"},
                     {"pool": "small", "gears": 5, "colour": "red"},
                     {"pool": "nope", "gears": 5}):
            await publisher.publish(f"{prefix}/requests", json.dumps(body).encode(), qos=1)
        await wait_until(lambda: bad_counts(metrics).get("bad_request") == 2)
        (capped,) = reconciler.requests.active(clock.now())
        assert capped.expires_at == clock.now() + 7 * 86400


async def test_a_fact_crossing_the_edge_wakes_the_reconciler_at_once(broker: Broker) -> None:
    """The reconciler's timer is an hour of fake time that never passes: only a wake helps."""
    settings = broker.settings()
    prefix = settings.prefix
    clock = ManualClock(start=time.time())
    policies = policy_set(pool())
    fleet = FleetModel(stale_after=600)
    metrics = Metrics()
    reconciler = sim_reconciler(policies, clock=clock, fleet=fleet, metrics=metrics,
                                interval=3600)
    waker = EdgeWaker(reconciler, debounce=0.05)
    source = MqttFactSource(settings, fleet, clock=clock, metrics=metrics, on_facts=waker.poke)
    plans: list[Plan] = []
    reconciler.on_reconciled.append(plans.append)
    stop = asyncio.Event()
    async with running(source), client_for(settings) as publisher:
        for i in range(4):
            await publisher.publish(f"{prefix}/nodes/s{i}/facts",
                                    facts_payload(f"s{i}", active=30, ts=clock.now()), qos=1)
        await wait_until(lambda: len(fleet) == 4)
        tasks = [asyncio.create_task(reconciler.run(stop)), asyncio.create_task(waker.run(stop))]
        await wait_until(lambda: len(plans) == 1, what="the first reconcile")
        assert not plans[0].actions  # 120/240 = 0.5: inside the band

        # Inside the band, a changed fact is no reason to reconcile.
        await publisher.publish(f"{prefix}/nodes/s0/facts",
                                facts_payload("s0", active=35, ts=clock.now(), seq=2), qos=1)
        await wait_until(lambda: fleet.facts("s0").gears.active == 35)  # type: ignore[union-attr]
        await asyncio.sleep(0.3)
        assert len(plans) == 1

        before = clock.now()
        for i in range(4):  # 58/60 each: 0.97 > 0.80
            await publisher.publish(f"{prefix}/nodes/s{i}/facts",
                                    facts_payload(f"s{i}", active=58, ts=clock.now(), seq=3),
                                    qos=1)
        await wait_until(lambda: len(plans) == 2, 5, "a reconcile woken by the edge")
        assert any(isinstance(a, ScaleOut) for a in plans[1].actions)
        assert waker.wakes == 1
        assert clock.now() == before  # the 3600 s timer (fake time) never ran: a wake did it
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 5)


async def test_an_offline_node_marks_its_pool_degraded_in_status_and_metrics(
        broker: Broker) -> None:
    settings = broker.settings()
    prefix = settings.prefix
    policies = policy_set(pool())
    fleet = FleetModel(stale_after=600)
    metrics = Metrics()
    reconciler = sim_reconciler(policies, clock=SystemClock(), fleet=fleet, metrics=metrics)
    api = ApiServer(reconciler, metrics, token=None)
    port = free_port()
    await api.start("127.0.0.1", port)
    base = f"http://127.0.0.1:{port}"
    try:
        async with running(MqttFactSource(settings, fleet, metrics=metrics)), \
                client_for(settings) as publisher, aiohttp.ClientSession() as http:
            for i in range(3):
                await publisher.publish(f"{prefix}/nodes/n{i}/facts",
                                        facts_payload(f"n{i}", active=30, ts=time.time()), qos=1)
            await publisher.publish(f"{prefix}/nodes/n1/status", b"offline", qos=1)
            await wait_until(lambda: len(fleet) == 3 and not fleet.is_fresh("n1", time.time()))
            await reconciler.reconcile_once()
            async with http.get(f"{base}/v1/status") as response:
                status = await response.json()
            small = status["pools"]["small"]
            assert small["degraded"] is True and status["facts_fresh"] is True
            assert small["nodes"] == {"active": 2, "booting": 0, "draining": 0, "unknown": 1,
                                      "parked": 0}
            async with http.get(f"{base}/metrics") as response:
                text = await response.text()
            assert 'gearshift_pool_degraded{pool="small"} 1.0' in text
            assert 'gearshift_pool_nodes{pool="small",state="unknown"} 1.0' in text

            await publisher.publish(f"{prefix}/nodes/n1/status", b"online", qos=1)
            await publisher.publish(f"{prefix}/nodes/n1/facts",
                                    facts_payload("n1", active=30, ts=time.time(), seq=2), qos=1)
            await wait_until(lambda: fleet.is_fresh("n1", time.time()), what="n1 back")
            await reconciler.reconcile_once()
            async with http.get(f"{base}/v1/status") as response:
                assert (await response.json())["pools"]["small"]["degraded"] is False
    finally:
        await api.stop()
