"""``gearshift run``: the daemon, as systemd runs it (``Type=notify``).

Start-up order: settings, logging, policies (a bad file refuses to start), providers (a
missing SDK refuses to start with the pip line), journal, fact source, HTTP API; then the
reconciler starts once the fact source has caught up. ``READY=1`` is sent after the first
reconcile on fresh facts, ``WATCHDOG=1`` after every reconcile, ``STATUS=`` carries a
one-line fleet summary. SIGHUP reloads policies (``RELOADING=1``), SIGTERM stops
gracefully: the current reconcile finishes, in-flight operations stay journaled.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import structlog

from gearshift.act.executor import Executor
from gearshift.act.platform.base import Platform
from gearshift.act.platform.null import NullPlatform
from gearshift.act.providers.guard import GuardedProvider
from gearshift.act.providers.registry import build_provider
from gearshift.api.server import ApiServer
from gearshift.clock import SystemClock
from gearshift.errors import ConfigError
from gearshift.logs import configure
from gearshift.metrics import Metrics
from gearshift.model import Plan
from gearshift.observe.fleet import FleetModel
from gearshift.observe.mqtt import MqttFactSource
from gearshift.policy.holder import PolicyHolder
from gearshift.reconcile.reconciler import Reconciler
from gearshift.reconcile.supervisor import supervise
from gearshift.reconcile.wakeup import EdgeWaker
from gearshift.settings import MqttSettings, PlatformSettings, Settings, load_settings
from gearshift.store.journal import MemoryJournal
from gearshift.systemd import Notifier

log = structlog.get_logger(component="gearshift.daemon")


def build_platform(settings: PlatformSettings, mqtt: MqttSettings | None = None) -> Platform:
    if settings.kind == "none":
        return NullPlatform()
    if settings.kind == "openshift":
        from gearshift.act.platform.openshift import build_openshift  # noqa: PLC0415

        return build_openshift(settings, mqtt=mqtt)
    raise ConfigError([f"platform kind {settings.kind!r} is not available in this version; "
                       f"use platform: {{kind: none}}"])


def fleet_summary(plan: Plan) -> str:
    parts = []
    for name, e in plan.pools.items():
        density = "n/a" if e.active_density is None else f"{e.active_density:.2f}"
        flag = " degraded" if e.degraded else ""
        parts.append(f"{name} {e.active}+{e.booting} nodes d={density}{flag}")
    return "; ".join(parts) or "no pools"


def read_token(path: Path | None) -> str | None:
    if path is None:
        return None
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        raise ConfigError([f"{path}:1:1: the API token file is empty"])
    return token


async def run_daemon(config: Path, *, settings: Settings | None = None) -> int:
    settings = settings or load_settings(config)
    configure(level=settings.log.level, fmt=settings.log.format)
    clock = SystemClock()
    metrics = Metrics()
    notifier = Notifier()
    policies = PolicyHolder([settings.policies_dir, settings.providers_file],
                            on_reload=lambda outcome: metrics.policy_reloads.labels(outcome).inc())
    if policies.current.providers is None:
        raise ConfigError([f"{settings.providers_file}:1:1: no kind: Providers document found"])
    providers = {spec.name: GuardedProvider(build_provider(spec), clock=clock, metrics=metrics,
                                            boot_time=spec.boot_time)
                 for spec in policies.current.providers.providers}
    platform = build_platform(settings.platform, settings.mqtt)
    journal = MemoryJournal()
    fleet = FleetModel(stale_after=settings.reconcile.stale_after)
    source = MqttFactSource(settings.mqtt, fleet, metrics=metrics, clock=clock)
    executor = Executor(providers=providers, platform=platform, journal=journal, clock=clock,
                        metrics=metrics, on_retired=source.forget_node)
    reconciler = Reconciler(fleet=fleet, policies=policies, executor=executor, journal=journal,
                            providers=providers, clock=clock,
                            interval=settings.reconcile.interval, metrics=metrics)
    source.requests = reconciler.requests
    waker = EdgeWaker(reconciler, debounce=settings.reconcile.debounce)
    source.on_facts = waker.poke
    api = ApiServer(reconciler, metrics, token=read_token(settings.http.token_file),
                    max_body=settings.http.max_body)

    ready = False

    def after_reconcile(plan: Plan) -> None:
        nonlocal ready
        summary = fleet_summary(plan)
        if not ready and fleet.source_up:
            ready = True
            notifier.ready(summary)
            log.info("ready", status=summary)
        else:
            notifier.status(summary)
        notifier.watchdog()

    reconciler.on_reconciled.append(after_reconcile)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def reload() -> None:
        notifier.reloading()
        policies.reload()
        reconciler.wake("policy reload")
        notifier.send(ready="1", status="policies reloaded" if not policies.problems
                      else f"policy reload refused: {policies.problems[0]}")

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload)

    async def reconcile(stop: asyncio.Event) -> None:
        await source.caught_up.wait()
        await reconciler.run(stop)

    await api.start(settings.http.host, settings.http.port)
    log.info("started", http=f"{settings.http.host}:{settings.http.port}",
             mqtt=f"{settings.mqtt.host}:{settings.mqtt.port}",
             pools=[p.name for p in policies.current.pools])
    try:
        await supervise({"facts": source.run, "edges": waker.run, "reconcile": reconcile}, stop)
    finally:
        notifier.stopping()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await api.stop()
        await platform.close()
        for provider in providers.values():
            await provider.close()
        await journal.close()
        log.info("stopped")
    return 0
