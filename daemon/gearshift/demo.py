"""``gearshift demo``: the real daemon against a simulated fleet, all on 127.0.0.1.

An MQTT broker (mosquitto when installed, amqtt otherwise), simulated nodes publishing
their facts over it, simulated providers that boot nodes in seconds, the real fact
source, reconciler, executor, recovery, leader lease, metrics and HTTP API, wired by the
daemon's own composition root (``gearshift.assembly``) on an in-memory journal. Demand
for the ``small`` pool rises sharply every 90 seconds and falls again, so within a minute
the pool scales up and then drains and retires nodes.

The API's operator calls (pause, resume) need a bearer token even here, so each run makes
its own, in a file only its user can read that is removed when the demo stops, and prints
the exact commands that use it: a newcomer can pause the pool and watch it hold.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import os
import random
import secrets
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import structlog

from gearshift.act.providers.guard import GuardedProvider, GuardSettings
from gearshift.api.server import ApiServer
from gearshift.assembly import assemble, settings_fact_source
from gearshift.clock import SystemClock
from gearshift.logs import configure
from gearshift.metrics import Metrics
from gearshift.policy.holder import PolicyHolder
from gearshift.policy.loader import load_policy_set
from gearshift.policy.schema import PolicySet
from gearshift.reconcile.leader import lead
from gearshift.reconcile.supervisor import supervise
from gearshift.settings import MqttSettings, ReconcileSettings, Settings
from gearshift.sim.broker import embedded_broker
from gearshift.sim.providers import SimulatedPlatform, SimulatedProvider
from gearshift.sim.publisher import SimPublisher
from gearshift.sim.seed import seed_fleet
from gearshift.sim.world import SimWorld
from gearshift.store.journal import MemoryJournal

log = structlog.get_logger(component="gearshift.demo")

CYCLE = 90.0
# (seconds into the cycle, active gears demanded): calm, a spike, calm again.
DEMAND = ((0.0, 50), (5.0, 330), (25.0, 50))


def demand_at(elapsed: float) -> int:
    phase = elapsed % CYCLE
    return next(g for t, g in reversed(DEMAND) if phase >= t)


def demo_policy_dir() -> Path:
    return Path(str(importlib.resources.files("gearshift.sim").joinpath("demo")))


@contextmanager
def run_token() -> Iterator[tuple[str, Path]]:
    """A fresh API token and the file holding it (mode 0600, in a 0700 folder), removed after."""
    folder = Path(tempfile.mkdtemp(prefix="gearshift-demo-"))
    try:
        token = secrets.token_urlsafe(24)
        path = folder / "api.token"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(token + "\n")
        yield token, path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _command_name() -> str:
    """How this shell reaches ``gearshift``: the script that runs now, relative when it can."""
    script = Path(sys.argv[0])
    if script.name != "gearshift":
        return "gearshift"
    try:
        return str(script.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(script)


def operator_hints(*, url: str, token_file: Path, pool: str = "small") -> str:
    """The commands to try against the running demo, exactly as they can be pasted."""
    gearshift = _command_name()
    return (f"try it in another terminal (the API token is for this run only; its file is "
            f"removed when the demo stops):\n"
            f"  export GEARSHIFT_URL={url} GEARSHIFT_TOKEN_FILE={token_file}\n"
            f"  {gearshift} status\n"
            f"  {gearshift} pause {pool}     # the pool keeps its nodes until resumed\n"
            f"  {gearshift} plan --url $GEARSHIFT_URL\n"
            f"  {gearshift} resume {pool}")


async def run_demo(*, duration: float | None, port: int, host: str = "127.0.0.1",
                   verbose: bool = False) -> int:
    configure(level="info" if verbose else "warning")
    policies = load_policy_set([demo_policy_dir()])
    assert policies.providers is not None
    clock = SystemClock()
    start = clock.now()
    with run_token() as (token, token_file):
        return await _run(duration=duration, port=port, host=host, policies=policies,
                          clock=clock, start=start, token=token, token_file=token_file)


async def _run(*, duration: float | None, port: int, host: str, policies: PolicySet,
               clock: SystemClock, start: float, token: str, token_file: Path) -> int:
    assert policies.providers is not None
    async with embedded_broker() as broker:
        mqtt = MqttSettings(host=broker.host, port=broker.port,
                            protocol="5" if broker.kind == "mosquitto" else "3.1.1")
        world = SimWorld(seed=1, start=start, move_time=1.0, move_failure_rate=0.05)
        metrics = Metrics()
        journal = MemoryJournal()
        rng = random.Random(2)
        guard = GuardSettings(call_timeout=10, retry_deadline=5, retry_initial=0.2, retry_max=1,
                              capacity_backoff=20, breaker_reset=15)
        providers = {spec.name: GuardedProvider(
            SimulatedProvider(spec, world=world, clock=clock, rng=rng), clock=clock,
            metrics=metrics, settings=guard, boot_time=spec.boot_time)
            for spec in policies.providers.providers}
        await seed_fleet(world, journal, policies, {"small": demand_at(0)}, start=start)
        settings = Settings(mqtt=mqtt, reconcile=ReconcileSettings(interval=2.0, debounce=0.1,
                                                                   stale_after=15.0))
        # The daemon's own composition: leader lease, recovery, vouching, fact source.
        parts = assemble(settings, policies=PolicyHolder.fixed(policies), providers=providers,
                         platform=SimulatedPlatform(world), journal=journal, clock=clock,
                         metrics=metrics,
                         facts=settings_fact_source(settings, metrics=metrics, clock=clock))
        source, waker, vouching = parts.source, parts.waker, parts.vouching
        assert source is not None and waker is not None and vouching is not None
        reconciler, executor = parts.reconciler, parts.executor
        publisher = SimPublisher(world, mqtt, clock=clock,
                                 demand=lambda now: {"small": demand_at(now - start)})
        api = ApiServer(reconciler, metrics, token=token,
                        leader=lambda: parts.leadership.is_leader)
        await api.start(host, port)
        print(f"gearshift demo: broker {broker.kind} on {broker.host}:{broker.port}\n"
              f"  status page  http://127.0.0.1:{port}/\n"
              f"  metrics      http://127.0.0.1:{port}/metrics\n"
              f"  status JSON  http://127.0.0.1:{port}/v1/status\n"
              f"  plan         http://127.0.0.1:{port}/v1/plan\n"
              f"{operator_hints(url=f'http://127.0.0.1:{port}', token_file=token_file)}\n"
              + (f"running for {duration:g}s" if duration else "Ctrl-C to stop"), flush=True)

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        async def reconcile(stop: asyncio.Event) -> None:
            async with asyncio.timeout(15):
                await source.caught_up.wait()
            await lead(reconciler=reconciler, leadership=parts.leadership,
                       recovery=parts.recovery, caught_up=source.caught_up.wait, stop=stop)

        async def timer(stop: asyncio.Event) -> None:
            if duration is None:
                await stop.wait()
                return
            try:
                async with asyncio.timeout(duration):
                    await stop.wait()
            except TimeoutError:
                stop.set()

        try:
            await supervise({"facts": source.run, "agents": publisher.run, "edges": waker.run,
                             "reconcile": reconcile, "leadership": parts.leadership.run,
                             "vouching": vouching.run, "timer": timer}, stop)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await api.stop()
            await parts.leadership.release()
    counts = executor.counts
    print(f"\ngearshift demo summary after {clock.now() - start:.0f}s:\n"
          f"  nodes created   {counts[('scale_out', 'ok')]}\n"
          f"  drains          {counts[('drain', 'ok')]} (cancelled "
          f"{counts[('cancel_drain', 'ok')]})\n"
          f"  nodes retired   {counts[('retire', 'ok')]}\n"
          f"  max nodes       {publisher.max_nodes.get('small', 0)}\n"
          f"  nodes now       {len(world.pool_nodes('small'))}\n"
          f"  reconciles      {reconciler.reconciles}\n"
          f"  facts messages  {publisher.messages}", file=sys.stdout, flush=True)
    return 0
