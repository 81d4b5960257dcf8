"""Run the real daemon wiring (``gearshift.daemon.serve``) on a simulated world, as a process.

``gearshift run`` builds only real providers (``kind: simulated`` is refused there on
purpose), and real drivers need real clouds. The daemon-level tests (sd_notify and the
watchdog, SIGHUP and hot reload, schemathesis against the live API, the dashboard's and
the alert rules' metrics) start this script instead. It does what ``run_daemon`` does up
to the providers: settings, logging, ``load_policies``; then it builds simulated providers
and platform over one ``SimWorld``, seeds each pool's starting nodes, and hands everything
to ``serve`` -- the function ``gearshift run`` ends in -- with one extra task: simulated
node agents publishing facts over the real MQTT broker named in the config. Facts, the
reconciler, the HTTP API, signals, sd_notify and the policy watcher are the daemon's own.

    PYTHONPATH=daemon python tests/sim_daemon.py --config CONFIG [--demand POOL=GEARS ...]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from pathlib import Path

from gearshift.act.providers.guard import GuardedProvider, GuardSettings
from gearshift.clock import SystemClock
from gearshift.daemon import load_policies, serve
from gearshift.logs import configure
from gearshift.metrics import Metrics
from gearshift.settings import load_settings
from gearshift.sim.providers import SimulatedPlatform, SimulatedProvider
from gearshift.sim.publisher import SimPublisher
from gearshift.sim.seed import seed_fleet
from gearshift.sim.world import SimWorld
from gearshift.store.journal import MemoryJournal


async def main(config: Path, demand: dict[str, int]) -> int:
    settings = load_settings(config)
    configure(level=settings.log.level, fmt=settings.log.format)
    clock = SystemClock()
    metrics = Metrics()
    policies = load_policies(settings, metrics)
    assert policies.current.providers is not None
    start = clock.now()
    world = SimWorld(seed=1, start=start, move_time=1.0)
    rng = random.Random(2)
    guard = GuardSettings(call_timeout=10, retry_deadline=5, retry_initial=0.2, retry_max=1)
    providers = {spec.name: GuardedProvider(
        SimulatedProvider(spec, world=world, clock=clock, rng=rng), clock=clock,
        metrics=metrics, settings=guard, boot_time=spec.boot_time)
        for spec in policies.current.providers.providers}
    journal = MemoryJournal()
    await seed_fleet(world, journal, policies.current, demand, start=start)
    agents = SimPublisher(world, settings.mqtt, clock=clock, demand=lambda now: demand)
    return await serve(settings, policies=policies, providers=providers,
                       platform=SimulatedPlatform(world), journal=journal, clock=clock,
                       metrics=metrics, tasks={"agents": agents.run})


def _demand(text: str) -> tuple[str, int]:
    pool, _, gears = text.partition("=")
    return pool, int(gears)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--demand", type=_demand, action="append", default=[],
                        metavar="POOL=GEARS", help="active gears demanded (constant)")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.config, dict(args.demand))))
