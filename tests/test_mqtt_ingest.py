"""Facts over a real mosquitto: retained fleet at start-up, bad messages counted, wake-ups."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import aiomqtt
import pytest

from gearshift.clock import SystemClock
from gearshift.metrics import Metrics
from gearshift.model import NodeState
from gearshift.observe.fleet import FleetModel
from gearshift.observe.mqtt import MqttFactSource
from gearshift.settings import MqttSettings

PREFIX = "gearshift/v1"


# One ts for every message (not ahead of the daemon's clock: see MAX_CLOCK_SKEW), so the
# order between messages of a node is decided by seq.
TS = datetime.now(UTC).isoformat()


def facts(identity: str, *, active: int, seq: int, ts: str = TS) -> bytes:
    return json.dumps({
        "schema": "gearshift.node.facts/1", "ts": ts, "seq": seq, "identity": identity,
        "node_profile": "small", "limits": {"max_active_gears": 60},
        "gears": {"total": active, "active": active}}).encode()


async def wait_until(predicate, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_retained_facts_give_the_fleet_and_bad_messages_are_counted(
        mosquitto: tuple[str, int]) -> None:
    host, port = mosquitto
    prefix = f"{PREFIX}/test-{port}-ingest"
    settings = MqttSettings(host=host, port=port, prefix=prefix)
    async with aiomqtt.Client(host, port) as publisher:
        for i in range(5):
            await publisher.publish(f"{prefix}/nodes/n{i}/facts",
                                    facts(f"n{i}", active=10 * i, seq=1), qos=1, retain=True)
        fleet = FleetModel(stale_after=10**9)
        metrics = Metrics()
        pokes: list[int] = []
        source = MqttFactSource(settings, fleet, metrics=metrics, clock=SystemClock(),
                                on_facts=lambda: pokes.append(1))
        stop = asyncio.Event()
        task = asyncio.create_task(source.run(stop))
        await wait_until(lambda: len(fleet) == 5)
        await asyncio.wait_for(source.caught_up.wait(), 5)
        assert fleet.source_up
        assert fleet.facts("n3").gears.active == 30  # type: ignore[union-attr]

        await publisher.publish(f"{prefix}/nodes/n1/facts", b"{garbage", qos=1)
        await publisher.publish(f"{prefix}/nodes/n2/facts", facts("n9", active=1, seq=2), qos=1)
        await publisher.publish(f"{prefix}/nodes/n3/facts", facts("n3", active=1, seq=0), qos=1)
        await publisher.publish(f"{prefix}/nodes/n4/status", b"offline", qos=1)
        await publisher.publish(f"{prefix}/nodes/n0/facts", facts("n0", active=42, seq=2), qos=1)
        await wait_until(lambda: fleet.facts("n0").gears.active == 42)  # type: ignore[union-attr]
        exposition = metrics.exposition().decode()
        assert 'gearshift_bad_messages_total{reason="invalid_json"} 1.0' in exposition
        assert 'gearshift_bad_messages_total{reason="identity_mismatch"} 1.0' in exposition
        assert 'gearshift_bad_messages_total{reason="out_of_order"} 1.0' in exposition
        assert fleet.facts("n3").gears.active == 30  # type: ignore[union-attr]
        states = {n.identity: n.state for n in fleet.snapshot(0).nodes}
        assert states["n4"] is NodeState.UNKNOWN
        assert pokes

        await source.forget_node("n0")  # a retired node's retained facts are cleared
        assert fleet.facts("n0") is None
        stop.set()
        await asyncio.wait_for(task, 5)
        for i in range(5):
            await publisher.publish(f"{prefix}/nodes/n{i}/facts", b"", qos=1, retain=True)


async def test_broker_loss_marks_the_source_down_and_it_reconnects(
        mosquitto: tuple[str, int], tmp_path) -> None:
    from gearshift.sim.broker import start_mosquitto  # a broker of its own, to stop

    process, port = start_mosquitto(tmp_path)
    fleet = FleetModel(stale_after=60)
    source = MqttFactSource(MqttSettings(host="127.0.0.1", port=port), fleet)
    stop = asyncio.Event()
    task = asyncio.create_task(source.run(stop))
    try:
        await asyncio.wait_for(source.caught_up.wait(), 5)
        assert fleet.source_up
        process.terminate()
        process.wait(5)
        await wait_until(lambda: not fleet.source_up)
        process, _ = start_mosquitto(tmp_path, port=port)
        await wait_until(lambda: fleet.source_up, timeout=15)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        process.terminate()
        process.wait(5)


async def test_a_dispatching_client_hands_over_every_message_in_order_and_sees_the_loss(
        tmp_path) -> None:
    """The fact source's client queues nothing: each message reaches the handler as it is
    read, in the broker's order, and ``client.messages`` still ends when the link drops."""
    from gearshift.sim.broker import start_mosquitto
    from gearshift.wire.mqtt import client_for

    process, port = start_mosquitto(tmp_path)
    settings = MqttSettings(host="127.0.0.1", port=port)
    got: list[tuple[str, bytes]] = []
    ended = False
    try:
        async with client_for(settings, on_message=lambda m: got.append(
                (m.topic.value, bytes(m.payload)))) as client:
            await client.subscribe("t/#", qos=1)
            async with aiomqtt.Client("127.0.0.1", port) as publisher:
                for i in range(300):
                    await publisher.publish(f"t/{i % 7}", str(i).encode(), qos=1)
            await wait_until(lambda: len(got) == 300)
            assert [int(p) for _, p in got] == list(range(300))
            assert [t for t, _ in got[:8]] == [f"t/{i % 7}" for i in range(8)]
            assert len(client.messages) == 0  # nothing waits in aiomqtt's queue
            process.terminate()
            process.wait(5)
            with pytest.raises(aiomqtt.MqttError):
                async with asyncio.timeout(10):
                    async for _ in client.messages:
                        pass
            ended = True
    except aiomqtt.MqttError:
        assert ended  # only leaving the client after the broker went away may fail
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(5)
    assert ended



async def test_a_handler_that_raises_loses_one_message_not_the_connection(tmp_path) -> None:
    """paho would re-raise a handler's exception without consuming the packet and hand it
    over again on every read: the dispatching queue logs and drops it instead."""
    from gearshift.sim.broker import start_mosquitto
    from gearshift.wire.mqtt import client_for

    process, port = start_mosquitto(tmp_path)
    seen: list[bytes] = []

    def handler(message: aiomqtt.Message) -> None:
        seen.append(bytes(message.payload))
        if message.payload == b"poison":
            raise RuntimeError("a bug")

    try:
        async with client_for(MqttSettings(host="127.0.0.1", port=port),
                              on_message=handler) as client:
            await client.subscribe("t/#", qos=1)
            async with aiomqtt.Client("127.0.0.1", port) as publisher:
                for payload in (b"1", b"poison", b"2", b"3"):
                    await publisher.publish("t/x", payload, qos=1)
            await wait_until(lambda: seen[-1:] == [b"3"])
            assert seen == [b"1", b"poison", b"2", b"3"]
            await client.publish("t/y", b"still connected", qos=1)
            await wait_until(lambda: seen[-1:] == [b"still connected"])
    finally:
        process.terminate()
        process.wait(5)
