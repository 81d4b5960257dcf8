"""The MCollective fact source against real peers: ActiveMQ 5.17 (STOMP) and 20 real
mcollectived processes, each with its own identity, facts file, config, log and libdir.

What the nodes answer must land in the fleet exactly as the legacy-facts path maps it;
a facts file change shows within one interval; a stopped mcollectived goes stale; a node
with the wrong PSK never gets in and forged, foreign or oversized replies are refused
with a reason; a broker restart is survived; and a scale-out is decided from these facts.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import stompman

from builders import policy_set, pool
from conftest import ROOT
from gearshift.act.platform.null import NullPlatform
from gearshift.act.providers.guard import GuardedProvider
from gearshift.clock import SystemClock
from gearshift.daemon import load_policies, serve
from gearshift.metrics import Metrics
from gearshift.model import NodeState, ScaleOut
from gearshift.observe.fleet import FleetModel
from gearshift.observe.mcollective.marshal import Symbol, dumps
from gearshift.observe.mcollective.psk import digest
from gearshift.observe.mcollective.source import McoFactSource
from gearshift.settings import McollectiveSettings, load_settings
from gearshift.sim.broker import free_port
from gearshift.sim.providers import SimulatedProvider
from gearshift.sim.world import SimWorld
from gearshift.store.journal import MemoryJournal
from gearshift.wire.facts import parse_legacy_facts
from mcopeers import MCO_APT, PSK, McoNode, mcollective_missing, node_facts, start_nodes, stop_nodes
from peers import Broker
from rigs import sim_reconciler, wait_until
from test_cli import gearshift

pytestmark = pytest.mark.slow

COUNT = 20
MEDIUM = {f"node-{i:02d}.example.com" for i in range(17, COUNT + 1)}


def facts_of(identity: str, *, active: int | None = None) -> dict[str, object]:
    number = int(identity[5:7])
    profile = "medium" if identity in MEDIUM else "small"
    return node_facts(identity, profile=profile, active=number if active is None else active,
                      max_active=30 if profile == "medium" else 60)


def as_mcollective(facts: dict[str, object]) -> dict[str, str]:
    """What rpcutil sends: every value ``to_s`` in Ruby."""
    return {k: ("true" if v is True else "false" if v is False else str(v))
            for k, v in facts.items()}


@pytest.fixture(scope="module")
def stomp(activemq_peer: Broker) -> Broker:
    if activemq_peer.process is None or activemq_peer.process.poll() is not None:
        activemq_peer.start()
    return activemq_peer


@pytest.fixture(scope="module")
def mco_nodes(stomp: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[McoNode]]:
    if mcollective_missing():
        pytest.fail(f"mcollectived is not installed; run: {MCO_APT}")
    directory = tmp_path_factory.mktemp("mco")
    identities = [f"node-{i:02d}.example.com" for i in range(1, COUNT + 1)]
    nodes = start_nodes(directory, count=COUNT, port=stomp.extra["stomp"],
                        facts={i: facts_of(i) for i in identities})
    try:
        asyncio.run(_wait_for_nodes(stomp, COUNT))
        yield nodes
    finally:
        stop_nodes(nodes)


def settings_for(broker: Broker, **overrides: object) -> McollectiveSettings:
    values: dict[str, object] = {
        "enabled": True, "brokers": [f"127.0.0.1:{broker.extra['stomp']}"], "psk": PSK,
        "interval": 2.0, "timeout": 1.0, "jitter": 0.1, "discovery_interval": 60.0,
        "heartbeat": 2.0}
    values.update(overrides)
    return McollectiveSettings.model_validate(values)


@asynccontextmanager
async def running(source: McoFactSource, timeout: float = 30.0) -> AsyncIterator[McoFactSource]:
    stop = asyncio.Event()
    task = asyncio.create_task(source.run(stop))
    try:
        await wait_until(source.caught_up.is_set, timeout, "the first MCollective round")
        yield source
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def _wait_for_nodes(broker: Broker, count: int) -> None:
    """mcollectived takes a few seconds to start: discover until all of them answer."""
    fleet = FleetModel(stale_after=600)
    source = McoFactSource(settings_for(broker, timeout=1.5), fleet)
    async with running(source, timeout=60):
        await wait_until(lambda: len(fleet) >= count, 90, f"{count} mcollectived to answer")


def bad(metrics: Metrics) -> dict[str, float]:
    return {s.labels["reason"]: s.value for m in metrics.registry.collect()
            if m.name == "gearshift_bad_messages" for s in m.samples
            if s.name.endswith("_total") and s.value}


async def rounds(source: McoFactSource, count: int) -> None:
    target = source.rounds + count
    await wait_until(lambda: source.rounds >= target, 30, f"{count} more rounds")


async def test_facts_read_exactly_as_the_legacy_path_maps_them(
        stomp: Broker, mco_nodes: list[McoNode]) -> None:
    fleet = FleetModel(stale_after=600)
    metrics = Metrics()
    source = McoFactSource(settings_for(stomp, poll="directed"), fleet, metrics=metrics)
    async with running(source):
        assert fleet.source_up
        assert sorted(fleet.identities()) == sorted(n.identity for n in mco_nodes)
        for node in mco_nodes:
            expected = parse_legacy_facts(as_mcollective(facts_of(node.identity)),
                                          identity=node.identity)
            assert fleet.facts(node.identity) == expected
        facts = fleet.facts("node-17.example.com")
        assert facts is not None
        assert (facts.node_profile, facts.max_active_gears, facts.gears.active,
                facts.district_uuid) == ("medium", 30, 17, "d-1")
        await rounds(source, 1)
        # Directed polls: one request per node and one reply each, nothing refused.
        assert source.sent >= 1 + 2 * COUNT and source.received >= 3 * COUNT
        assert bad(metrics) == {}


async def test_fact_and_identity_filters_choose_the_nodes(
        stomp: Broker, mco_nodes: list[McoNode]) -> None:
    medium = FleetModel(stale_after=600)
    chosen = FleetModel(stale_after=600)
    by_profile = McoFactSource(settings_for(stomp, facts_filter={"node_profile": "medium"},
                                            poll="broadcast"), medium)
    by_identity = McoFactSource(settings_for(
        stomp, identities=["node-01.example.com", "/node-0[23]/"]), chosen)
    async with running(by_profile), running(by_identity):
        await rounds(by_profile, 1)
        assert set(medium.identities()) == MEDIUM
        assert set(chosen.identities()) == {f"node-0{i}.example.com" for i in (1, 2, 3)}
        # Broadcast: one request a round (the current one may have been sent already).
        assert by_profile.sent - by_profile.rounds in (0, 1)


async def test_a_facts_file_change_is_seen_within_one_interval(
        stomp: Broker, mco_nodes: list[McoNode]) -> None:
    fleet = FleetModel(stale_after=600)
    source = McoFactSource(settings_for(stomp), fleet)
    node = mco_nodes[2]
    try:
        async with running(source):
            before = fleet.facts(node.identity)
            assert before is not None and before.gears.active == 3
            node.write_facts(facts_of(node.identity, active=42))
            changed_at = source.rounds
            # The next round that starts after the change has it: at most one interval.
            await rounds(source, 2)
            after = fleet.facts(node.identity)
            assert after is not None and after.gears.active == 42
            assert source.rounds - changed_at <= 2
    finally:
        node.write_facts(facts_of(node.identity))


async def test_a_stopped_mcollectived_goes_stale(stomp: Broker,
                                                 mco_nodes: list[McoNode]) -> None:
    fleet = FleetModel(stale_after=4.0)
    source = McoFactSource(settings_for(stomp), fleet)
    node = mco_nodes[-1]
    try:
        async with running(source):
            assert fleet.is_fresh(node.identity, time.time())
            node.stop()
            await wait_until(lambda: not fleet.is_fresh(node.identity, time.time()), 30,
                             "the stopped node to go stale")
            snapshot = fleet.snapshot(time.time())
            states = {n.identity: n for n in snapshot.nodes}
            assert states[node.identity].state is NodeState.UNKNOWN
            assert (states[node.identity].why_unknown or "").startswith("silent")
            assert sum(n.state is NodeState.ACTIVE for n in snapshot.nodes) == COUNT - 1
    finally:
        node.start()
    async with running(McoFactSource(settings_for(stomp), fleet)) as again:
        await wait_until(lambda: fleet.is_fresh(node.identity, time.time()), 60,
                         "the restarted node to answer")
        assert again.rounds >= 1


def _forged(request_id: str, *, sender: str, psk: str, body: bytes | None = None,
            msgtime: float | None = None) -> bytes:
    body = body if body is not None else dumps(
        {Symbol("statuscode"): 0, Symbol("statusmsg"): "OK",
         Symbol("data"): {Symbol("facts"): {"node_profile": "small", "max_active_gears": "60"}}})
    return dumps({Symbol("senderid"): sender, Symbol("requestid"): request_id,
                  Symbol("senderagent"): "rpcutil",
                  Symbol("msgtime"): int(msgtime or time.time()), Symbol("body"): body,
                  Symbol("hash"): digest(body, psk.encode())})


async def test_wrong_psk_forged_foreign_and_oversized_replies_are_refused(
        stomp: Broker, mco_nodes: list[McoNode], tmp_path: Path) -> None:
    rogue = McoNode("rogue.example.com", tmp_path / "rogue", stomp.extra["stomp"],
                    psk="not-the-fleet-psk", loglevel="info")
    rogue.directory.mkdir()
    rogue.write_facts(node_facts(rogue.identity))
    rogue.start()
    await wait_until(lambda: "Connected to" in rogue.log(), 30, "the rogue node to connect")
    fleet = FleetModel(stale_after=600)
    metrics = Metrics()
    source = McoFactSource(settings_for(stomp, interval=5.0, timeout=3.0, max_reply=8192,
                                        poll="directed"), fleet, metrics=metrics)
    # A node discovered earlier that no longer answers keeps each poll open its full timeout.
    source.targets["ghost.example.com"] = time.time() + 3600
    forger = stompman.Client([stompman.ConnectionParameters(
        "127.0.0.1", stomp.extra["stomp"], "", "")])
    try:
        async with running(source), forger:
            await wait_until(lambda: "invalid signature" in rogue.log(), 30,
                             "the rogue node to refuse our requests")
            await wait_until(lambda: any(r.kind == "poll" for r in source.open.values()), 10,
                             "a poll collecting replies")
            rid = next(k for k, r in source.open.items() if r.kind == "poll")
            for payload in (
                    _forged(rid, sender="node-01.example.com", psk="not-the-fleet-psk"),
                    _forged(rid, sender="intruder.example.com", psk=PSK),
                    _forged(uuid.uuid4().hex, sender="node-01.example.com", psk=PSK),
                    _forged(rid, sender="node-02.example.com", psk=PSK,
                            msgtime=time.time() - 3600),
                    _forged(rid, sender="node-03.example.com", psk=PSK,
                            body=b"\x04\x08o:\x0bObject\x00"),
                    _forged(rid, sender="node-04.example.com", psk=PSK, body=dumps("x" * 10000))):
                await forger.send(payload, source.reply_to)
            await wait_until(lambda: len(bad(metrics)) >= 6, 10, "six refusals")
            await rounds(source, 1)
        assert bad(metrics) == {"bad_digest": 1, "identity_not_asked": 1,
                                "unknown_request": 1, "expired": 1,
                                "marshal_refused_type": 1, "too_large": 1}
        assert "rogue.example.com" not in set(fleet.identities())
        assert "intruder.example.com" not in set(fleet.identities())
        assert len(fleet) == COUNT
    finally:
        rogue.stop()


async def test_scale_out_decided_from_mcollective_facts(stomp: Broker,
                                                       mco_nodes: list[McoNode]) -> None:
    small = [n for n in mco_nodes if n.identity not in MEDIUM]
    try:
        for node in small:  # 55 of 60 active on every small node: density 0.92 > 0.80
            node.write_facts(facts_of(node.identity, active=55))
        policies = policy_set(pool(size={"min": 2, "max": 40}))
        fleet = FleetModel(stale_after=600)
        reconciler = sim_reconciler(policies, clock=SystemClock(), fleet=fleet)
        source = McoFactSource(settings_for(stomp), fleet,
                               on_facts=lambda: reconciler.wake("facts"))
        async with running(source):
            await wait_until(lambda: all((f := fleet.facts(n.identity)) is not None
                                         and f.gears.active == 55 for n in small), 30,
                             "the busy facts")
            plan = await reconciler.reconcile_once()
        outs = [a for a in plan.actions if isinstance(a, ScaleOut)]
        assert outs and all(a.pool == "small" for a in outs)
        assert sum(a.count for a in outs) >= 1
        assert "0.92" in outs[0].reason
        assert plan.pools["small"].active == len(small)
    finally:
        for node in small:
            node.write_facts(facts_of(node.identity))


async def test_a_broker_restart_is_survived(stomp: Broker, mco_nodes: list[McoNode]) -> None:
    fleet = FleetModel(stale_after=600)
    metrics = Metrics()
    source = McoFactSource(settings_for(stomp), fleet, metrics=metrics)
    async with running(source):
        assert fleet.source_up
        stomp.stop()
        try:
            await wait_until(lambda: not fleet.source_up, 30, "the loss to be noticed")
        finally:
            stomp.start()
        await wait_until(lambda: fleet.source_up, 90, "facts fresh again after the restart")
        lost_at = source.lost_at
        assert lost_at is not None
        await rounds(source, 1)
        snapshot = fleet.snapshot(time.time())
        assert sum(n.state is NodeState.ACTIVE for n in snapshot.nodes) == COUNT
        assert all(n.last_seen is not None and n.last_seen > lost_at for n in snapshot.nodes)
    assert source.connects >= 2


def test_plan_and_config_check_from_the_command_line(stomp: Broker, mco_nodes: list[McoNode],
                                                     tmp_path: Path) -> None:
    psk_file = tmp_path / "mcollective.psk"
    psk_file.write_text(PSK + "\n")
    config = tmp_path / "config.yaml"
    base = (f"policies_dir: {ROOT / 'policies'}\n"
            f"providers_file: {ROOT / 'policies' / 'providers.yaml'}\n"
            f"mcollective:\n  enabled: true\n  timeout: 1s\n"
            f"  brokers: ['127.0.0.1:{stomp.extra['stomp']}']\n")
    config.write_text(base + f"  psk_file: {psk_file}\n")
    result = gearshift("plan", "--config", str(config), "--json")
    assert result.returncode == 0, result.stderr
    small = json.loads(result.stdout)["pools"]["small"]
    assert small["active"] == COUNT - len(MEDIUM)
    assert PSK not in result.stdout + result.stderr
    checked = gearshift("config", "check", "--config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config.write_text(base + f"  psk_file: {tmp_path / 'missing.psk'}\n")
    refused = gearshift("config", "check", "--config", str(config))
    assert refused.returncode == 1
    assert "cannot read MCollective psk from" in refused.stderr
    assert "Traceback" not in refused.stderr


async def test_the_daemon_reads_its_fleet_from_mcollective(stomp: Broker, mco_nodes: list[McoNode],
                                                           tmp_path: Path) -> None:
    """daemon.serve (what gearshift run ends in) with mcollective enabled: the fleet in
    /v1/status comes from the mcollectived nodes; SIGTERM stops it."""
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(
        f"policies_dir: {ROOT / 'policies'}\n"
        f"providers_file: {ROOT / 'policies' / 'providers.yaml'}\n"
        f"http: {{port: {port}}}\njournal: {{kind: memory}}\npolicy_poll: 0\n"
        f"mcollective: {{enabled: true, psk: {PSK}, interval: 2s, timeout: 1s,\n"
        f"  brokers: ['127.0.0.1:{stomp.extra['stomp']}']}}\n")
    settings = load_settings(config)
    clock = SystemClock()
    metrics = Metrics()
    policies = load_policies(settings, metrics)
    assert policies.current.providers is not None
    world = SimWorld(seed=1, start=clock.now(), move_time=1.0)
    providers = {spec.name: GuardedProvider(
        SimulatedProvider(spec, world=world, clock=clock, rng=random.Random(1)), clock=clock,
        metrics=metrics, boot_time=spec.boot_time) for spec in policies.current.providers.providers}
    # The platform cannot vouch here (the mcollectived nodes are in no simulated district):
    # with SimulatedPlatform(world) they would rightly count as unvouched, for no pool.
    daemon = asyncio.create_task(serve(settings, policies=policies, providers=providers,
                                       platform=NullPlatform(), journal=MemoryJournal(),
                                       clock=clock, metrics=metrics))
    status: dict[str, Any] = {}
    try:
        async with aiohttp.ClientSession() as http:
            async def fleet_in_status() -> bool:
                nonlocal status
                try:
                    async with http.get(f"http://127.0.0.1:{port}/v1/status") as response:
                        status = await response.json()
                except aiohttp.ClientError:
                    return False
                return bool(status.get("pools", {}).get("small", {}).get("nodes", {})
                            .get("active"))

            deadline = time.monotonic() + 60
            while not await fleet_in_status():
                assert time.monotonic() < deadline, status
                await asyncio.sleep(0.5)
    finally:
        if not daemon.done():  # serve's own SIGTERM handler stops it (as systemd would)
            os.kill(os.getpid(), signal.SIGTERM)
        assert await asyncio.wait_for(daemon, 30) == 0
    assert status["pools"]["small"]["nodes"]["active"] == COUNT - len(MEDIUM)
    exposition = metrics.exposition().decode()
    assert "gearshift_fact_source_up 1.0" in exposition
    assert 'gearshift_mcollective_messages_total{direction="received"}' in exposition
