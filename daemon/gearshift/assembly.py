"""One composition root: the parts ``run``, ``demo`` and ``simulate`` all act through.

``gearshift run`` (``daemon.serve``), ``gearshift demo`` and ``gearshift simulate`` used to
wire the fleet model, executor, reconciler, recovery and leadership each on their own, so
what ``simulate`` proved was not quite what ``run`` does (no recovery, no leader lease).
``assemble`` builds them once, from the settings plus the few things that really differ
between the three: the clock, the providers and platform, the journal, and how facts
arrive (a fact source factory, or none when a simulation feeds the fleet model itself).
Every part gets its collaborators when it is built; cycles (the fact source forgets a
node the executor retired; the executor is built before the source) are closed by
callbacks that look their target up when called.

What stays with each caller: running the parts (``serve`` supervises tasks and ``lead``s,
``demo`` does the same around a broker, ``simulate`` steps a manual clock and calls
``Assembly.take_office`` then ``reconcile_once``), and daemon-only extras (sd_notify,
signals, the policy watcher, the HTTP API's status extras).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Protocol

from gearshift.act.executor import Executor, ExecutorSettings
from gearshift.act.platform.base import Platform
from gearshift.act.providers.guard import GuardedProvider
from gearshift.clock import Clock
from gearshift.metrics import Metrics
from gearshift.observe.fleet import FleetModel
from gearshift.observe.mcollective.source import McoFactSource
from gearshift.observe.mqtt import MqttFactSource
from gearshift.observe.prometheus import PrometheusSignalSource
from gearshift.observe.requests import RequestBook
from gearshift.plan import Plan
from gearshift.policy.holder import PolicyHolder
from gearshift.predict.forecaster import Forecaster
from gearshift.reconcile.leader import Leadership
from gearshift.reconcile.reconciler import Reconciler
from gearshift.reconcile.recovery import Recovery, RecoverySettings
from gearshift.reconcile.retention import JournalPruner
from gearshift.reconcile.trust import Vouching
from gearshift.reconcile.wakeup import EdgeWaker
from gearshift.records import Journal
from gearshift.settings import OperationsSettings, Settings


class FactSource(Protocol):
    """What the assembly needs of a fact source (MQTT, MCollective)."""

    caught_up: asyncio.Event

    async def forget_node(self, identity: str) -> None: ...

    async def run(self, stop: asyncio.Event) -> None: ...


@dataclass(frozen=True)
class FactWiring:
    """What a fact source is handed when it is built."""

    fleet: FleetModel
    requests: RequestBook
    on_facts: Callable[[], None]
    pool_names: Callable[[], Collection[str]]


FactSourceFactory = Callable[[FactWiring], FactSource]


def executor_settings(ops: OperationsSettings) -> ExecutorSettings:
    return ExecutorSettings(move_batch=ops.move_batch, create_wait=ops.create_wait,
                            provisioning_timeout_factor=ops.provisioning_timeout_factor,
                            min_provisioning_timeout=ops.min_provisioning_timeout)


def settings_fact_source(settings: Settings, *, metrics: Metrics,
                         clock: Clock) -> FactSourceFactory:
    """The fact source ``settings`` ask for: MCollective when enabled, MQTT otherwise."""
    trust = settings.trust

    def build(wiring: FactWiring) -> FactSource:
        if not settings.mcollective.enabled:
            return MqttFactSource(settings.mqtt, wiring.fleet, metrics=metrics, clock=clock,
                                  trust=trust, keyring=trust.keyring(),
                                  requests=wiring.requests, on_facts=wiring.on_facts,
                                  pool_names=wiring.pool_names)
        mco = McoFactSource(settings.mcollective, wiring.fleet, metrics=metrics, clock=clock,
                            max_gears=trust.max_gears, on_facts=wiring.on_facts)
        mco.requests = wiring.requests  # McoFactSource takes these two as attributes only
        mco.pool_names = wiring.pool_names
        return mco

    return build


@dataclass(frozen=True)
class Assembly:
    """The wired parts; ``source`` and ``waker`` are None when no fact source is used."""

    fleet: FleetModel
    source: FactSource | None
    waker: EdgeWaker | None
    executor: Executor
    reconciler: Reconciler
    recovery: Recovery
    leadership: Leadership
    pruner: JournalPruner
    vouching: Vouching | None
    signals: PrometheusSignalSource | None
    forecaster: Forecaster

    async def take_office(self) -> bool:
        """Take the lease, recover and read back the journal, as ``lead`` does on election.

        For callers that step the reconciler themselves (``simulate``); the daemon and the
        demo go through ``lead``. False when the lease is held by someone else. A caller that
        had to write the journal first (seeding a simulated fleet) takes the lease before.
        """
        if not self.leadership.is_leader and not await self.leadership.try_acquire():
            return False
        await self.recovery.run(reason="start")
        await self.reconciler.restore()
        return True


def assemble(settings: Settings, *, policies: PolicyHolder,
             providers: Mapping[str, GuardedProvider], platform: Platform, journal: Journal,
             clock: Clock, metrics: Metrics | None = None,
             facts: FactSourceFactory | None = None, vouch: bool = True,
             new_id: Callable[[], str] | None = None) -> Assembly:
    """Wire the parts. ``facts`` builds the fact source (None: the caller feeds ``fleet``);
    ``vouch`` asks the platform who is a district member (the daemon); ``new_id`` makes
    operation ids (a seeded simulation wants them reproducible)."""
    for guarded in providers.values():
        guarded.provider.keep_state_in(journal)  # bare metal's allocations live there
    trust = settings.trust
    fleet = FleetModel(stale_after=settings.reconcile.stale_after,
                       forget_after=trust.forget_after, max_nodes=trust.max_nodes,
                       max_unvouched=trust.max_unvouched)
    requests = RequestBook()
    source: FactSource | None = None
    waker: EdgeWaker | None = None
    reconciler: Reconciler | None = None

    def wake(why: str) -> None:
        if reconciler is not None:
            reconciler.wake(why)

    def poke() -> None:
        if waker is not None:
            waker.poke()

    async def forget(identity: str) -> None:
        if source is not None:
            await source.forget_node(identity)
        else:
            fleet.forget(identity)

    if facts is not None:
        source = facts(FactWiring(fleet=fleet, requests=requests, on_facts=poke,
                                  pool_names=lambda: {p.name for p in policies.current.pools}))
    signals = (PrometheusSignalSource(settings.prometheus, lambda: policies.current, clock=clock,
                                      metrics=metrics, on_edge=wake)
               if settings.prometheus is not None else None)
    executor = Executor(providers=providers, platform=platform, journal=journal, clock=clock,
                        metrics=metrics, on_retired=forget,
                        on_disputed=lambda identity, why: fleet.dispute(
                            identity, why, until=clock.now() + trust.dispute_hold),
                        settings=executor_settings(settings.operations),
                        **({"new_id": new_id} if new_id is not None else {}))
    reconciler = Reconciler(fleet=fleet, policies=policies, executor=executor, journal=journal,
                            providers=providers, clock=clock,
                            interval=settings.reconcile.interval, metrics=metrics,
                            requests=requests, signals=signals.signals if signals else None)
    if source is not None:
        waker = EdgeWaker(reconciler, debounce=settings.reconcile.debounce)
    leadership = Leadership(journal, holder=settings.journal.instance,
                            ttl=settings.journal.lease_ttl, renew=settings.journal.lease_renew,
                            poll=settings.journal.lease_poll, metrics=metrics)
    recovery = Recovery(journal=journal, providers=providers, platform=platform, fleet=fleet,
                        policies=policies, clock=clock, metrics=metrics,
                        holder=leadership.holder, forget=forget,
                        creating=lambda: executor.creating,
                        settings=RecoverySettings(orphan_grace=settings.operations.orphan_grace,
                                                  sweep_every=settings.operations.orphan_sweep))
    pruner = JournalPruner(journal, clock=clock, keep=settings.journal.keep_finished,
                           metrics=metrics)
    vouching = (Vouching(fleet=fleet, platform=platform, journal=journal, clock=clock,
                         settings=trust, metrics=metrics) if vouch else None)
    hooks: list[Callable[[], Awaitable[object]]] = [recovery.maybe_sweep, pruner.maybe_prune]
    if vouching is not None:
        hooks.append(vouching.expire)
    reconciler.before.extend(hooks)
    forecaster = wire_forecaster(reconciler, journal=journal, policies=policies, clock=clock)
    return Assembly(fleet=fleet, source=source, waker=waker, executor=executor,
                    reconciler=reconciler, recovery=recovery, leadership=leadership,
                    pruner=pruner, vouching=vouching, signals=signals, forecaster=forecaster)


def wire_forecaster(reconciler: Reconciler, *, journal: Journal, policies: PolicyHolder,
                    clock: Clock) -> Forecaster:
    """Predictive scaling: history read back on taking office, sampled after every
    reconcile, journaled and refitted once a minute before one, handed to the planner."""
    forecaster = Forecaster(journal, policies=lambda: policies.current, clock=clock)
    reconciler.on_restore.append(forecaster.load)
    reconciler.before.append(forecaster.tick)

    def observe(plan: Plan) -> None:
        forecaster.observe(plan.at, plan.pools)

    reconciler.on_reconciled.append(observe)
    reconciler.forecasts = forecaster.forecasts
    return forecaster
