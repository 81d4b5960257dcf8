"""How fast node facts get from a real mosquitto into the fleet model, and from a
threshold-crossing fact to the plan that reacts.

    .venv/bin/python bench/ingest.py [--nodes 1000 10000] [--trials 100]

For each fleet size N it starts its own mosquitto on a free port, publishes N retained
``gearshift.node.facts/1`` messages, and then, in alternating rounds on the same broker:

* raw: a bare aiomqtt client subscribes (the same protocol and QoS as the daemon) and
  only counts messages — the broker replays all N retained facts as fast as it can, so
  this is the receive rate of aiomqtt itself;
* ingest: the daemon's ``MqttFactSource`` subscribes and parses, validates and stores
  every message in a ``FleetModel`` (poking the edge waker as the daemon does);

the rate of each is (N - 1) / (time of the last message - time of the first), the
median over the rounds. Then the latency run: all N nodes sit exactly at the pool's
``scale_up_above`` (0.80) with the real source, edge waker (daemon's default debounce)
and reconciler running, a background process re-publishes unchanged facts (every node
every 30 s, as agents do), and each trial publishes one node's facts one gear higher —
the crossing fact — and times it to the reconciler's plan that scales out (its
``on_reconciled`` callback), then puts the node back. The reconciler reads a real SQLite
journal that owns every node's machine, holding the leader lease, as the daemon does. The
executor is a no-op: this measures deciding, not provisioning.

Prints a table and writes bench/results/ingest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gearshift.act.executor import ExecutionReport, Executor
from gearshift.clock import SystemClock
from gearshift.logs import configure
from gearshift.metrics import Metrics
from gearshift.model import FleetSnapshot, ScaleOut
from gearshift.observe.fleet import FleetModel
from gearshift.observe.mqtt import MqttFactSource
from gearshift.plan import Plan
from gearshift.policy.holder import PolicyHolder
from gearshift.policy.schema import PolicySet, PoolPolicy, ProvidersFile
from gearshift.reconcile.reconciler import Reconciler
from gearshift.reconcile.wakeup import EdgeWaker
from gearshift.settings import MqttSettings, ReconcileSettings
from gearshift.sim.broker import start_mosquitto
from gearshift.store.sqlite import SqliteJournal
from gearshift.wire.mqtt import client_for

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "bench/v1"
MAX_GEARS = 60
NODE0 = "node00000.example.com"
EDGE = 48  # 48/60 = 0.80 = scale_up_above: one more gear on any node crosses it


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def identity(i: int) -> str:
    return f"node{i:05d}.example.com"


def message(i: int, *, active: int, seq: int, at: float) -> bytes:
    return json.dumps({
        "schema": "gearshift.node.facts/1", "ts": iso(at), "seq": seq, "identity": identity(i),
        "node_profile": "small", "district": {"uuid": "513b5050", "active": True},
        "limits": {"max_active_gears": MAX_GEARS, "no_overcommit_active": False},
        "gears": {"total": active + 20, "active": active, "started": active, "idle": 15,
                  "stopped": 5, "deploying": 0, "unknown": 0},
        "net": {"public_hostname": identity(i)}, "labels": {}}).encode()


def rank(ordered: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile of an ascending list."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def topic(i: int) -> str:
    return f"{PREFIX}/nodes/{identity(i)}/facts"


def policies() -> PolicySet:
    pool = PoolPolicy.model_validate({
        "apiVersion": "gearshift/v1", "kind": "Pool", "name": "small",
        "selector": {"node_profile": "small"}, "size": {"min": 1, "max": 100000},
        "density": {"scale_up_above": 0.80, "scale_down_below": 0.45, "target": 0.65},
        "cooldown": {"up": "0s", "down": "10m"}, "step": {"max_up": 5},
        "placement": [{"provider": "rack-a", "blueprint": "small-bm"}]})
    providers = ProvidersFile.model_validate({
        "apiVersion": "gearshift/v1", "kind": "Providers",
        "providers": [{"name": "rack-a", "kind": "simulated", "quota": {"max_nodes": 100000}}],
        "blueprints": [{"name": "small-bm", "provider": "rack-a", "node_profile": "small",
                        "max_active_gears": MAX_GEARS}]})
    return PolicySet(pools=(pool,), providers=providers)


class DecideOnly(Executor):
    """Carries nothing out: the benchmark times the decision, not the provisioning."""

    def __init__(self) -> None:
        pass

    async def execute(self, plan: Plan, snapshot: FleetSnapshot,
                      policies: PolicySet) -> ExecutionReport:
        return ExecutionReport()

    async def progress(self, snapshot: FleetSnapshot, is_fresh: Any, *,
                       policies: PolicySet | None = None) -> None:
        return None


async def publish_fleet(settings: MqttSettings, nodes: int, *, active: int, seq: int) -> None:
    now = time.time()
    async with client_for(settings) as client:
        for i in range(nodes):
            await client.publish(topic(i), message(i, active=active, seq=seq, at=now), qos=1,
                                 retain=True)


async def raw_round(settings: MqttSettings, nodes: int) -> float:
    """Messages/s a bare aiomqtt client takes in the retained fleet at: connect, the same
    subscriptions as the daemon, then only count."""
    started = time.perf_counter()
    count = 0
    async with client_for(settings) as client:
        await client.subscribe([(f"{PREFIX}/nodes/+/facts", 0), (f"{PREFIX}/nodes/+/status", 0),
                                (f"{PREFIX}/requests", 1),
                                (f"{PREFIX}/sync/{client.identifier}", 0)])
        async with asyncio.timeout(120):
            async for _ in client.messages:
                count += 1
                if count == nodes:
                    break
        return nodes / (time.perf_counter() - started)


async def ingest_round(settings: MqttSettings, nodes: int) -> float:
    """Messages/s the daemon's fact source takes the retained fleet into its model at."""
    fleet = FleetModel(stale_after=600)
    stamps: list[float] = []
    done = asyncio.Event()

    def stamp(_identity: str) -> None:
        stamps.append(time.perf_counter())
        if len(stamps) == nodes:
            done.set()

    fleet.add_listener(stamp)
    poked = asyncio.Event()
    source = MqttFactSource(settings, fleet, on_facts=poked.set)  # as the daemon's waker
    stop = asyncio.Event()
    started = time.perf_counter()
    task = asyncio.create_task(source.run(stop))
    async with asyncio.timeout(120):
        await done.wait()
    stop.set()
    await task
    return nodes / (stamps[nodes - 1] - started)


def background(port: int, nodes: int, seconds: float, rate: float) -> subprocess.Popen[bytes]:
    """A separate process re-publishing unchanged facts at ``rate`` messages/s."""
    return subprocess.Popen([sys.executable, __file__, "--background", str(port), str(nodes),
                             str(seconds), str(rate)],
                            env={**os.environ, "PYTHONPATH": str(ROOT / "daemon")})


async def run_background(port: int, nodes: int, seconds: float, rate: float) -> None:
    settings = MqttSettings(port=port, prefix=PREFIX)
    end = time.monotonic() + seconds
    i = 0
    async with client_for(settings) as client:
        while time.monotonic() < end:
            started = time.monotonic()
            for _ in range(max(1, int(rate / 20))):
                n = 1 + i % (nodes - 1)  # never node 0, the one the trials move
                await client.publish(topic(n), message(n, active=EDGE, seq=1, at=time.time()),
                                     qos=0, retain=True)
                i += 1
            await asyncio.sleep(max(0.0, 0.05 - (time.monotonic() - started)))


async def leading_journal(directory: Path, nodes: int) -> SqliteJournal:
    """A SQLite journal owning every node's machine, its lease held by this instance."""
    path = directory / "journal.db"
    await (await SqliteJournal.open(path)).close()  # the schema
    with sqlite3.connect(path) as conn:  # one transaction, not one fsync per machine
        conn.executemany("INSERT INTO gearshift_machines VALUES (?, ?, ?, ?, ?, ?, ?)",
                         [(identity(n), "rack-a", f"m-{n}", "small-bm", "small", None,
                           f"op-{n}") for n in range(nodes)])
    journal = await SqliteJournal.open(path)
    token = await journal.acquire_lease("bench", 3600)
    assert token is not None
    journal.fence(token)
    return journal


async def latency_run(settings: MqttSettings, nodes: int, trials: int,
                      debounce: float, journal: SqliteJournal) -> dict[str, Any]:
    fleet = FleetModel(stale_after=600)
    clock = SystemClock()
    metrics = Metrics()
    reconciler = Reconciler(fleet=fleet, policies=PolicyHolder.fixed(policies()),
                            executor=DecideOnly(), journal=journal, providers={},
                            clock=clock, interval=3600, metrics=metrics)
    waker = EdgeWaker(reconciler, debounce=debounce)
    source = MqttFactSource(settings, fleet, clock=clock, on_facts=waker.poke)
    plans: asyncio.Queue[tuple[float, Plan]] = asyncio.Queue()
    ingested: list[float] = []  # when node 0's facts reached the fleet model
    woken: list[float] = []  # when the edge waker woke the reconciler
    fleet.add_listener(lambda i: ingested.append(time.perf_counter()) if i == NODE0 else None)
    wake = reconciler.wake

    def timed_wake(reason: str = "") -> None:
        woken.append(time.perf_counter())
        wake(reason)

    reconciler.wake = timed_wake  # type: ignore[method-assign]
    reconciler.on_reconciled.append(lambda plan: plans.put_nowait((time.perf_counter(), plan)))
    stop = asyncio.Event()
    tasks = [asyncio.create_task(source.run(stop))]
    async with asyncio.timeout(120):
        await source.caught_up.wait()
    assert len(fleet) == nodes, f"only {len(fleet)} of {nodes} retained facts arrived"
    tasks += [asyncio.create_task(reconciler.run(stop)), asyncio.create_task(waker.run(stop))]
    await asyncio.wait_for(plans.get(), 60)  # the first reconcile, at start
    rate = nodes / 30.0
    noise = background(settings.port, nodes, seconds=trials * 0.8 + 30, rate=rate)
    await asyncio.sleep(1.0)
    latencies: list[float] = []
    to_model: list[float] = []
    to_wake: list[float] = []
    seq = 10
    rng = random.Random(7)
    try:
        async with client_for(settings) as client:
            for _ in range(trials):
                while not plans.empty():
                    plans.get_nowait()
                ingested.clear()
                woken.clear()
                seq += 1
                sent = time.perf_counter()
                await client.publish(topic(0), message(0, active=EDGE + 1, seq=seq,
                                                       at=time.time()), qos=0, retain=True)
                while True:
                    at, plan = await asyncio.wait_for(plans.get(), 10)
                    if any(isinstance(a, ScaleOut) for a in plan.actions):
                        latencies.append(at - sent)
                        to_model.append(ingested[0] - sent)
                        to_wake.append(woken[0] - sent)
                        break
                seq += 1
                await client.publish(topic(0), message(0, active=EDGE, seq=seq, at=time.time()),
                                     qos=0, retain=True)
                await asyncio.wait_for(plans.get(), 10)  # back inside the band
                # A random gap, so trials land at every phase of the waker's debounce.
                await asyncio.sleep(rng.uniform(0.05, 0.3))
    finally:
        noise.terminate()
        noise.wait(10)
        stop.set()
        await asyncio.gather(*tasks)
    latencies.sort()
    samples = {s.name: s.value for m in metrics.reconcile_seconds.collect() for s in m.samples}
    reconciles = samples["gearshift_reconcile_duration_seconds_count"]
    return {
        "trials": len(latencies),
        "debounce_ms": debounce * 1000,
        "background_msgs_per_s": round(rate),
        "p50_ms": round(1000 * statistics.median(latencies), 1),
        "p90_ms": round(1000 * rank(latencies, 0.90), 1),
        "p99_ms": round(1000 * rank(latencies, 0.99), 1),
        "max_ms": round(1000 * latencies[-1], 1),
        "slowest_ms": [round(1000 * x, 1) for x in latencies[-5:]],
        "median_ms_to_fleet_model": round(1000 * statistics.median(to_model), 1),
        "median_ms_to_reconciler_wake": round(1000 * statistics.median(to_wake), 1),
        "reconcile_mean_ms": round(
            1000 * samples["gearshift_reconcile_duration_seconds_sum"] / reconciles, 1),
        "reconciles": int(reconciles),
    }


async def bench(nodes: int, trials: int, rounds: int, debounce: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gearshift-bench-") as directory:
        # Deployment setting, not a benchmark trick: mosquitto's default max_queued_messages
        # (1000) drops retained facts beyond it when a 10k fleet is replayed on subscribe.
        process, port = start_mosquitto(Path(directory),
                                        extra_config="max_queued_messages 0\n")
        try:
            settings = MqttSettings(port=port, prefix=PREFIX)
            await publish_fleet(settings, nodes, active=EDGE, seq=1)
            raw, ingest = [], []
            for _ in range(rounds):
                raw.append(await raw_round(settings, nodes))
                ingest.append(await ingest_round(settings, nodes))
            journal = await leading_journal(Path(directory), nodes)
            try:
                latency = await latency_run(settings, nodes, trials, debounce, journal)
            finally:
                await journal.close()
        finally:
            process.terminate()
            process.wait(10)
    raw_rate, ingest_rate = statistics.median(raw), statistics.median(ingest)
    return {
        "nodes": nodes, "rounds": rounds,
        "raw_receive_msgs_per_s": round(raw_rate),
        "ingest_msgs_per_s": round(ingest_rate),
        "ingest_vs_raw": round(ingest_rate / raw_rate, 3),
        "journal": f"sqlite, leader, {nodes} owned machines",
        "fact_to_decision": latency,
        "aims": {"ingest_vs_raw_at_least": 0.70, "p99_ms_at_most_at_10k": 100,
                 "ingest_met": ingest_rate / raw_rate >= 0.70,
                 "p99_met": latency["p99_ms"] <= 100},
    }


def mosquitto_version() -> str:
    result = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True, check=False)
    return (result.stdout or result.stderr).splitlines()[0] if (result.stdout or
                                                                result.stderr) else "?"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--background":
        port, nodes, seconds, rate = sys.argv[2:6]
        asyncio.run(run_background(int(port), int(nodes), float(seconds), float(rate)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--debounce", type=float, default=ReconcileSettings().debounce,
                        help="edge waker debounce in seconds (default: the daemon's)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ingest.json")
    args = parser.parse_args()
    configure(level="warning")
    runs = [asyncio.run(bench(n, args.trials, args.rounds, args.debounce)) for n in args.nodes]
    print(f"{'nodes':>6} {'raw msg/s':>10} {'ingest msg/s':>12} {'ratio':>6} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}")
    for r in runs:
        lat = r["fact_to_decision"]
        print(f"{r['nodes']:>6} {r['raw_receive_msgs_per_s']:>10} {r['ingest_msgs_per_s']:>12} "
              f"{r['ingest_vs_raw']:>6.2f} {lat['p50_ms']:>7} {lat['p99_ms']:>7} "
              f"{lat['max_ms']:>7}")
    result = {"benchmark": "ingest", "python": platform.python_version(),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "broker": mosquitto_version(), "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
