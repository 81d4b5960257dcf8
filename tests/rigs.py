"""Helpers for the observe integration tests: fact payloads, a running fact source, and
a real reconciler over simulated providers (the providers are not what these tests test).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from gearshift.act.executor import Executor
from gearshift.act.providers.guard import GuardedProvider, GuardSettings
from gearshift.clock import Clock
from gearshift.metrics import Metrics
from gearshift.observe.fleet import FleetModel
from gearshift.observe.mqtt import MqttFactSource
from gearshift.policy.holder import PolicyHolder
from gearshift.policy.schema import PolicySet
from gearshift.reconcile.reconciler import Reconciler
from gearshift.sim.providers import SimulatedPlatform, SimulatedProvider
from gearshift.sim.world import SimWorld
from gearshift.store.journal import MemoryJournal


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def facts_payload(identity: str, *, active: int, ts: float, seq: int = 1, max_gears: int = 60,
                  profile: str = "small", district_active: bool = True,
                  **extra: Any) -> bytes:
    """A ``gearshift.node.facts/1`` message."""
    message: dict[str, Any] = {
        "schema": "gearshift.node.facts/1", "ts": iso(ts), "seq": seq, "identity": identity,
        "node_profile": profile, "district": {"uuid": "d1", "active": district_active},
        "limits": {"max_active_gears": max_gears},
        "gears": {"total": active, "active": active, "started": active}}
    message.update(extra)
    return json.dumps(message).encode()


def legacy_payload(*, active: int, max_gears: int = 60, profile: str = "small",
                   **extra: str) -> bytes:
    """Legacy MCollective facts: a flat map of strings."""
    pct = f"{active * 100 / max_gears:.1f}" if max_gears else "NaN"
    data = {"node_profile": profile, "max_active_gears": str(max_gears),
            "gears_total_count": str(active), "gears_active_count": str(active),
            "gears_idle_count": "0", "gears_stopped_count": "0", "district_uuid": "d1",
            "district_active": "true", "active_capacity": pct, "capacity": pct}
    data.update(extra)
    return json.dumps(data).encode()


async def wait_until(predicate: Callable[[], object], timeout: float = 10.0,
                     what: str = "condition") -> None:
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


@asynccontextmanager
async def running(source: MqttFactSource, *, caught_up: bool = True,
                  timeout: float = 15.0) -> AsyncIterator[MqttFactSource]:
    """Run ``source`` for the block (waiting until it has caught up, by default)."""
    stop = asyncio.Event()
    task = asyncio.create_task(source.run(stop))
    try:
        if caught_up:
            await wait_until(source.caught_up.is_set, timeout, "the source to catch up")
        yield source
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def sim_reconciler(policies: PolicySet, *, clock: Clock, fleet: FleetModel,
                   metrics: Metrics | None = None, interval: float = 3600.0,
                   signals: Callable[[], list[Any]] | None = None) -> Reconciler:
    """A real reconciler whose providers and platform are simulated (they boot slowly)."""
    assert policies.providers is not None
    world = SimWorld(seed=1, start=clock.now(), move_time=5)
    journal = MemoryJournal()
    rng = random.Random(1)
    providers = {s.name: GuardedProvider(
        SimulatedProvider(s, world=world, clock=clock, rng=rng), clock=clock,
        metrics=metrics, settings=GuardSettings(retry_deadline=5), boot_time=s.boot_time)
        for s in policies.providers.providers}
    executor = Executor(providers=providers, platform=SimulatedPlatform(world),
                        journal=journal, clock=clock, metrics=metrics)
    return Reconciler(fleet=fleet, policies=PolicyHolder.fixed(policies), executor=executor,
                      journal=journal, providers=providers, clock=clock, interval=interval,
                      metrics=metrics, signals=signals)
