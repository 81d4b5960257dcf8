"""Create and destroy N nodes on every provider's simulator, all at once and one by one.

    .venv/bin/python bench/providers.py [--nodes 20] [--kinds vsphere,ovirt,ec2,redfish]

Starts the same simulators the tests use (vcsim, the fake oVirt engine driven by the real
ovirtsdk4, moto, sushy-tools), then for each kind creates N nodes in parallel (one
``create_many``), destroys them in parallel, and does the same again one node at a time.
Prints per-operation p50/p99 and the phase's total wall time, and writes
bench/results/providers.json.

Read the figures as the cost of gearshift plus the simulator, not of a real vCenter or
EC2: vcsim and moto answer in milliseconds, the fake engine keeps a new VM locked for
0.1 s, and sushy-tools' fake BMCs apply each power change 1-11 s late (a random delay
of the emulator), which is what the Redfish figures mostly measure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from gearshift.act.providers.base import CreateRequest, Provider  # noqa: E402
from gearshift.act.providers.registry import build_provider  # noqa: E402
from gearshift.logs import configure  # noqa: E402
from gearshift.policy.schema import Blueprint, ProviderSpec  # noqa: E402
from gearshift.store.sqlite import SqliteJournal  # noqa: E402
from simulators import MissingPeer  # noqa: E402
from simulators import moto as moto_sim  # noqa: E402
from simulators import ovirt as ovirt_sim  # noqa: E402
from simulators import redfish as redfish_sim  # noqa: E402
from simulators import vcsim as vcsim_sim  # noqa: E402

PASSWORD = "bench-" + uuid.uuid4().hex[:12]
KINDS = ("vsphere", "ovirt", "ec2", "redfish")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (with 20 samples, p99 is the slowest one)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary(durations: list[float], total: float) -> dict[str, float]:
    return {"p50_s": round(percentile(durations, 50), 4),
            "p99_s": round(percentile(durations, 99), 4),
            "mean_s": round(statistics.fmean(durations), 4),
            "total_s": round(total, 3)}


class Peers:
    """Every simulator a kind needs, started on demand and stopped at the end."""

    def __init__(self, directory: Path, nodes: int) -> None:
        self.directory = directory
        self.nodes = nodes
        self.stoppers: list[Any] = []

    def spec(self, kind: str) -> tuple[ProviderSpec, Blueprint]:
        name = f"bench-{kind}"
        blueprint: dict[str, Any] = {"name": f"{kind}-small", "provider": name,
                                     "node_profile": "small", "user_data": "#cloud-config\n"}
        if kind == "vsphere":
            sim = vcsim_sim.start(username="bench", password=PASSWORD)
            self.stoppers.append(sim.stop)
            settings: dict[str, Any] = {
                "url": sim.url, "username": "bench", "password_env": "BENCH_PASSWORD",
                "insecure": True, "cluster": "DC0_C0", "workers": 8}
            blueprint["template"] = "DC0_C0_RP0_VM0"
        elif kind == "ovirt":
            peer = ovirt_sim.start(password=PASSWORD, directory=self.directory)
            self.stoppers.append(peer.stop)
            settings = {"url": f"{peer.url}/ovirt-engine/api", "username": "gearshift@internal",
                        "password_env": "BENCH_PASSWORD", "cluster": "Default", "workers": 8}
            blueprint["template"] = "node-template"
        elif kind == "ec2":
            peer = moto_sim.start(directory=self.directory)
            self.stoppers.append(peer.stop)
            credentials = self.directory / "aws-credentials"
            credentials.write_text("[default]\naws_access_key_id = AKIABENCH\n"
                                   f"aws_secret_access_key = {PASSWORD}\n")
            settings = {"region": "us-east-1", "endpoint_url": peer.url,
                        "credentials_file": str(credentials)}
            blueprint.update(image="ami-12c6146b", instance_type="m5.large")
        else:
            sushy = redfish_sim.start_sushy(directory=self.directory / "sushy",
                                            machines=self.nodes, username="bench",
                                            password=PASSWORD)
            self.stoppers.append(sushy.stop)
            settings = {"machines": [{"name": n, "bmc": sushy.url, "system": s}
                                     for n, s in sushy.systems],
                        "username": "bench", "password_env": "BENCH_PASSWORD",
                        "state_file": str(self.directory / "baremetal.json"),
                        "power_off": "ForceOff", "poll_interval": "0.5s",
                        "power_timeout": "60s"}
        spec = ProviderSpec.model_validate({"name": name, "kind": kind,
                                            "quota": {"max_nodes": 2 * self.nodes},
                                            "settings": settings})
        return spec, Blueprint.model_validate(blueprint)

    def stop(self) -> None:
        for stop in self.stoppers:
            stop()


async def timed(durations: list[float], call: Any) -> Any:
    started = time.perf_counter()
    result = await call
    durations.append(time.perf_counter() - started)
    return result


async def phase(provider: Provider, blueprint: Blueprint, nodes: int, *,
                parallel: bool) -> dict[str, dict[str, float]]:
    requests = [CreateRequest(key=uuid.uuid4().hex, name=f"bench-{uuid.uuid4().hex[:8]}",
                              pool="small", blueprint=blueprint) for _ in range(nodes)]
    creates: list[float] = []
    destroys: list[float] = []
    started = time.perf_counter()
    if parallel:
        machines = await asyncio.gather(*(timed(creates, provider.create(r)) for r in requests))
    else:
        machines = [await timed(creates, provider.create(r)) for r in requests]
    create_total = time.perf_counter() - started
    owned = await provider.list_owned()
    if len(owned) != nodes:
        raise RuntimeError(f"{provider.name}: {len(owned)} machines listed after {nodes} creates")
    started = time.perf_counter()
    if parallel:
        await asyncio.gather(*(timed(destroys, provider.destroy(m.machine_id)) for m in machines))
    else:
        for machine in machines:
            await timed(destroys, provider.destroy(machine.machine_id))
    destroy_total = time.perf_counter() - started
    if await provider.list_owned():
        raise RuntimeError(f"{provider.name}: machines left after destroying them all")
    return {"create": summary(creates, create_total), "destroy": summary(destroys, destroy_total)}


async def bench(kind: str, peers: Peers, nodes: int) -> dict[str, Any]:
    spec, blueprint = peers.spec(kind)
    provider = build_provider(spec)
    journal = await SqliteJournal.open(peers.directory / f"journal-{kind}.db")
    provider.keep_state_in(journal)  # bare metal records its allocations there, as in run
    try:
        await provider.list_owned()  # connect / log in / first-call warm-up, not measured
        return {"parallel": await phase(provider, blueprint, nodes, parallel=True),
                "one_by_one": await phase(provider, blueprint, nodes, parallel=False)}
    finally:
        await provider.close()
        await journal.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--kinds", default=",".join(KINDS))
    args = parser.parse_args()
    configure(level="warning")
    os.environ["BENCH_PASSWORD"] = PASSWORD
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="gearshift-bench-") as tmp:
        peers = Peers(Path(tmp), args.nodes)
        try:
            for kind in args.kinds.split(","):
                results[kind] = asyncio.run(bench(kind, peers, args.nodes))
                print(f"{kind} done", file=sys.stderr)
        except MissingPeer as exc:
            sys.exit(str(exc))
        finally:
            peers.stop()

    print(f"\n{args.nodes} nodes per run   {'':>10} {'create p50':>10} {'p99':>8} {'total':>8}   "
          f"{'destroy p50':>11} {'p99':>8} {'total':>8}")
    for kind, modes in results.items():
        for mode, ops in modes.items():
            c, d = ops["create"], ops["destroy"]
            print(f"{kind:<10} {mode:<10} {'':>10} {c['p50_s']:>10.3f} {c['p99_s']:>8.3f} "
                  f"{c['total_s']:>8.2f}   {d['p50_s']:>11.3f} {d['p99_s']:>8.3f} "
                  f"{d['total_s']:>8.2f}")
    out = ROOT / "bench" / "results" / "providers.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "nodes": args.nodes, "python": platform.python_version(), "cpus": os.cpu_count(),
        "note": "seconds; vcsim, fake oVirt engine, moto, sushy-tools (power lands 1-11 s late)",
        "providers": results}, indent=2) + "\n")
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
