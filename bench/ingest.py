"""How fast node facts get from a real mosquitto into the fleet model, and from a
threshold-crossing fact to the provider's create call.

    .venv/bin/python bench/ingest.py [--nodes 1000 10000] [--pools 100] [--runs 3]
                                     [--trials 100] [--rounds 5]

For each fleet size N (spread over P pools, ``bench/ingest_fleet.py``) it starts its own
mosquitto on a free port, publishes N retained ``gearshift.node.facts/1`` messages, and
then, ``--runs`` times on the same broker:

* raw and ingest, in alternating rounds (the process has settled its GC as ``serve``
  does before the facts replay): a bare aiomqtt client subscribes (the same
  protocol and QoS as the daemon) and only counts messages — the broker replays all N
  retained facts as fast as it can, so this is the receive rate of aiomqtt itself; then
  the daemon's ``MqttFactSource`` subscribes and parses, validates and stores every
  message in a ``FleetModel`` (poking the edge waker as the daemon does). Each rate is
  N / (time of the last message - subscribing), the median over the rounds; the run's
  figure is ingest ÷ raw of the same run;
* the latency run, twice: with the daemon's GC policy (``gcpolicy.settle`` once the
  source caught up, as ``serve`` does) and without (the interpreter's defaults), the
  order alternating between runs. All nodes sit exactly at their pool's
  ``scale_up_above`` with the real source, edge waker (daemon's default debounce),
  reconciler and executor running; a background process re-publishes unchanged facts
  (every node every 30 s, as agents do); each trial publishes one node's facts one gear
  higher — the crossing fact, the node in a different pool each trial — and times it to
  the provider's ``create()`` call (``ingest_fleet.CreateTimer``, which provisions
  nothing), then puts the node back. The reconciler reads a real SQLite journal that owns
  every node's machine, holding the leader lease, as the daemon does. Full (gen-2)
  collections during the trials are timed with ``gc.callbacks``.

Every figure is reported as min / median over the runs. Prints a table and writes
bench/results/ingest.json (``--out``), keeping the ``fleet_memory`` part that
``bench/fleet_memory.py`` writes there.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ingest_fleet import (
    EDGE,
    PREFIX,
    PROVIDER,
    CreateTimer,
    identity,
    leading_journal,
    message,
    policies,
    topic,
)

from gearshift import gcpolicy
from gearshift.act.executor import Executor
from gearshift.act.platform.null import NullPlatform
from gearshift.act.providers.guard import GuardedProvider
from gearshift.clock import SystemClock
from gearshift.logs import configure
from gearshift.metrics import Metrics
from gearshift.model import ScaleOut
from gearshift.observe.fleet import FleetModel
from gearshift.observe.mqtt import MqttFactSource
from gearshift.plan import Plan
from gearshift.policy.holder import PolicyHolder
from gearshift.reconcile.reconciler import Reconciler
from gearshift.reconcile.wakeup import EdgeWaker
from gearshift.settings import MqttSettings, ReconcileSettings
from gearshift.sim.broker import start_mosquitto
from gearshift.store.sqlite import SqliteJournal
from gearshift.wire.mqtt import client_for

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_GC = gc.get_threshold()  # the interpreter's, before anything changed them


def rank(ordered: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile of an ascending list."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def spread(values: list[float], digits: int = 1) -> dict[str, float]:
    """Min and median over the runs."""
    return {"min": round(min(values), digits), "median": round(statistics.median(values), digits)}


async def publish_fleet(settings: MqttSettings, nodes: int, pools: int) -> None:
    now = time.time()
    async with client_for(settings) as client:
        for i in range(nodes):
            await client.publish(topic(i), message(i, pools=pools, active=EDGE, seq=1, at=now),
                                 qos=1, retain=True)


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


def background(port: int, nodes: int, pools: int, seconds: float,
               rate: float) -> subprocess.Popen[bytes]:
    """A separate process re-publishing unchanged facts at ``rate`` messages/s."""
    return subprocess.Popen([sys.executable, __file__, "--background", str(port), str(nodes),
                             str(pools), str(seconds), str(rate)],
                            env={**os.environ, "PYTHONPATH": str(ROOT / "daemon")})


async def run_background(port: int, nodes: int, pools: int, seconds: float,
                         rate: float) -> None:
    settings = MqttSettings(port=port, prefix=PREFIX)
    end = time.monotonic() + seconds
    i = 0
    async with client_for(settings) as client:
        while time.monotonic() < end:
            started = time.monotonic()
            for _ in range(max(1, int(rate / 20))):
                n = pools + i % (nodes - pools)  # never nodes 0..pools-1, the trials' own
                await client.publish(topic(n), message(n, pools=pools, active=EDGE, seq=1,
                                                       at=time.time()), qos=0, retain=True)
                i += 1
            await asyncio.sleep(max(0.0, 0.05 - (time.monotonic() - started)))


class GcPauses:
    """Full (gen-2) collections while installed, and how long each took."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.pauses.append(time.perf_counter() - self._began)


async def latency_run(settings: MqttSettings, journal: SqliteJournal, *, nodes: int,
                      pools: int, trials: int, debounce: float,
                      gc_freeze: bool) -> dict[str, Any]:
    fleet = FleetModel(stale_after=600)
    clock = SystemClock()
    metrics = Metrics()
    timer = CreateTimer(PROVIDER)
    executor = Executor(providers={PROVIDER: GuardedProvider(timer, clock=clock)},
                        platform=NullPlatform(), journal=journal, clock=clock)
    reconciler = Reconciler(fleet=fleet, policies=PolicyHolder.fixed(policies(pools)),
                            executor=executor, journal=journal, providers=executor.providers,
                            clock=clock, interval=3600, metrics=metrics)
    waker = EdgeWaker(reconciler, debounce=debounce)
    source = MqttFactSource(settings, fleet, clock=clock, on_facts=waker.poke)
    plans: asyncio.Queue[Plan] = asyncio.Queue()
    moved = {identity(k) for k in range(pools)}
    ingested: list[float] = []  # when the trial node's facts reached the fleet model
    woken: list[float] = []  # when the edge waker woke the reconciler
    fleet.add_listener(lambda i: ingested.append(time.perf_counter()) if i in moved else None)
    everyone = asyncio.Event()
    fleet.add_listener(lambda _: everyone.set() if len(fleet) >= nodes else None)
    wake = reconciler.wake

    def timed_wake(reason: str = "") -> None:
        woken.append(time.perf_counter())
        wake(reason)

    reconciler.wake = timed_wake  # type: ignore[method-assign]
    reconciler.on_reconciled.append(plans.put_nowait)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(source.run(stop))]
    async with asyncio.timeout(120):
        await source.caught_up.wait()
        await everyone.wait()  # a reconnect under load can cut the first replay short
    gc.unfreeze()  # what an earlier run froze goes back to the collector
    gc.set_threshold(*DEFAULT_GC)
    settled = gcpolicy.settle(enabled=gc_freeze)  # where serve() does it
    tasks += [asyncio.create_task(reconciler.run(stop)), asyncio.create_task(waker.run(stop))]
    await asyncio.wait_for(plans.get(), 60)  # the first reconcile, at start
    rate = nodes / 30.0
    noise = background(settings.port, nodes, pools, seconds=trials * 0.8 + 30, rate=rate)
    await asyncio.sleep(1.0)
    to_create: list[float] = []
    to_model: list[float] = []
    to_wake: list[float] = []
    seq = 10
    rng = random.Random(7)
    pauses = GcPauses()
    gc.callbacks.append(pauses)
    try:
        async with client_for(settings) as client:
            for trial in range(trials):
                node = trial % pools
                while not plans.empty():
                    plans.get_nowait()
                ingested.clear()
                woken.clear()
                timer.calls.clear()
                seq += 1
                sent = time.perf_counter()
                await client.publish(topic(node), message(node, pools=pools, active=EDGE + 1,
                                                          seq=seq, at=time.time()),
                                     qos=0, retain=True)
                while True:
                    plan = await asyncio.wait_for(plans.get(), 10)
                    if any(isinstance(a, ScaleOut) for a in plan.actions):
                        break
                assert timer.calls, "a plan scaled out but the provider's create was not called"
                to_create.append(timer.calls[0] - sent)
                to_model.append(ingested[0] - sent)
                to_wake.append(woken[0] - sent)
                seq += 1
                await client.publish(topic(node), message(node, pools=pools, active=EDGE,
                                                          seq=seq, at=time.time()),
                                     qos=0, retain=True)
                await asyncio.wait_for(plans.get(), 10)  # back inside the band
                # A random gap, so trials land at every phase of the waker's debounce.
                await asyncio.sleep(rng.uniform(0.05, 0.3))
    finally:
        gc.callbacks.remove(pauses)
        noise.terminate()
        noise.wait(10)
        stop.set()
        await asyncio.gather(*tasks)
        gc.unfreeze()
        gc.set_threshold(*DEFAULT_GC)
    to_create.sort()
    samples = {s.name: s.value for m in metrics.reconcile_seconds.collect() for s in m.samples}
    reconciles = samples["gearshift_reconcile_duration_seconds_count"]
    return {
        "gc_freeze": gc_freeze,
        "frozen_objects": settled.frozen if settled else 0,
        "trials": len(to_create),
        "p50_ms": round(1000 * statistics.median(to_create), 1),
        "p90_ms": round(1000 * rank(to_create, 0.90), 1),
        "p99_ms": round(1000 * rank(to_create, 0.99), 1),
        "max_ms": round(1000 * to_create[-1], 1),
        "median_ms_to_fleet_model": round(1000 * statistics.median(to_model), 1),
        "median_ms_to_reconciler_wake": round(1000 * statistics.median(to_wake), 1),
        "reconcile_mean_ms": round(
            1000 * samples["gearshift_reconcile_duration_seconds_sum"] / reconciles, 1),
        "reconciles": int(reconciles),
        "full_gcs": len(pauses.pauses),
        "full_gc_max_ms": round(1000 * max(pauses.pauses, default=0.0), 1),
    }


async def bench(nodes: int, pools: int, *, runs: int, trials: int, rounds: int,
                debounce: float) -> dict[str, Any]:
    per_run: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="gearshift-bench-") as directory:
        # Deployment setting, not a benchmark trick: mosquitto's default max_queued_messages
        # (1000) drops retained facts beyond it when a 10k fleet is replayed on subscribe.
        process, port = start_mosquitto(Path(directory),
                                        extra_config="max_queued_messages 0\n")
        try:
            settings = MqttSettings(port=port, prefix=PREFIX)
            await publish_fleet(settings, nodes, pools)
            for run in range(runs):
                raw, ingest = [], []
                for _ in range(rounds):
                    raw.append(await raw_round(settings, nodes))
                    ingest.append(await ingest_round(settings, nodes))
                latency = {}
                for freeze in ((False, True) if run % 2 == 0 else (True, False)):
                    journal = await leading_journal(Path(directory), nodes, pools)
                    try:
                        latency["on" if freeze else "off"] = await latency_run(
                            settings, journal, nodes=nodes, pools=pools, trials=trials,
                            debounce=debounce, gc_freeze=freeze)
                    finally:
                        await journal.close()
                raw_rate, ingest_rate = statistics.median(raw), statistics.median(ingest)
                per_run.append({"raw_receive_msgs_per_s": round(raw_rate),
                                "ingest_msgs_per_s": round(ingest_rate),
                                "ingest_vs_raw": round(ingest_rate / raw_rate, 3),
                                "gc_freeze_on": latency["on"], "gc_freeze_off": latency["off"]})
        finally:
            process.terminate()
            process.wait(10)
    ratios = [r["ingest_vs_raw"] for r in per_run]
    summary: dict[str, Any] = {
        "ingest_vs_raw": spread(ratios, 3),
        "raw_receive_msgs_per_s": spread([r["raw_receive_msgs_per_s"] for r in per_run], 0),
        "ingest_msgs_per_s": spread([r["ingest_msgs_per_s"] for r in per_run], 0)}
    for mode in ("gc_freeze_on", "gc_freeze_off"):
        summary[mode] = {key: spread([r[mode][key] for r in per_run])
                         for key in ("p50_ms", "p99_ms", "max_ms", "full_gcs",
                                     "full_gc_max_ms", "reconcile_mean_ms")}
    p99 = summary["gc_freeze_on"]["p99_ms"]["median"]
    return {
        "nodes": nodes, "pools": pools, "runs": runs, "rounds": rounds, "trials": trials,
        "debounce_ms": debounce * 1000, "background_msgs_per_s": round(nodes / 30),
        "journal": f"sqlite, leader, {nodes} owned machines",
        "end_point": "the provider's create() call",
        "summary": summary, "per_run": per_run,
        "aims": {"ingest_vs_raw_every_run_at_least": 0.85, "p99_ms_at_most": 100,
                 "ingest_met": min(ratios) >= 0.85, "p99_met": p99 <= 100},
    }


def mosquitto_version() -> str:
    result = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True, check=False)
    return (result.stdout or result.stderr).splitlines()[0] if (result.stdout or
                                                                result.stderr) else "?"


def print_table(results: list[dict[str, Any]]) -> None:
    print(f"{'nodes':>6} {'pools':>5} {'ratio min/med':>13} {'gc':>3} "
          f"{'p50 ms min/med':>15} {'p99 ms min/med':>15} {'full GCs':>9}")
    for r in results:
        s = r["summary"]
        for mode in ("gc_freeze_on", "gc_freeze_off"):
            m = s[mode]
            print(f"{r['nodes']:>6} {r['pools']:>5} "
                  f"{s['ingest_vs_raw']['min']:>6.2f}/{s['ingest_vs_raw']['median']:<6.2f} "
                  f"{mode.rsplit('_', 1)[1]:>3} "
                  f"{m['p50_ms']['min']:>7}/{m['p50_ms']['median']:<7} "
                  f"{m['p99_ms']['min']:>7}/{m['p99_ms']['median']:<7} "
                  f"{m['full_gcs']['median']:>9}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--background":
        port, nodes, pools, seconds, rate = sys.argv[2:7]
        asyncio.run(run_background(int(port), int(nodes), int(pools), float(seconds),
                                   float(rate)))
        return
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--pools", type=int, default=100,
                        help="pools (and policies) the nodes are spread over")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--debounce", type=float, default=ReconcileSettings().debounce,
                        help="edge waker debounce in seconds (default: the daemon's)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ingest.json")
    args = parser.parse_args()
    configure(level="error")  # the executor logs each (deliberately) refused create
    gcpolicy.settle(enabled=True)  # as serve() does before the facts replay
    results = [asyncio.run(bench(n, args.pools, runs=args.runs, trials=args.trials,
                                 rounds=args.rounds, debounce=args.debounce))
               for n in args.nodes]
    print_table(results)
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    out = {"benchmark": "ingest", "python": platform.python_version(),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores",
           "broker": mosquitto_version(),
           "command": "python " + " ".join(["bench/ingest.py", *sys.argv[1:]]),
           "runs": results}
    if "fleet_memory" in previous:
        out["fleet_memory"] = previous["fleet_memory"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
