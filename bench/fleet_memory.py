"""What the fleet costs the daemon: resident memory per node, and how long the edge
check holds the event loop, at 10k and 100k nodes.

    .venv/bin/python bench/fleet_memory.py [--nodes 10000 100000] [--pools 100] [--runs 3]

Memory: each size runs in a fresh process that imports the daemon (``gearshift.daemon``:
what ``gearshift run`` loads), builds the fact path (``MqttFactSource`` into a
``FleetModel``, an ``EdgeWatch``), collects and reads its RSS (``VmRSS``): the empty
daemon. It then hands the source N retained facts messages (``bench/ingest_fleet.py``'s,
N nodes over P pools) through ``handle`` — the parse, validate and store path every MQTT
message takes — runs an edge check, opens a SQLite journal that owns every node's machine
(as leader) and runs one reconcile (the reconciler keeps its snapshot and plan), collects
again and reads RSS: per node = (RSS - empty RSS) / N.

Edge check (in the 10k process, on the same fleet): the first check (every node looked
at), a check 31 s later with nothing changed (what used to be the periodic full resync,
every 30 s), a check after one node's facts changed, and a check after a policy reload
(equal policies, new objects: every node re-matched). Each timed ``--runs`` times; min /
median reported. The script runs against whatever ``gearshift`` is on the path, so the
same command with ``PYTHONPATH=<old checkout>/daemon`` measures the code before a change.

Prints a table and writes the ``fleet_memory`` part of bench/results/ingest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
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

ROOT = Path(__file__).resolve().parent.parent


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def timed_ms(call: Any) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def spread(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 2), "median": round(statistics.median(values), 2)}


def child(nodes: int, pools: int, runs: int, edge_checks: bool) -> dict[str, Any]:
    return asyncio.run(fill(nodes, pools, runs, edge_checks))


async def fill(nodes: int, pools: int, runs: int, edge_checks: bool) -> dict[str, Any]:
    import gearshift.daemon  # noqa: F401 - what `gearshift run` has loaded
    from gearshift.act.executor import Executor
    from gearshift.act.platform.null import NullPlatform
    from gearshift.act.providers.guard import GuardedProvider
    from gearshift.clock import SystemClock
    from gearshift.logs import configure
    from gearshift.metrics import Metrics
    from gearshift.observe.edges import EdgeWatch
    from gearshift.observe.fleet import FleetModel
    from gearshift.observe.mqtt import MqttFactSource
    from gearshift.policy.holder import PolicyHolder
    from gearshift.policy.schema import PolicySet
    from gearshift.reconcile.reconciler import Reconciler
    from gearshift.settings import MqttSettings

    configure(level="error")
    clock = SystemClock()
    policy_set = policies(pools)
    fleet = FleetModel(stale_after=600, max_nodes=max(nodes, 100_000))
    source = MqttFactSource(MqttSettings(prefix=PREFIX), fleet, clock=clock)
    watch = EdgeWatch()
    gc.collect()
    empty = rss_bytes()
    now = time.time()
    for i in range(nodes):
        source.handle(topic(i), message(i, pools=pools, active=EDGE, seq=1, at=now),
                      retained=True)
    assert len(fleet) == nodes
    first = timed_ms(lambda: watch.check(fleet, policy_set, now))
    with tempfile.TemporaryDirectory(prefix="gearshift-bench-") as directory:
        # The leader's journal owns every node's machine; one reconcile keeps its
        # snapshot and plan, as the daemon does between reconciles.
        journal = await leading_journal(Path(directory), nodes, pools)
        executor = Executor(providers={PROVIDER: GuardedProvider(CreateTimer(PROVIDER),
                                                                 clock=clock)},
                            platform=NullPlatform(), journal=journal, clock=clock)
        reconciler = Reconciler(fleet=fleet, policies=PolicyHolder.fixed(policy_set),
                                executor=executor, journal=journal,
                                providers=executor.providers, clock=clock, interval=3600,
                                metrics=Metrics())
        await reconciler.reconcile_once()
        gc.collect()
        full = rss_bytes()
        await journal.close()
    result: dict[str, Any] = {
        "nodes": nodes, "pools": pools, "empty_daemon_mb": round(empty / 2**20, 1),
        "rss_mb": round(full / 2**20, 1), "bytes_per_node": round((full - empty) / nodes)}
    if edge_checks:
        quiet, one, reload = [], [], []
        at = now
        for run in range(runs):
            at += 31  # past the old 30 s resync period, well inside stale_after
            quiet.append(timed_ms(lambda: watch.check(fleet, policy_set, at)))  # noqa: B023
            source.handle(topic(0), message(0, pools=pools, active=EDGE - 1, seq=2 + run,
                                            at=at), retained=False)
            one.append(timed_ms(lambda: watch.check(fleet, policy_set, at)))  # noqa: B023
            policy_set = PolicySet(pools=tuple(list(policy_set.pools)),  # new objects
                                   providers=policy_set.providers)
            reload.append(timed_ms(lambda: watch.check(fleet, policy_set, at)))  # noqa: B023
        result["edge_check_ms"] = {"first": round(first, 2), "quiet_after_31s": spread(quiet),
                                   "one_node_changed": spread(one),
                                   "policy_reload": spread(reload)}
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        nodes, pools, runs, checks = (int(a) for a in sys.argv[2:6])
        print(json.dumps(child(nodes, pools, runs, bool(checks))))
        return
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--pools", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ingest.json")
    args = parser.parse_args()
    rows = []
    for n in args.nodes:
        runs = [json.loads(subprocess.run(
            [sys.executable, __file__, "--child", str(n), str(args.pools), str(args.runs),
             "1" if n == min(args.nodes) else "0"],
            capture_output=True, text=True, check=True).stdout) for _ in range(args.runs)]
        row = {**runs[0], "runs": args.runs,
               "rss_mb": spread([r["rss_mb"] for r in runs]),
               "bytes_per_node": spread([r["bytes_per_node"] for r in runs]),
               "empty_daemon_mb": spread([r["empty_daemon_mb"] for r in runs])}
        if "edge_check_ms" in runs[0]:
            row["edge_check_ms"] = {
                "first": spread([r["edge_check_ms"]["first"] for r in runs]),
                **{k: spread([r["edge_check_ms"][k]["median"] for r in runs])
                   for k in ("quiet_after_31s", "one_node_changed", "policy_reload")}}
        rows.append(row)
    print(f"{'nodes':>7} {'pools':>5} {'empty MB':>9} {'RSS MB min/med':>15} "
          f"{'B/node min/med':>15}")
    for r in rows:
        print(f"{r['nodes']:>7} {r['pools']:>5} {r['empty_daemon_mb']['median']:>9} "
              f"{r['rss_mb']['min']:>7}/{r['rss_mb']['median']:<7} "
              f"{r['bytes_per_node']['min']:>7}/{r['bytes_per_node']['median']:<7}")
        for k, v in r.get("edge_check_ms", {}).items():
            print(f"{'':>7} edge check {k}: {v['min']} / {v['median']} ms")
    out = json.loads(args.out.read_text()) if args.out.exists() else {"benchmark": "ingest"}
    out["fleet_memory"] = {
        "command": "python " + " ".join(["bench/fleet_memory.py", *sys.argv[1:]]),
        "sizes": rows, "identity_example": identity(0),
        "aims": {"rss_mb_at_10k_at_most": 100, "bytes_per_node_at_100k_at_most": 2500,
                 "edge_check_ms_at_most": 10}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
