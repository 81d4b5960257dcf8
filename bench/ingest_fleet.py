"""The fleet ``bench/ingest.py`` (and ``bench/fleet_memory.py``) run against: N nodes over P
pools, every node exactly at its pool's ``scale_up_above`` edge, a journal that owns every
node's machine, and a provider whose ``create()`` is the end point of the latency run.

Node ``i`` belongs to pool ``i % P`` (``node_profile`` ``p000``...): pool sizes differ by at
most one node. Every node runs ``EDGE`` of ``MAX_GEARS`` active gears, i.e. exactly at
``scale_up_above`` (0.80), so one more gear on any node takes its pool over the edge.
"""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

from gearshift.act.providers.base import CreateRequest, Provider, QuotaInfo
from gearshift.errors import NotFound
from gearshift.model import Machine
from gearshift.policy.schema import PolicySet, PoolPolicy, ProvidersFile
from gearshift.store.sqlite import SqliteJournal

PREFIX = "bench/v1"
MAX_GEARS = 60
EDGE = 48  # 48/60 = 0.80 = scale_up_above: one more gear on any node crosses it
PROVIDER = "rack-a"


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def identity(i: int) -> str:
    return f"node{i:06d}.example.com"


def pool_name(k: int) -> str:
    return f"p{k:03d}"


def topic(i: int) -> str:
    return f"{PREFIX}/nodes/{identity(i)}/facts"


def message(i: int, *, pools: int, active: int, seq: int, at: float) -> bytes:
    return json.dumps({
        "schema": "gearshift.node.facts/1", "ts": iso(at), "seq": seq, "identity": identity(i),
        "node_profile": pool_name(i % pools), "district": {"uuid": "513b5050", "active": True},
        "limits": {"max_active_gears": MAX_GEARS, "no_overcommit_active": False},
        "gears": {"total": active + 20, "active": active, "started": active, "idle": 15,
                  "stopped": 5, "deploying": 0, "unknown": 0},
        "net": {"public_hostname": identity(i)}, "labels": {}}).encode()


def policies(pools: int) -> PolicySet:
    """``pools`` pools, one blueprint each, all placed on the one provider."""
    pool_set = tuple(PoolPolicy.model_validate({
        "apiVersion": "gearshift/v1", "kind": "Pool", "name": pool_name(k),
        "selector": {"node_profile": pool_name(k)}, "size": {"min": 1, "max": 100000},
        "density": {"scale_up_above": 0.80, "scale_down_below": 0.45, "target": 0.65},
        "cooldown": {"up": "0s", "down": "10m"}, "step": {"max_up": 5},
        "placement": [{"provider": PROVIDER, "blueprint": f"bp-{pool_name(k)}"}]})
        for k in range(pools))
    providers = ProvidersFile.model_validate({
        "apiVersion": "gearshift/v1", "kind": "Providers",
        "providers": [{"name": PROVIDER, "kind": "simulated",
                       "quota": {"max_nodes": 1_000_000}}],
        "blueprints": [{"name": f"bp-{pool_name(k)}", "provider": PROVIDER,
                        "node_profile": pool_name(k), "max_active_gears": MAX_GEARS}
                       for k in range(pools)]})
    return PolicySet(pools=pool_set, providers=providers)


class CreateTimer(Provider):
    """The latency run's end point: notes when ``create()`` is called, then answers
    ``NotFound`` so nothing is provisioned and nothing lingers as pending capacity (the
    executor closes the create as failed; ``NotFound`` neither opens the guard's breaker
    nor backs the provider off), so the next trial crosses the same edge again."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.calls: list[float] = []  # perf_counter() of each create() call

    async def create(self, request: CreateRequest) -> Machine:
        self.calls.append(time.perf_counter())
        raise NotFound(self.name, "bench: the decision is timed to this call; nothing is made")

    async def list_owned(self) -> list[Machine]:
        return []

    async def destroy(self, machine_id: str) -> None:
        return None

    async def stop(self, machine_id: str) -> None:
        raise NotFound(self.name, f"stop {machine_id}: the bench makes no machine")

    async def start(self, machine_id: str) -> None:
        raise NotFound(self.name, f"start {machine_id}: the bench makes no machine")

    async def quota(self) -> QuotaInfo:
        return QuotaInfo(max_nodes=1_000_000, used=0)


async def leading_journal(directory: Path, nodes: int, pools: int) -> SqliteJournal:
    """A SQLite journal owning every node's machine, its lease held by this instance."""
    path = directory / "journal.db"
    path.unlink(missing_ok=True)
    await (await SqliteJournal.open(path)).close()  # the schema
    with sqlite3.connect(path) as conn:  # one transaction, not one fsync per machine
        conn.executemany("INSERT INTO gearshift_machines VALUES (?, ?, ?, ?, ?, ?, ?)",
                         [(identity(n), PROVIDER, f"m-{n}", f"bp-{pool_name(n % pools)}",
                           pool_name(n % pools), None, f"op-{n}") for n in range(nodes)])
    journal = await SqliteJournal.open(path)
    token = await journal.acquire_lease("bench", 3600)
    assert token is not None
    journal.fence(token)
    return journal
