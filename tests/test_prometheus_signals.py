"""Prometheus signals for real: a Prometheus server scraping an exporter this test runs,
queried by the signal source, read by the real planner through a real reconciler."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from builders import policy_set, pool
from conftest import need
from gearshift.clock import SystemClock
from gearshift.errors import SignalQueryFailed
from gearshift.metrics import Metrics
from gearshift.model import Drain, GearCounts, Machine, NodeFacts, ScaleOut
from gearshift.observe.fleet import FleetModel
from gearshift.observe.prometheus import PrometheusSignalSource, read_value
from gearshift.settings import PrometheusSettings
from gearshift.sim.broker import free_port, wait_for_port
from rigs import sim_reconciler, wait_until

FAST = {"stabilization": {"down": "0s"}, "cooldown": {"up": "0s", "down": "0s"}}


@dataclass
class Exporter:
    port: int
    registry: CollectorRegistry
    queue: Gauge
    flaky: Gauge


@pytest.fixture(scope="module")
def exporter() -> Iterator[Exporter]:
    registry = CollectorRegistry()
    queue = Gauge("test_queue_length", "Builds waiting.", registry=registry)
    flaky = Gauge("test_flaky_pressure", "Goes away mid-test.", registry=registry)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    yield Exporter(port, registry, queue, flaky)
    server.shutdown()
    thread.join(5)


@pytest.fixture(scope="module")
def prometheus(exporter: Exporter, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = need("prometheus")
    directory = tmp_path_factory.mktemp("prometheus")
    config = directory / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 500ms, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: exporter\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{exporter.port}']}}]\n")
    port = free_port()
    log = (directory / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={directory / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(directory / "data", ignore_errors=True)


def signal(name: str, query: str, **kwargs: Any) -> dict[str, Any]:
    return {"name": name, "query": query, "scale_up_above": 100, "scale_down_below": 10,
            "timeout": "2s", **kwargs}


def fleet_of(nodes: dict[str, str]) -> FleetModel:
    """Fresh nodes at 6 of 60 active gears each (low density)."""
    fleet = FleetModel(stale_after=600)
    now = time.time()
    for identity, profile in nodes.items():
        fleet.ingest(NodeFacts(identity=identity, node_profile=profile, max_active_gears=60,
                               gears=GearCounts(total=6, active=6), produced_at=now),
                     received_at=now)
    return fleet


async def adopt(reconciler: Any, fleet: FleetModel) -> None:
    for identity in fleet.identities():
        await reconciler.journal.adopt(Machine(provider="rack-a", machine_id=f"m-{identity}",
                                               name=identity, pool=None, created_at=0.0))


@pytest.fixture
async def polling() -> AsyncIterator[list[PrometheusSignalSource]]:
    """Sources appended here are polled in the background for the test's duration."""
    sources: list[PrometheusSignalSource] = []
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    async def start() -> None:
        started = 0
        while not stop.is_set():
            for source in sources[started:]:
                tasks.append(asyncio.create_task(source.run(stop)))
            started = len(sources)
            await asyncio.sleep(0.02)

    starter = asyncio.create_task(start())
    yield sources
    stop.set()
    await asyncio.wait_for(asyncio.gather(starter, *tasks), 10)


@pytest.mark.slow  # ~7 s against a real Prometheus
async def test_the_plan_follows_a_prometheus_signal(
        prometheus: str, exporter: Exporter,
        polling: list[PrometheusSignalSource]) -> None:
    policies = policy_set(pool(size={"min": 1, "max": 40},
                               signals=[signal("queue", "max(test_queue_length)")], **FAST))
    nodes = {f"n{i}": "small" for i in range(4)}  # 24/240 active gears: density 0.10
    fleet = fleet_of(nodes)
    metrics = Metrics()
    wakes: list[str] = []
    source = PrometheusSignalSource(PrometheusSettings(url=prometheus, interval=0.2),
                                    lambda: policies, metrics=metrics, on_edge=wakes.append)
    reconciler = sim_reconciler(policies, clock=SystemClock(), fleet=fleet,
                                signals=source.signals)
    await adopt(reconciler, fleet)
    polling.append(source)

    async def reading(value: float) -> None:
        await wait_until(lambda: source.signals()[0].value == value, 20,
                         f"the signal to read {value}")

    exporter.queue.set(500)
    await reading(500)
    plan = await reconciler.dry_run()
    assert any(isinstance(a, ScaleOut) for a in plan.actions)
    assert "signal queue 500 > 100" in plan.actions[0].reason
    assert not any(isinstance(a, Drain) for a in plan.actions)
    assert wakes and "above 100" in wakes[0]

    exporter.queue.set(50)  # between the thresholds: no growth, and no scale-in either
    await reading(50)
    plan = await reconciler.dry_run()
    assert not plan.actions
    assert "signal queue 50 >= 10" in plan.pools["small"].summary

    exporter.queue.set(5)  # quiet: low density may shrink the pool now
    await reading(5)
    plan = await reconciler.dry_run()
    assert any(isinstance(a, Drain) for a in plan.actions)
    text = metrics.exposition().decode()
    assert 'gearshift_signal_value{pool="small",signal="queue"} 5.0' in text
    assert 'gearshift_signal_queries_total{outcome="ok",pool="small",signal="queue"}' in text


async def test_a_signal_gone_stale_holds_or_is_ignored_as_the_policy_says(
        prometheus: str, exporter: Exporter,
        polling: list[PrometheusSignalSource]) -> None:
    flaky = "max(test_flaky_pressure)"
    held = pool(name="held", size={"min": 1, "max": 10}, **FAST,
                signals=[signal("pressure", flaky, on_error="hold", stale_after="1s")])
    free = pool(name="free", selector={"node_profile": "large"}, size={"min": 1, "max": 10},
                placement=[{"provider": "rack-a", "blueprint": "large-bm"}], **FAST,
                signals=[signal("pressure", flaky, on_error="ignore", stale_after="1s")])
    policies = policy_set(held, free)
    fleet = fleet_of({"h1": "small", "h2": "small", "f1": "large",
                                            "f2": "large"})
    metrics = Metrics()
    source = PrometheusSignalSource(PrometheusSettings(url=prometheus, interval=0.2),
                                    lambda: policies, metrics=metrics)
    reconciler = sim_reconciler(policies, clock=SystemClock(), fleet=fleet,
                                signals=source.signals)
    await adopt(reconciler, fleet)
    exporter.flaky.set(1)
    polling.append(source)
    await wait_until(lambda: all(s.value == 1 for s in source.signals()), 20, "readings")
    plan = await reconciler.dry_run()
    assert {a.pool for a in plan.actions if isinstance(a, Drain)} == {"held", "free"}

    exporter.registry.unregister(exporter.flaky)  # the series disappears from Prometheus
    await wait_until(lambda: 'outcome="no_data"' in metrics.exposition().decode(), 20,
                     "Prometheus to lose the series")
    assert [s.value for s in source.signals()] == [1, 1]  # a blip keeps the last good value
    await wait_until(lambda: time.time() - max(s.observed_at or 0 for s in source.signals())
                     > 1.2, 10, "the readings to go stale")
    plan = await reconciler.dry_run()
    assert {a.pool for a in plan.actions if isinstance(a, Drain)} == {"free"}
    assert "signal pressure unavailable (on_error: hold)" in plan.pools["held"].summary


async def slow_prometheus() -> AsyncIterator[str]:
    """A server that never answers in time (a stand-in for a Prometheus stuck evaluating)."""
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/api/v1/query", hang)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        release.set()
        await runner.cleanup()


async def test_failed_queries_are_counted_by_outcome_and_give_no_value(prometheus: str) -> None:
    policies = policy_set(pool(signals=[
        signal("broken", "max(", timeout="2s"),
        signal("empty", "max(no_such_metric_anywhere)")]))
    metrics = Metrics()
    readings = await PrometheusSignalSource(PrometheusSettings(url=prometheus),
                                            lambda: policies, metrics=metrics).poll_once()
    assert [(s.name, s.value, s.observed_at) for s in readings] == [
        ("broken", None, None), ("empty", None, None)]
    text = metrics.exposition().decode()
    assert 'outcome="error",pool="small",signal="broken"} 1.0' in text
    assert 'outcome="no_data",pool="small",signal="empty"} 1.0' in text

    slow = pool(signals=[signal("slow", "up", timeout="1s")])
    async for url in slow_prometheus():
        await PrometheusSignalSource(PrometheusSettings(url=url), lambda: policy_set(slow),
                                     metrics=metrics).poll_once()
    nowhere = f"http://127.0.0.1:{free_port()}"
    await PrometheusSignalSource(PrometheusSettings(url=nowhere), lambda: policy_set(slow),
                                 metrics=metrics).poll_once()
    text = metrics.exposition().decode()
    assert 'outcome="timeout",pool="small",signal="slow"} 1.0' in text
    assert 'outcome="unreachable",pool="small",signal="slow"} 1.0' in text


@pytest.mark.parametrize(("body", "expected"), [
    ({"status": "success", "data": {"resultType": "scalar", "result": [1, "2.5"]}}, 2.5),
    ({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"a": "1"}, "value": [1, "3"]}, {"metric": {"a": "2"}, "value": [1, "7"]}]}},
     7.0),
    ({"status": "success", "data": {"resultType": "vector", "result": []}}, "no_data"),
    ({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {}, "value": [1, "NaN"]}]}}, "not_finite"),
    ({"status": "success", "data": {"resultType": "matrix", "result": []}}, "error"),
    ({"status": "error", "errorType": "bad_data", "error": "parse error"}, "error"),
    (["not", "a", "dict"], "error"),
])
def test_read_value(body: object, expected: float | str) -> None:
    if isinstance(expected, float):
        assert read_value(body) == expected
    else:
        with pytest.raises(SignalQueryFailed) as caught:
            read_value(body)
        assert caught.value.outcome == expected


async def test_an_unreadable_token_file_fails_the_query_not_the_task(tmp_path) -> None:
    """The signals task must not crash-loop on a missing token file: each query fails,
    is counted, and on_error decides what the planner makes of it."""
    from gearshift.sim.broker import free_port

    policies = policy_set(pool(signals=[signal("queue", "max(test_queue_length)")]))
    metrics = Metrics()
    source = PrometheusSignalSource(
        PrometheusSettings(url=f"http://127.0.0.1:{free_port()}",
                           token_file=tmp_path / "missing.token"),
        lambda: policies, metrics=metrics)
    readings = await source.poll_once()
    assert [(s.name, s.value) for s in readings] == [("queue", None)]
    assert ('gearshift_signal_queries_total{outcome="error",pool="small",signal="queue"} 1.0'
            in metrics.exposition().decode())
