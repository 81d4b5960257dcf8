"""Refresh the facts of N real mcollectived nodes through ActiveMQ, as the fact source does.

    .venv/bin/python bench/mcollective.py [--nodes 50] [--rounds 7]

Starts ActiveMQ (STOMP) and N mcollectived processes (tests/mcopeers.py: each its own
identity, facts file and libdir, about 30 MB of Ruby each), waits until all answer, then
times refresh rounds of the MCollective fact source in both poll modes:

* broadcast: one rpcutil inventory request to /topic/mcollective.rpcutil.agent;
* directed: one copy per node on /queue/mcollective.nodes with its mc_identity.

A round's time runs from the request to the last node's facts stored in the fleet model
(every node must answer, or the round does not count). Messages are what gearshift sent
and received over STOMP in the round (the broker delivers a broadcast once per node).
Baseline, same run: Ruby's own ``mco rpc rpcutil inventory`` over the same fleet
(discovery timeout 1 s, as small as mco allows to be reliable), wall time per call.
Adds (or replaces) this fleet size's entry in bench/results/mcollective.json, with
min/median per mode.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from gearshift.logs import configure  # noqa: E402
from gearshift.observe.fleet import FleetModel  # noqa: E402
from gearshift.observe.mcollective.source import McoFactSource  # noqa: E402
from gearshift.settings import McollectiveSettings  # noqa: E402
from mcopeers import PSK, start_nodes, stop_nodes  # noqa: E402
from peers import activemq_broker  # noqa: E402

CLIENT_CFG = """\
main_collective = mcollective
collectives = mcollective
libdir = /usr/lib/ruby/vendor_ruby
logfile = {log}
loglevel = warn
securityprovider = psk
plugin.psk = {psk}
connector = activemq
plugin.activemq.pool.size = 1
plugin.activemq.pool.1.host = 127.0.0.1
plugin.activemq.pool.1.port = {port}
plugin.activemq.pool.1.user = mcollective
plugin.activemq.pool.1.password = marionette
"""


def settings(port: int, poll: str) -> McollectiveSettings:
    return McollectiveSettings.model_validate({
        "enabled": True, "brokers": [f"127.0.0.1:{port}"], "psk": PSK, "poll": poll,
        "interval": 60, "timeout": 5, "heartbeat": 10})


async def rounds_of(port: int, poll: str, *, nodes: int, rounds: int) -> dict[str, Any]:
    fleet = FleetModel(stale_after=600)
    source = McoFactSource(settings(port, poll), fleet)
    last_reply = 0.0
    handle = source.handle

    def timed(payload: bytes) -> None:
        nonlocal last_reply
        handle(payload)
        last_reply = time.perf_counter()

    source.handle = timed  # type: ignore[method-assign]
    times, sent, received = [], [], []
    async with source.client() as client:
        subscription = await client.subscribe(source.reply_to, source._on_frame, ack="auto",
                                              on_suppressed_exception=lambda e, f: None)
        if poll == "directed":
            found = await source.discover(client)
            source.targets.update(dict.fromkeys(found, time.time()))
            assert len(found) == nodes, f"discovery found {len(found)} of {nodes}"
        for _ in range(rounds + 1):  # the first round warms up
            before_sent, before_received = source.sent, source.received
            started = time.perf_counter()
            answered = await source.refresh(client, discover=False)
            if len(answered) != nodes:
                raise SystemExit(f"{poll}: only {len(answered)} of {nodes} nodes answered")
            times.append(last_reply - started)
            sent.append(source.sent - before_sent)
            received.append(source.received - before_received)
        await subscription.unsubscribe()
    times, sent, received = times[1:], sent[1:], received[1:]
    return {"refresh_s_min": round(min(times), 4),
            "refresh_s_median": round(statistics.median(times), 4),
            "messages_sent_per_refresh": statistics.median(sent),
            "messages_received_per_refresh": statistics.median(received),
            "broker_publishes_per_refresh": statistics.median(sent) + statistics.median(received),
            "broker_deliveries_per_refresh": statistics.median(received) + nodes,
            "rounds": rounds, "times_s": [round(t, 4) for t in times]}


def mco_baseline(directory: Path, port: int, *, nodes: int, rounds: int) -> dict[str, Any]:
    config = directory / "client.cfg"
    config.write_text(CLIENT_CFG.format(log=directory / "client.log", psk=PSK, port=port))
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        out = subprocess.run(["mco", "rpc", "rpcutil", "inventory", "--dt", "1", "-j",
                              "--config", str(config)], capture_output=True, check=True,
                             timeout=120).stdout
        times.append(time.perf_counter() - started)
        answered = len(json.loads(out))
        if answered != nodes:
            raise SystemExit(f"mco: only {answered} of {nodes} nodes answered")
    return {"refresh_s_min": round(min(times), 4),
            "refresh_s_median": round(statistics.median(times), 4), "rounds": rounds}


async def wait_all(port: int, nodes: int) -> float:
    fleet = FleetModel(stale_after=600)
    source = McoFactSource(settings(port, "broadcast"), fleet)
    started = time.perf_counter()
    async with source.client() as client:
        subscription = await client.subscribe(source.reply_to, source._on_frame, ack="auto",
                                              on_suppressed_exception=lambda e, f: None)
        while len(fleet) < nodes:
            if time.perf_counter() - started > 300:
                raise SystemExit(f"only {len(fleet)} of {nodes} mcollectived answered")
            await source.refresh(client, discover=False)
        await subscription.unsubscribe()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    configure(level="warning", fmt="console")
    with tempfile.TemporaryDirectory(prefix="gs-mco-bench-") as tmp:
        directory = Path(tmp)
        broker = activemq_broker(directory / "activemq")
        port = broker.extra["stomp"]
        nodes = start_nodes(directory / "nodes", count=args.nodes, port=port)
        try:
            ready = asyncio.run(wait_all(port, args.nodes))
            print(f"{args.nodes} mcollectived answering after {ready:.1f}s", flush=True)
            results = {poll: asyncio.run(rounds_of(port, poll, nodes=args.nodes,
                                                   rounds=args.rounds))
                       for poll in ("broadcast", "directed")}
            results["mco_rpc_baseline"] = mco_baseline(directory, port, nodes=args.nodes,
                                                       rounds=max(3, args.rounds // 2))
        finally:
            stop_nodes(nodes)
            broker.stop()
    base = results["mco_rpc_baseline"]["refresh_s_median"]
    for poll in ("broadcast", "directed"):
        results[poll]["ratio_vs_mco_median"] = round(results[poll]["refresh_s_median"] / base, 3)
    report = {"nodes": args.nodes, "machine": {"cpus": os.cpu_count(),
                                               "python": platform.python_version()},
              **results}
    for name, figures in results.items():
        print(f"{name:18} min {figures['refresh_s_min']:.3f}s  median "
              f"{figures['refresh_s_median']:.3f}s  "
              f"sent {figures.get('messages_sent_per_refresh', '-')}  "
              f"received {figures.get('messages_received_per_refresh', '-')}")
    # One entry per fleet size: runs with other --nodes values are kept.
    out = ROOT / "bench" / "results" / "mcollective.json"
    runs = json.loads(out.read_text()).get("runs", {}) if out.exists() else {}
    runs[str(args.nodes)] = report
    out.write_text(json.dumps({"runs": dict(sorted(runs.items(), key=lambda kv: int(kv[0])))},
                              indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
