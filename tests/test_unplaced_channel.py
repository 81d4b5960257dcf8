"""The unplaced-gears report on the capacity-request channel: over HTTP (bearer token,
like capacity requests) and over MQTT (the ``{prefix}/unplaced`` topic), both through
``observe.unplaced``; what it changes in the next plan."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from builders import policy_set, pool
from conftest import ROOT
from gearshift.api.server import ApiServer
from gearshift.clock import ManualClock
from gearshift.metrics import Metrics
from gearshift.model import ScaleOut
from gearshift.observe.fleet import FleetModel
from gearshift.observe.mqtt import MqttFactSource
from gearshift.observe.requests import RequestBook
from gearshift.settings import MqttSettings
from gearshift.wire.mqtt import client_for
from peers import Broker
from rigs import facts_payload, running, sim_reconciler, wait_until
from test_api_and_metrics import TOKEN
from test_reconciler import Rig


async def test_http_reports_need_the_token_are_bounded_and_reach_the_plan() -> None:
    clock = ManualClock()
    rig = Rig(policy_set(pool(step={"max_up": 20, "max_down": 2})), demand=110, clock=clock)
    await rig.seed()
    await rig.reconciler.reconcile_once()
    await clock.advance(61)  # past the first growth's cooldown
    api = ApiServer(rig.reconciler, rig.metrics, token=TOKEN, max_body=1024)
    right = {"Authorization": f"Bearer {TOKEN}"}
    body = {"pool": "small", "gears": 300, "source": "broker-1", "ttl": "2m"}
    async with TestClient(TestServer(api.app)) as client:
        assert (await client.post("/v1/unplaced-gears", json=body)).status == 401
        assert (await client.post("/v1/unplaced-gears", json=body,
                                  headers={"Authorization": "Bearer nope"})).status == 403
        for bad in ({"pool": "nope", "gears": 1}, {"pool": "small", "gears": -1},
                    {"pool": "small", "gears": 100_001}, {"pool": "small", "gears": 1, "x": 1}):
            assert (await client.post("/v1/unplaced-gears", json=bad, headers=right)
                    ).status == 422, bad
        assert (await client.post("/v1/unplaced-gears", data=b"[1]", headers=right)
                ).status == 400
        assert rig.reconciler.requests.active(clock.now()) == []  # bad input changed nothing
        accepted = await client.post("/v1/unplaced-gears", json=body, headers=right)
        assert accepted.status == 200
        answer = await accepted.json()
        assert answer["pool"] == "small" and answer["gears"] == 300
        assert answer["source"] == "broker-1" and answer["expires_at"]
        before = await rig.reconciler.dry_run()
        assert "300 unplaced reported by broker" in before.pools["small"].summary
        grown = [a for a in before.actions if isinstance(a, ScaleOut)]
        assert grown and "+ 300 unplaced reported by broker" in grown[0].reason, before.pools
        # 0 replaces the source's report: nothing refused, the next plan sees the facts.
        cleared = await client.post("/v1/unplaced-gears", headers=right,
                                    json={"pool": "small", "gears": 0, "source": "broker-1"})
        assert cleared.status == 200
        after = await rig.reconciler.dry_run()
        assert "unplaced" not in after.pools["small"].summary
        # A report expires after its ttl.
        await client.post("/v1/unplaced-gears", json=body, headers=right)
        await clock.advance(121)
        assert rig.reconciler.requests.active(clock.now()) == []


def test_mqtt_reports_go_to_the_same_book_and_bad_ones_are_counted() -> None:
    metrics = Metrics()
    book = RequestBook()
    woken: list[int] = []
    src = MqttFactSource(MqttSettings(prefix="gs/v1"), FleetModel(stale_after=60),
                         metrics=metrics, requests=book, pool_names=lambda: {"small"},
                         on_facts=lambda: woken.append(1))
    src.handle("gs/v1/unplaced", json.dumps({"pool": "small", "gears": 40}).encode())
    src.handle("gs/v1/unplaced", json.dumps({"pool": "small", "gears": 40}).encode(),
               retained=True)  # would come back on every reconnect
    src.handle("gs/v1/unplaced", json.dumps({"pool": "big", "gears": 40}).encode())
    src.handle("gs/v1/unplaced", b"[1]")
    src.handle("gs/v1/unplaced", b"{")
    [report] = book.active(0.0)
    assert (report.pool, report.gears, report.unplaced) == ("small", 40, True)
    assert report.request_id == "unplaced:broker:small" and woken == [1]
    text = metrics.exposition().decode()
    assert 'gearshift_bad_messages_total{reason="retained_request"} 1.0' in text
    assert 'gearshift_bad_messages_total{reason="bad_request"} 1.0' in text
    assert 'gearshift_bad_messages_total{reason="not_an_object"} 1.0' in text
    assert 'gearshift_bad_messages_total{reason="invalid_json"} 1.0' in text


HOOK = ROOT / "deploy" / "broker-hook" / "gearshift-broker-hook"
LOG = (b"2026-12-05 web create gear_size: small No nodes available\n"
       b"2026-12-05 something else\n"
       b"2026-12-05 batch create gear_size=medium No nodes available\n"
       b"2026-12-05 web create gear_size: small No nodes available\n")


async def test_the_shipped_hook_reports_refusals_per_pool_to_a_live_api(tmp_path: Path) -> None:
    clock = ManualClock()
    rig = Rig(policy_set(pool()), demand=110, clock=clock)
    await rig.seed()
    api = ApiServer(rig.reconciler, rig.metrics, token=TOKEN, max_body=1024)
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    async with TestClient(TestServer(api.app)) as client:
        url = str(client.make_url("/"))
        hook = await asyncio.create_subprocess_exec(
            sys.executable, str(HOOK), "--url", url, "--token-file", str(token),
            "--pool", "small=small", "--pool", "medium=nope", "--every", "0",
            "--source", "broker-1", stdin=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        _, errors = await hook.communicate(LOG)
    assert hook.returncode == 0
    # "nope" is no pool: refused (422) and said so; "small" counts its 2 refusals.
    assert b"nope: HTTP Error 422" in errors
    [report] = rig.reconciler.requests.active(clock.now())
    assert (report.pool, report.gears, report.request_id) == ("small", 2,
                                                             "unplaced:broker-1:small")


def test_the_hook_dry_run_prints_the_reports() -> None:
    result = subprocess.run([sys.executable, str(HOOK), "--pool", "*=web", "--dry-run",
                             "--every", "0", "--source", "b"], input=LOG,
                            capture_output=True, check=True, timeout=30)
    bodies = [json.loads(line) for line in result.stdout.splitlines()]
    assert [b["gears"] for b in bodies] == [1, 1, 2, 3]  # a report after every line
    assert all(b["pool"] == "web" and b["source"] == "b" and b["ttl"] == "2m" for b in bodies)


async def test_unplaced_reports_over_a_real_broker_size_the_growth(broker: Broker) -> None:
    settings = broker.settings()
    prefix = settings.prefix
    clock = ManualClock(start=time.time())
    policies = policy_set(pool(size={"min": 2, "max": 40}, step={"max_up": 20, "max_down": 2}))
    fleet = FleetModel(stale_after=600)
    reconciler = sim_reconciler(policies, clock=clock, fleet=fleet)
    metrics = Metrics()
    source = MqttFactSource(settings, fleet, clock=clock, requests=reconciler.requests,
                            pool_names=lambda: {p.name for p in policies.pools},
                            on_facts=lambda: reconciler.wake("unplaced"), metrics=metrics)
    async with running(source), client_for(settings) as publisher:
        for i in range(2):
            await publisher.publish(f"{prefix}/nodes/s{i}/facts",
                                    facts_payload(f"s{i}", active=60, ts=clock.now()), qos=1)
        await wait_until(lambda: len(fleet) == 2)
        await publisher.publish(f"{prefix}/unplaced", json.dumps(
            {"pool": "small", "gears": 500, "source": "broker-1"}).encode(), qos=1)
        await wait_until(lambda: len(reconciler.requests.active(clock.now())) == 1)
        plan = await reconciler.reconcile_once()
        grown = sum(a.count for a in plan.actions if isinstance(a, ScaleOut))
        # 120 + 500 gears at target 0.65: 954 slots, 120 there -> 14 nodes in one go.
        assert grown == 14
        assert "+14: 65 gears short + 500 unplaced reported by broker" in plan.actions[0].reason


def test_simulate_runs_the_broker_hook_unless_told_not_to(tmp_path: Path) -> None:
    scenario = ROOT / "policies" / "examples" / "scenarios" / "flash-big"
    reports = {}
    for flag in ((), ("--no-broker-hook",)):
        out = tmp_path / f"report{len(flag)}.json"
        result = subprocess.run(
            [sys.executable, "-m", "gearshift", "simulate", "--policies", str(scenario / "pools"),
             "--providers", str(scenario / "providers.yaml"), "--trace",
             str(scenario / "trace.csv"), "--duration", "1h", "--seed", "1",
             "--report-json", str(out), *flag],
            capture_output=True, text=True, check=False, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        reports[bool(flag)] = json.loads(out.read_text())
    hooked, blind = reports[False], reports[True]
    assert hooked["unplaced_reports"] >= 2 and blind["unplaced_reports"] == 0
    # Sized from what fits, the blind run leaves several times more demand unmet.
    assert blind["unmet_gear_seconds"] > 3 * hooked["unmet_gear_seconds"]
