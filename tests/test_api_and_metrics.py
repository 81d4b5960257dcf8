"""The HTTP API on a reconciler that has run, and its metrics checked by promtool."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from builders import policy_set, pool
from conftest import need
from gearshift.api.server import ApiServer
from gearshift.clock import ManualClock
from gearshift.reconcile.leader import Leadership, follow, lead
from gearshift.reconcile.reconciler import Reconciler
from gearshift.store.sqlite import SqliteJournal
from rigs import wait_until
from test_reconciler import Rig

TOKEN = "s3cret-token-for-tests"


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    clock = ManualClock()
    rig = Rig(policy_set(pool()), demand=110, clock=clock)
    await rig.seed()
    await rig.reconciler.reconcile_once()
    api = ApiServer(rig.reconciler, rig.metrics, token=TOKEN, max_body=1024)
    async with TestClient(TestServer(api.app)) as test_client:
        test_client.rig = rig  # type: ignore[attr-defined]
        yield test_client


async def test_status_has_the_contract_shape(client: TestClient) -> None:
    response = await client.get("/v1/status")
    assert response.status == 200
    body = await response.json()
    pool_status = body["pools"]["small"]
    assert pool_status["nodes"] == {"active": 2, "booting": 1, "draining": 0, "unknown": 0,
                                   "parked": 0}
    assert pool_status["active_density"] == pytest.approx(110 / 120)
    assert pool_status["desired_nodes"] == 3
    assert pool_status["degraded"] is False
    assert body["leader"] is True
    assert body["providers"]["rack-a"]["available"] is True


async def test_health_plan_events_and_page(client: TestClient) -> None:
    assert (await client.get("/healthz")).status == 200
    plan = await (await client.get("/v1/plan")).json()
    assert plan["pools"]["small"]["booting"] == 1
    events = await (await client.get("/v1/events")).json()
    assert events["events"][0]["kind"] == "scale_out"
    assert "projected density 0.92" in events["events"][0]["reason"]
    page = await client.get("/")
    assert "gearshift" in await page.text()


async def test_a_plan_the_journal_cannot_give_is_a_503_with_the_reason(
        client: TestClient, tmp_path: Path) -> None:
    journal = await SqliteJournal.open(tmp_path / "journal.db")
    await journal.close()  # as good as a store that is down: every call is a JournalError
    client.rig.reconciler.journal = journal  # type: ignore[attr-defined]
    refused = await client.get("/v1/plan")
    assert refused.status == 503
    error = (await refused.json())["error"]
    assert error == (f"SQLite journal {tmp_path / 'journal.db'}: open_operations failed: "
                     f"the journal is closed")
    # The rest of the API stays up.
    assert (await client.get("/v1/status")).status == 200
    assert (await client.get("/healthz")).status == 200


async def test_mutations_need_the_bearer_token(client: TestClient) -> None:
    assert (await client.post("/v1/pools/small/pause")).status == 401
    wrong = {"Authorization": "Bearer nope"}
    assert (await client.post("/v1/pools/small/pause", headers=wrong)).status == 403
    right = {"Authorization": f"Bearer {TOKEN}"}
    assert (await client.post("/v1/pools/small/pause", headers=right)).status == 200
    assert "small" in client.rig.reconciler.paused  # type: ignore[attr-defined]
    assert (await client.post("/v1/pools/nope/pause", headers=right)).status == 404
    assert (await client.post("/v1/pools/small/resume", headers=right)).status == 200
    assert not client.rig.reconciler.paused  # type: ignore[attr-defined]


async def test_capacity_requests(client: TestClient) -> None:
    right = {"Authorization": f"Bearer {TOKEN}"}
    created = await client.post("/v1/capacity-requests", headers=right,
                                json={"pool": "small", "gears": 120, "ttl": "10m"})
    assert created.status == 201
    rig = client.rig  # type: ignore[attr-defined]
    assert [r.gears for r in rig.reconciler.requests.active(rig.clock.now())] == [120]
    bad = await client.post("/v1/capacity-requests", headers=right,
                            json={"pool": "nope", "gears": 1})
    assert bad.status == 422
    huge = await client.post("/v1/capacity-requests", headers=right,
                             data=b'{"pool": "' + b"x" * 4096 + b'"}')
    assert huge.status == 413


async def test_token_never_appears_in_responses(client: TestClient) -> None:
    for path in ("/v1/status", "/v1/plan", "/v1/events", "/metrics"):
        assert TOKEN not in await (await client.get(path)).text()


async def test_metrics_pass_promtool(client: TestClient) -> None:
    promtool = need("promtool")
    exposition = await (await client.get("/metrics")).read()
    text = exposition.decode()
    for name in ("gearshift_pool_nodes", "gearshift_pool_active_density",
                 "gearshift_pool_desired_nodes", "gearshift_actions_total",
                 "gearshift_reconcile_duration_seconds_bucket",
                 "gearshift_last_successful_reconcile_timestamp_seconds",
                 "gearshift_provider_calls_total"):
        assert name in text
    assert 'gearshift_pool_nodes{pool="small",state="booting"} 1.0' in text
    result = subprocess.run([promtool, "check", "metrics"], input=exposition,
                            capture_output=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


async def test_status_shows_each_decision_with_its_candidates(client: TestClient) -> None:
    body = await (await client.get("/v1/status")).json()
    (decision,) = body["decisions"]
    assert decision["kind"] == "scale_out" and decision["pool"] == "small"
    assert "projected density 0.92 > 0.80" in decision["reason"]
    notes = {c["provider"]: c["note"] for c in decision["candidates"]}
    assert notes["rack-a"].startswith("chosen: 1 of")
    assert notes["vsphere-dc1"] == "not needed"
    assert notes["ec2-east"] == "not needed: preferred placements cover it"
    page = await (await client.get("/")).text()
    assert "Recent decisions" in page and "s.decisions" in page


async def test_status_with_decisions_validates_against_the_generated_schema(
        client: TestClient) -> None:
    """The served body, a decision included, fits the Status schema generated from the
    models; a decision is the action's own fields after ``at``, in the action's order."""
    import jsonschema  # type: ignore[import-untyped]  # no stubs installed

    from gearshift.api.openapi import openapi_document
    from gearshift.explain import action_to_dict

    body = await (await client.get("/v1/status")).json()
    components = openapi_document(pools=["small"], max_body=1024)["components"]
    jsonschema.Draft202012Validator(
        {"$ref": "#/components/schemas/Status", "components": components}).validate(body)
    assert list(body) == ["pools", "leader", "facts_fresh", "last_reconcile", "providers",
                          "policy_errors", "decisions"]  # no daemon parts on a bare server
    (decision,) = body["decisions"]
    plan = client.rig.reconciler.last_plan  # type: ignore[attr-defined]
    assert decision == {"at": decision["at"], **action_to_dict(plan.actions[0])}
    assert list(decision) == ["at", *action_to_dict(plan.actions[0])]


async def test_a_follower_refuses_mutations_it_could_not_carry_out() -> None:
    clock = ManualClock()
    rig = Rig(policy_set(pool()), demand=110, clock=clock)
    await rig.seed()
    api = ApiServer(rig.reconciler, rig.metrics, token=TOKEN, leader=lambda: False)
    right = {"Authorization": f"Bearer {TOKEN}"}
    async with TestClient(TestServer(api.app)) as test_client:
        paused = await test_client.post("/v1/pools/small/pause", headers=right)
        assert paused.status == 409
        assert "follower" in (await paused.json())["error"]
        assert not rig.reconciler.paused
        held = await test_client.post("/v1/capacity-requests", headers=right,
                                      json={"pool": "small", "gears": 10})
        assert held.status == 409
        assert rig.reconciler.requests.active(clock.now()) == []
        assert (await test_client.post("/v1/pools/small/pause")).status == 401


def restarted(rig: Rig) -> Reconciler:
    """The reconciler a restarted daemon builds on the same journal: it remembers nothing."""
    return Reconciler(fleet=rig.fleet, policies=rig.reconciler.policies, executor=rig.executor,
                      journal=rig.journal, providers=rig.providers, clock=rig.clock,
                      interval=30, metrics=rig.metrics)


async def test_a_pause_is_journaled_and_a_new_leader_keeps_it(client: TestClient) -> None:
    rig: Rig = client.rig  # type: ignore[attr-defined]
    right = {"Authorization": f"Bearer {TOKEN}"}
    assert (await client.post("/v1/pools/small/pause", headers=right)).status == 200
    assert await rig.journal.paused_pools() == {"small": rig.clock.now()}
    # The daemon restarts (or another instance takes over): elected, it keeps hands off.
    reconciler = restarted(rig)
    leadership = Leadership(rig.journal, holder="next")
    stop = asyncio.Event()

    class Recovered:
        async def run(self, *, reason: str) -> None:
            stop.set()  # recovered: run one reconcile, then stop

    async def caught_up() -> None:
        return None

    assert await leadership.try_acquire()
    await asyncio.wait_for(lead(reconciler=reconciler, leadership=leadership,
                                recovery=Recovered(), caught_up=caught_up,  # type: ignore[arg-type]
                                stop=stop), timeout=10)
    assert reconciler.paused == {"small"}
    assert (await reconciler.dry_run()).pools["small"].paused
    api = ApiServer(reconciler, rig.metrics, token=TOKEN, leader=lambda: True)
    async with TestClient(TestServer(api.app)) as again:
        assert (await (await again.get("/v1/status")).json())["pools"]["small"]["paused"]
        assert (await again.post("/v1/pools/small/resume", headers=right)).status == 200
    assert await rig.journal.paused_pools() == {}
    assert not reconciler.paused


async def test_a_follower_shows_the_pools_the_leader_paused() -> None:
    clock = ManualClock()
    rig = Rig(policy_set(pool()), demand=110, clock=clock)
    await rig.seed()
    await rig.journal.pause_pool("small", at=clock.now())  # by the leader, elsewhere
    leadership = Leadership(rig.journal, holder="follower")
    stop = asyncio.Event()
    following = asyncio.create_task(follow(rig.reconciler, leadership, stop))
    await wait_until(lambda: rig.reconciler.last_plan is not None, what="a read-only plan")
    stop.set()
    await asyncio.wait_for(following, 5)
    api = ApiServer(rig.reconciler, rig.metrics, token=TOKEN, leader=lambda: False)
    assert api.status_body()["pools"]["small"]["paused"] is True
    assert rig.reconciler.last_pools["small"].paused
    scraped = rig.metrics.exposition().decode()  # a follower's metrics are its own reading
    assert 'gearshift_pool_paused{pool="small"} 1.0' in scraped
    assert 'gearshift_pool_nodes{pool="small",state="active"} 2.0' in scraped
    assert 'gearshift_provider_nodes{provider="rack-a",state="active"} 2.0' in scraped


async def test_a_pause_the_journal_cannot_record_is_refused_and_changes_nothing(
        client: TestClient, tmp_path: Path) -> None:
    rig: Rig = client.rig  # type: ignore[attr-defined]
    right = {"Authorization": f"Bearer {TOKEN}"}
    rig.journal.fence(7)  # deposed between the leader check and the write
    refused = await client.post("/v1/pools/small/pause", headers=right)
    assert refused.status == 409
    assert "no longer the leader" in (await refused.json())["error"]
    assert not rig.reconciler.paused
    journal = await SqliteJournal.open(tmp_path / "journal.db")
    await journal.close()  # a store that is down
    rig.reconciler.journal = journal
    refused = await client.post("/v1/pools/small/pause", headers=right)
    assert refused.status == 503
    assert "pause_pool failed: the journal is closed" in (await refused.json())["error"]
    assert not rig.reconciler.paused


async def test_a_failing_refresh_does_not_take_the_scrape_down(client: TestClient) -> None:
    """The pool and fleet gauges are set on scrape; a bug there is logged, and the rest of
    the exposition (counters, timings, the gauges as last set) still goes out."""
    metrics = client.rig.metrics  # type: ignore[attr-defined]

    def broken() -> None:
        raise RuntimeError("a bug")

    metrics.on_scrape.insert(0, broken)
    response = await client.get("/metrics")
    assert response.status == 200
    text = (await response.read()).decode()
    assert "gearshift_reconciles_total" in text
    assert 'gearshift_pool_nodes{pool="small",state="booting"} 1.0' in text  # refreshed after


async def test_a_scrape_refreshes_the_gauges_only_when_something_changed(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Anyone can scrape: scrapes between two reconciles set no gauge again."""
    rig: Rig = client.rig  # type: ignore[attr-defined]
    calls: list[int] = []
    real = rig.metrics.record_fleet

    def counted(*args: object, **kwargs: object) -> None:
        calls.append(1)
        real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(rig.metrics, "record_fleet", counted)
    for _ in range(3):
        assert (await client.get("/metrics")).status == 200
    assert len(calls) == 1
    await rig.clock.advance(60)
    rig.publish()  # facts heard again: the next reconcile sees a new fleet
    await rig.reconciler.reconcile_once()
    await client.get("/metrics")
    assert len(calls) == 2
