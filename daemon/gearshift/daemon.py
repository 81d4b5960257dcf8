"""``gearshift run``: the daemon, as systemd runs it (``Type=notify``).

Start-up order: settings, logging, policies (a bad file refuses to start), providers (a
missing SDK refuses to start with the pip line), journal, fact source, HTTP API; then the
reconciler starts once the fact source has caught up (the GC policy, ``gcpolicy``, is
applied before the facts replay and again once they have). ``READY=1`` is sent after
the first reconcile on fresh facts, ``WATCHDOG=1`` after every reconcile, ``STATUS=``
carries a one-line fleet summary.
SIGHUP reloads policies (``RELOADING=1``), SIGTERM stops gracefully: the current
reconcile finishes, in-flight operations stay journaled.

``run_daemon`` builds the parts that talk to the outside world (providers, platform,
journal) from the settings and hands them to ``serve``, which is the daemon proper: the
parts ``gearshift.assembly`` wires (fact source, reconciler, recovery, leadership -- the
same composition ``demo`` and ``simulate`` use), HTTP API, sd_notify, signals and the
policy watcher. Tests run ``serve`` in a real process with simulated providers (tests/sim_daemon.py), so the
wiring they check is this one.

The journal is ``journal.kind`` (SQLite by default). Only the holder of the journal's
leader lease acts: on election it first runs recovery (journal against provider
listings and facts) and reads back the paused pools and the preemptions in flight, then
reconciles; between reconciles it sweeps for orphans and prunes finished operations
(``reconcile.retention``). A follower evaluates read-only for ``/v1/status``
(``"leader": false``) and keeps the heartbeat going.

Liveness: ``WATCHDOG=1`` is sent only from the reconcile loop's own heartbeat (after every
reconcile, and every ``WATCHDOG_USEC/2`` while it idles), never from a side task, so a
hung loop stops it and systemd restarts the daemon.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

from gearshift import gcpolicy
from gearshift.act.platform.base import Platform
from gearshift.act.platform.null import NullPlatform
from gearshift.act.providers.guard import GuardedProvider, GuardSettings
from gearshift.act.providers.kind_settings import KIND_SETTINGS
from gearshift.act.providers.registry import build_provider
from gearshift.api.models_status import (
    LeadershipModel,
    OperationsModel,
    RecoveriesModel,
    StatusExtrasModel,
    UntrustedModel,
)
from gearshift.api.server import ApiServer
from gearshift.assembly import assemble, settings_fact_source
from gearshift.clock import Clock, SystemClock
from gearshift.errors import ConfigError
from gearshift.logs import configure
from gearshift.metrics import Metrics
from gearshift.plan import Plan
from gearshift.policy.holder import PolicyHolder
from gearshift.policy.schema import ProvidersFile, ProviderSpec
from gearshift.policy.watch import PolicyWatcher
from gearshift.reconcile.leader import lead
from gearshift.reconcile.supervisor import TaskFactory, supervise
from gearshift.reconcile.trust import count_untrusted, untrusted
from gearshift.records import Journal
from gearshift.settings import (
    MqttSettings,
    OperationsSettings,
    PlatformSettings,
    Settings,
    load_settings,
)
from gearshift.store.factory import open_journal
from gearshift.systemd import Notifier
from gearshift.wire.signing import Keyring

log = structlog.get_logger(component="gearshift.daemon")

HEARTBEAT = 10.0  # the loop beats at least this often while idle (faster under a watchdog)


def build_platform(settings: PlatformSettings, mqtt: MqttSettings | None = None, *,
                   keyring: Keyring | None = None) -> Platform:
    if settings.kind == "none":
        return NullPlatform()
    if settings.kind == "openshift":
        from gearshift.act.platform.openshift import build_openshift  # noqa: PLC0415

        return build_openshift(settings, mqtt=mqtt, keyring=keyring)
    if settings.kind == "simulated":
        from gearshift.act.platform.simulated import SimulatedWorldPlatform  # noqa: PLC0415

        if not settings.url:
            raise ConfigError(["platform: kind simulated needs url (a world server)"])
        return SimulatedWorldPlatform(settings.url)
    raise ConfigError([f"platform kind {settings.kind!r} is not available in this version; "
                       f"use platform: {{kind: none}}"])


def fleet_summary(plan: Plan) -> str:
    parts = []
    for name, e in plan.pools.items():
        density = "n/a" if e.active_density is None else f"{e.active_density:.2f}"
        flag = " degraded" if e.degraded else ""
        parts.append(f"{name} {e.active}+{e.booting} nodes, active density now {density}{flag}")
    return "; ".join(parts) or "no pools"


def guard_settings(ops: OperationsSettings) -> GuardSettings:
    return GuardSettings(call_timeout=ops.call_timeout, retry_deadline=ops.retry_deadline,
                         retry_initial=ops.retry_initial, retry_max=ops.retry_max,
                         breaker_threshold=ops.breaker_threshold,
                         breaker_reset=ops.breaker_reset, capacity_backoff=ops.capacity_backoff)


def read_token(path: Path | None) -> str | None:
    if path is None:
        return None
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        raise ConfigError([f"{path}:1:1: the API token file is empty"])
    return token


def load_policies(settings: Settings, metrics: Metrics) -> PolicyHolder:
    """The policies in force; every reload is counted and its problems exported."""
    for outcome in ("ok", "refused"):
        metrics.policy_reloads.labels(outcome)

    def reloaded(outcome: str) -> None:
        metrics.policy_reloads.labels(outcome).inc()
        metrics.policy_errors.set(len(holder.problems))

    holder = PolicyHolder([settings.policies_dir, settings.providers_file], on_reload=reloaded,
                          kinds=KIND_SETTINGS)
    built = holder.current.providers
    holder.check = lambda candidate: providers_needing_restart(
        built, candidate.providers, file=settings.providers_file)
    metrics.policy_errors.set(0)
    return holder


def providers_needing_restart(built: ProvidersFile | None, candidate: ProvidersFile | None, *,
                              file: Path) -> list[str]:
    """Why a reloaded providers file cannot take effect without a restart (empty: it can).

    Providers are built (connections, credentials) once at start; quotas, costs, boot
    times and blueprints are read live, but a provider added, removed or given another
    kind or settings would be half applied, so such an edit is refused until a restart.
    """
    def shape(spec: ProviderSpec) -> tuple[str, dict[str, Any]]:
        return spec.kind, spec.settings

    before = {p.name: shape(p) for p in built.providers} if built else {}
    after = {p.name: shape(p) for p in candidate.providers} if candidate else {}
    changed = sorted(
        [f"{name} added" for name in after.keys() - before.keys()]
        + [f"{name} removed" for name in before.keys() - after.keys()]
        + [f"{name}'s kind or settings changed" for name in after.keys() & before.keys()
           if after[name] != before[name]])
    if not changed:
        return []
    return [f"{file}:1:1: providers changed ({', '.join(changed)}): restart gearshift to "
            f"apply provider changes (systemctl restart gearshift)"]


async def run_daemon(config: Path, *, settings: Settings | None = None) -> int:
    settings = settings or load_settings(config)
    configure(level=settings.log.level, fmt=settings.log.format)
    clock = SystemClock()
    metrics = Metrics()
    policies = load_policies(settings, metrics)
    if policies.current.providers is None:
        raise ConfigError([f"{settings.providers_file}:1:1: no kind: Providers document found"])
    providers = {spec.name: GuardedProvider(build_provider(spec), clock=clock, metrics=metrics,
                                            boot_time=spec.boot_time,
                                            settings=guard_settings(settings.operations))
                 for spec in policies.current.providers.providers}
    platform = build_platform(settings.platform, settings.mqtt,
                              keyring=settings.trust.keyring())
    journal = await open_journal(settings.journal)
    return await serve(settings, policies=policies, providers=providers, platform=platform,
                       journal=journal, clock=clock, metrics=metrics)


async def serve(settings: Settings, *, policies: PolicyHolder,
                providers: Mapping[str, GuardedProvider], platform: Platform, journal: Journal,
                clock: Clock, metrics: Metrics,
                tasks: Mapping[str, TaskFactory] | None = None) -> int:
    """Run the daemon on parts already built, until SIGTERM; ``tasks`` run alongside."""
    notifier = Notifier()
    trust = settings.trust
    parts = assemble(settings, policies=policies, providers=providers, platform=platform,
                     journal=journal, clock=clock, metrics=metrics,
                     facts=settings_fact_source(settings, metrics=metrics, clock=clock))
    fleet, executor, reconciler = parts.fleet, parts.executor, parts.reconciler
    leadership, recovery, signal_source = parts.leadership, parts.recovery, parts.signals
    source, waker, vouching = parts.source, parts.waker, parts.vouching
    assert source is not None and waker is not None and vouching is not None
    metrics.start_time.set(clock.now())
    # Imports and parts are built: out of the collector's way before the fleet replays.
    gcpolicy.settle(enabled=settings.reconcile.gc_freeze)
    for outcome in ("ok", "error"):
        metrics.reconciles.labels(outcome)
    if settings.platform.kind == "none":
        log.warning("platform: none gives no second witness: a retire rests on the node's "
                    "facts alone" + ("" if trust.facts == "require_signed" else
                                     ", and unsigned facts are accepted (trust.facts)"))
    if signal_source is None and any(p.signals for p in policies.current.pools):
        log.warning("pools define Prometheus signals but no prometheus: section is set; "
                    "they stay unavailable (on_error applies)")
    api = ApiServer(reconciler, metrics, token=read_token(settings.http.token_file),
                    max_body=settings.http.max_body,
                    max_connections=settings.http.max_connections,
                    read_timeout=settings.http.read_timeout,
                    plan_cache=settings.http.plan_cache,
                    stale_loop_after=settings.reconcile.hung_after,
                    leader=lambda: leadership.is_leader,
                    extra_status=lambda: StatusExtrasModel(
                        leadership=LeadershipModel(holder=leadership.holder,
                                                   token=leadership.token,
                                                   terms=leadership.terms,
                                                   journal=journal.kind),
                        operations={kind: OperationsModel.model_validate(ops)
                                    for kind, ops in executor.in_flight.items()},
                        recoveries=RecoveriesModel(performed=recovery.runs,
                                                   incomplete=recovery.incomplete),
                        untrusted=UntrustedModel.model_validate(untrusted(
                            fleet, reconciler.last_snapshot, now=clock.now()))))
    reconciler.heartbeat_every = min(HEARTBEAT, notifier.watchdog_interval or HEARTBEAT)
    reconciler.on_heartbeat.append(notifier.watchdog)

    ready = False

    def after_reconcile(plan: Plan) -> None:
        nonlocal ready
        summary = fleet_summary(plan)
        count_untrusted(metrics, reconciler.last_snapshot)
        if not ready and fleet.source_up:
            ready = True
            notifier.ready(summary)
            log.info("ready", status=summary)
        else:
            notifier.status(summary)

    reconciler.on_reconciled.append(after_reconcile)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    watcher = PolicyWatcher([settings.policies_dir, settings.providers_file],
                            on_change=lambda: reload("policy files changed"),
                            interval=settings.policy_poll or HEARTBEAT)

    reloads: set[asyncio.Task[None]] = set()

    def reload(why: str) -> None:
        """Reload in the background: parsing runs in a thread, the loop keeps serving."""
        task = asyncio.ensure_future(reload_now(why))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    async def reload_now(why: str) -> None:
        if ready:
            notifier.reloading()
        ok = await policies.reload_async()
        watcher.mark_loaded()
        reconciler.wake(why)
        status = ("policies reloaded" if ok
                  else f"policy reload refused, last good policies kept: {policies.problems[0]}")
        if ready:
            notifier.send(ready="1", status=status)
        else:
            notifier.status(status)

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: reload("SIGHUP"))

    async def reconcile(stop: asyncio.Event) -> None:
        # Waiting for the first facts is the loop's job too: it beats while it waits.
        while not (source.caught_up.is_set() or stop.is_set()):
            waiting = {asyncio.ensure_future(source.caught_up.wait()),
                       asyncio.ensure_future(stop.wait())}
            _, pending = await asyncio.wait(waiting, timeout=reconciler.heartbeat_every,
                                            return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            reconciler.beat()
        if not stop.is_set():
            settled = gcpolicy.settle(enabled=settings.reconcile.gc_freeze)
            if settled is not None:
                log.info("gc settled", frozen=settled.frozen, thresholds=settled.thresholds)
            await lead(reconciler=reconciler, leadership=leadership, recovery=recovery,
                       caught_up=source.caught_up.wait, stop=stop)

    jobs: dict[str, TaskFactory] = {"facts": source.run, "edges": waker.run,
                                    "reconcile": reconcile, "leadership": leadership.run,
                                    "vouching": vouching.run,
                                    **(tasks or {})}
    if settings.policy_poll > 0:
        jobs["policy-watch"] = watcher.run
    if signal_source is not None:
        jobs["signals"] = signal_source.run

    await api.start(settings.http.host, settings.http.port)
    log.info("started", http=f"{settings.http.host}:{settings.http.port}",
             mqtt=f"{settings.mqtt.host}:{settings.mqtt.port}",
             pools=[p.name for p in policies.current.pools])
    try:
        await supervise(jobs, stop)
    finally:
        notifier.stopping()
        for task in list(reloads):
            task.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await api.stop()
        await executor.close()
        await platform.close()
        for provider in providers.values():
            await provider.close()
        await leadership.release()
        await journal.close()
        log.info("stopped")
    return 0
