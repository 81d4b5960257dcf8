"""Recovery: make the journal, the providers' listings and the live facts agree again.

Runs when an instance becomes leader (at start, or after a failover), once the fact
source has caught up, before the first reconcile; then again every ``sweep_every`` (and
sooner while a provider's listing failed), between reconciles, never concurrently with
one. The three sources and what it does with them:

* **journal**: the operations not yet done and the machines we own;
* **provider listings**: ``list_owned()``, the machines carrying gearshift's tag;
  machines without our tag are never listed, so never touched;
* **facts**: which nodes publish fresh facts (healthy) and how many active gears they hold.

Unfinished creates: ``requested`` and the machine is listed (found by its key, the op
id): adopt it; not listed: ask again *with the same key*, which providers treat
idempotently, so there is never a second machine (unless this process's own create call
is still running in the background: then it is left to finish). ``created`` and listed: keep waiting
for facts (the provisioning timeout still applies); no longer listed: it was destroyed,
close the op (never re-create: that would be a duplicate). ``abandoning``: the
executor finishes destroying it.

Unfinished drains: ``deactivating``/``moving``: deactivate again (idempotent) so the node
surely takes no new gears, and stamp the op, so a retire needs facts newer than that;
``cancelling``: reactivate and close; ``removing``: the planner retires the node once
fresh facts show it empty (never reactivated: it may be out of its district already);
``retiring``: destroy the machine again and close; in every phase a machine no longer listed is
gone: forget it (and its retained facts) and close the op. A warm pool's machine
(``act.warm``): ``parking``: stop it (again) and mark it ``parked``; ``resuming``: start
it (again); ``removing`` with no fresh facts (a parked machine being destroyed, or a node
that died after its last checks): remove it from its district, destroy it, close.

Machines we own that are no longer listed are forgotten. Machines listed with our tag
that the journal does not know (a create whose answer was lost, a journal restored
from backup): adopted when their node publishes fresh facts; retired once older than
``orphan_grace`` if they never did (only while facts are fresh, and never one whose
last facts show active gears). A machine's age is its ``created_at``; for providers that
do not report one, the time recovery first saw it, which is journaled (so a daemon
restarting in a loop does not restart the grace every time) and forgotten once the
machine is ours or no longer listed.

A listing that fails (or a provider whose breaker is open) leaves that provider's
operations and machines alone until the next try, which backs off from
``retry_incomplete`` (doubling, up to ``sweep_every``) so a provider that is down is
not hammered. Every run is counted in ``gearshift_recoveries_total`` and what it did in
``gearshift_recovery_actions_total``; runs that did something are recorded in the journal.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field

import structlog

from gearshift.act.platform.base import NodeRef, Platform
from gearshift.act.providers.base import CreateRequest
from gearshift.act.providers.guard import GuardedProvider
from gearshift.clock import Clock
from gearshift.errors import CapacityUnavailable, PlatformError, ProviderError, QuotaExceeded
from gearshift.metrics import Metrics
from gearshift.model import Machine
from gearshift.observe.fleet import FleetModel
from gearshift.policy.holder import PolicyHolder
from gearshift.reconcile.listing import Listing
from gearshift.records import Journal, Operation, Phase, RecoveryRecord

log = structlog.get_logger(component="gearshift.recovery")


@dataclass(frozen=True)
class RecoverySettings:
    orphan_grace: float = 900.0
    sweep_every: float = 600.0
    listing_lag: float = 30.0  # a create this recent may not be listed yet: don't close it
    retry_incomplete: float = 10.0  # first retry after an incomplete run; doubles up to sweep


# Counted, but not something recovery *did*: a sweep that finds only these is not recorded.
PASSIVE = frozenset({"create_resumed", "drain_resumed", "create_unconfirmed", "orphan_waiting",
                     "orphan_held"})


@dataclass
class RecoveryResult:
    actions: Counter[str] = field(default_factory=Counter)
    failed_listings: set[str] = field(default_factory=set)
    incomplete: bool = False

    def summary(self) -> dict[str, int]:
        return dict(sorted(self.actions.items()))

    @property
    def acted(self) -> bool:
        return any(n for action, n in self.actions.items() if action not in PASSIVE)


def _new_id() -> str:
    import uuid  # noqa: PLC0415

    return uuid.uuid4().hex


class Recovery:
    def __init__(self, *, journal: Journal, providers: Mapping[str, GuardedProvider],
                 platform: Platform, fleet: FleetModel, policies: PolicyHolder, clock: Clock,
                 metrics: Metrics | None = None, settings: RecoverySettings | None = None,
                 holder: str = "", new_id: Callable[[], str] = _new_id,
                 forget: Callable[[str], Awaitable[None]] | None = None,
                 creating: Callable[[], Collection[str]] = frozenset) -> None:
        self.journal = journal
        self.providers = providers
        self.platform = platform
        self.fleet = fleet
        self.policies = policies
        self.clock = clock
        self.metrics = metrics
        self.settings = settings or RecoverySettings()
        self.holder = holder
        self.new_id = new_id
        self.forget = forget
        self.creating = creating  # op ids whose create call this process is still making
        self.last_run: float | None = None
        self.incomplete = False
        self.runs = 0
        self._thorough = True
        self._retry_after = self.settings.retry_incomplete
        self._retry_wait = self.settings.retry_incomplete

    # -- when -------------------------------------------------------------------------
    async def maybe_sweep(self) -> RecoveryResult | None:
        """Run again when due (every ``sweep_every``, or at once after an incomplete run)."""
        now = self.clock.now()
        wait = self._retry_wait if self.incomplete else self.settings.sweep_every
        due = self.last_run is None or now - self.last_run >= wait
        if not due:
            return None
        return await self.run(reason="sweep" if self.last_run is not None else "start")

    # -- what -------------------------------------------------------------------------
    async def run(self, *, reason: str = "start") -> RecoveryResult:
        now = self.clock.now()
        result = RecoveryResult()
        listings: dict[str, Listing] = {}
        for name, provider in self.providers.items():
            if provider.open_until is not None and now < provider.open_until:
                result.failed_listings.add(name)  # its breaker is open: do not add load
                continue
            try:
                listings[name] = Listing(await provider.list_owned())
            except ProviderError as exc:
                result.failed_listings.add(name)
                log.warning("recovery: cannot list a provider's machines; its operations "
                            "wait for the next try", provider=name, error=exc.kind)
        ops = await self.journal.open_operations()
        owned = await self.journal.machines()
        self._thorough = reason == "start"
        for op in ops:
            await self._operation(op, listings, owned, result, now)
        await self._owned(owned, ops, listings, result)
        await self._orphans(await self.journal.machines(), ops, listings, result, now)
        result.incomplete = result.incomplete or bool(result.failed_listings)
        self.incomplete = result.incomplete
        # Back off while runs stay incomplete (a provider down must not be hammered).
        if result.incomplete:
            self._retry_wait = self._retry_after
            self._retry_after = min(self._retry_after * 2, self.settings.sweep_every)
        else:
            self._retry_after = self.settings.retry_incomplete
            self._retry_wait = self.settings.retry_incomplete
        self.last_run = now
        self.runs += 1
        outcome = "incomplete" if result.incomplete else "complete"
        if self.metrics is not None:
            self.metrics.recoveries.labels(reason, outcome).inc()
            for action, count in result.actions.items():
                self.metrics.recovery_actions.labels(action).inc(count)
        if reason == "start" or result.acted:
            await self.journal.record_recovery(RecoveryRecord(
                at=now, holder=self.holder, summary={**result.summary(),
                                                     "open_operations": len(ops)}))
        log_method = log.info if reason == "start" or result.acted else log.debug
        log_method("recovery done", reason=reason, outcome=outcome,
                   open_operations=len(ops), failed_listings=sorted(result.failed_listings),
                   **result.summary())
        return result

    async def _gone(self, identity: str) -> None:
        await self.journal.release(identity)
        if self.forget is not None:
            await self.forget(identity)

    async def _operation(self, op: Operation, listings: Mapping[str, Listing],
                         owned: Mapping[str, Machine], result: RecoveryResult,
                         now: float) -> None:
        provider_name = op.provider or ""
        if provider_name not in listings:
            if provider_name not in self.providers:
                log.warning("recovery: an open operation names a provider that is no longer "
                            "configured; leaving it", op=op.op_id, provider=provider_name)
            result.incomplete = True
            return
        machines = listings[provider_name]
        if op.kind == "create":
            await self._create(op, machines.find(key=op.op_id, name=op.identity),
                               result, now)
        else:
            await self._drain(op, machines.find(machine_id=op.machine_id,
                                                  name=op.identity), result, owned)

    async def _create(self, op: Operation, machine: Machine | None, result: RecoveryResult,
                      now: float) -> None:
        if op.phase == Phase.REQUESTED:
            if machine is None and op.op_id in self.creating():
                result.actions["create_in_progress"] += 1  # our own call is still running
                return
            if machine is None:
                machine = await self._reissue(op, result)
                if machine is None:
                    return
                result.actions["create_reissued"] += 1
            else:
                result.actions["create_adopted"] += 1
            await self.journal.adopt(machine)
            await self.journal.advance(op.op_id, phase=Phase.CREATED, at=self.clock.now(),
                                       machine_id=machine.machine_id, identity=machine.name)
            return
        if machine is not None:
            if op.phase == Phase.CREATED:
                await self.journal.adopt(machine)
            result.actions["create_resumed"] += 1
            return
        if op.phase == Phase.CREATED and now - op.updated_at < self.settings.listing_lag:
            result.actions["create_unconfirmed"] += 1  # maybe not listed yet; timeout covers it
            return
        await self._gone(op.identity)
        await self.journal.advance(op.op_id, phase=Phase.FAILED, at=self.clock.now(),
                                   error="machine no longer exists")
        result.actions["create_closed"] += 1

    async def _reissue(self, op: Operation, result: RecoveryResult) -> Machine | None:
        """Ask for the machine again with the same key: the provider returns the one it made."""
        provider = self.providers[op.provider or ""]
        providers_file = self.policies.current.providers
        blueprint = providers_file.blueprint(op.blueprint or "") if providers_file else None
        if blueprint is None:
            await self.journal.advance(op.op_id, phase=Phase.FAILED, at=self.clock.now(),
                                       error=f"blueprint {op.blueprint!r} no longer configured")
            result.actions["create_closed"] += 1
            return None
        try:
            return await provider.create(CreateRequest(key=op.op_id, name=op.identity,
                                                       pool=op.pool, blueprint=blueprint))
        except (QuotaExceeded, CapacityUnavailable) as exc:
            await self.journal.advance(op.op_id, phase=Phase.FAILED, at=self.clock.now(),
                                       error=f"{exc.kind}: {exc.message}")
            result.actions["create_closed"] += 1
        except ProviderError as exc:
            log.warning("recovery: re-asking for a machine failed; trying again later",
                        op=op.op_id, provider=op.provider, error=exc.kind)
            result.incomplete = True
        return None

    async def _drain(self, op: Operation, machine: Machine | None, result: RecoveryResult,
                     owned: Mapping[str, Machine]) -> None:
        if machine is None:
            await self._gone(op.identity)
            finished = op.phase in (Phase.REMOVING, Phase.RETIRING)
            await self.journal.advance(op.op_id,
                                       phase=Phase.RETIRED if finished else Phase.CANCELLED,
                                       at=self.clock.now(),
                                       error=None if finished else "machine no longer exists")
            result.actions["drain_finished" if finished else "drain_closed"] += 1
            return
        facts = self.fleet.facts(op.identity)
        node = NodeRef(op.identity, facts.district_uuid if facts is not None else None)
        try:
            if op.phase == Phase.DEACTIVATING or (op.phase == Phase.MOVING and self._thorough):
                # After a restart we cannot know whether a cancel reactivated it: make sure.
                await self.platform.deactivate(node)
                await self.journal.advance(op.op_id, phase=Phase.MOVING, at=self.clock.now())
                result.actions["drain_resumed"] += 1
            elif op.phase == Phase.CANCELLING:
                await self.platform.activate(node)
                await self.journal.advance(op.op_id, phase=Phase.CANCELLED, at=self.clock.now())
                result.actions["drain_cancelled"] += 1
            elif op.phase == Phase.RETIRING:
                # Out of its district already (or an orphan never in it): destroy again.
                # Never wait for facts: a machine half-destroyed publishes none.
                await self.providers[op.provider or ""].destroy(machine.machine_id)
                await self._gone(op.identity)
                await self.journal.advance(op.op_id, phase=Phase.RETIRED, at=self.clock.now())
                result.actions["orphan_retired" if op.identity not in owned
                               else "drain_finished"] += 1
            elif op.phase == Phase.PARKING:  # its stop may not have run: stop it (idempotent)
                await self.providers[op.provider or ""].stop(machine.machine_id)
                await self.journal.advance(op.op_id, phase=Phase.PARKED, at=self.clock.now())
                result.actions["parked"] += 1
            elif op.phase == Phase.RESUMING:  # its start may not have run: start it again
                await self.providers[op.provider or ""].start(machine.machine_id)
                result.actions["resumed"] += 1
            elif op.phase == Phase.REMOVING and not self.fleet.is_fresh(op.identity,
                                                                        self.clock.now()):
                # Checked empty before ``removing`` was journaled, and silent since (a parked
                # machine, or one that died): no fresh facts will come to finish it by.
                await self.platform.remove(node)
                await self.journal.advance(op.op_id, phase=Phase.RETIRING, at=self.clock.now())
                await self.providers[op.provider or ""].destroy(machine.machine_id)
                await self._gone(op.identity)
                await self.journal.advance(op.op_id, phase=Phase.RETIRED, at=self.clock.now())
                result.actions["drain_finished"] += 1
            else:
                result.actions["drain_resumed"] += 1  # the planner retires it once it is empty
        except (PlatformError, ProviderError) as exc:
            log.warning("recovery: resuming a drain failed; trying again later",
                        node=op.identity, phase=op.phase, error=str(exc))
            result.incomplete = True

    async def _owned(self, owned: Mapping[str, Machine], ops: list[Operation],
                     listings: Mapping[str, Listing], result: RecoveryResult) -> None:
        """Machines we own that their provider no longer lists are gone: forget them."""
        busy = {o.identity for o in ops}
        for identity, machine in owned.items():
            if identity in busy or machine.provider not in listings:
                continue
            if listings[machine.provider].find(machine_id=machine.machine_id) is None:
                log.warning("recovery: an owned machine is gone; forgetting it", node=identity,
                            provider=machine.provider, machine=machine.machine_id)
                await self._gone(identity)
                result.actions["machine_released"] += 1

    async def _orphans(self, owned: Mapping[str, Machine], ops: list[Operation],
                       listings: Mapping[str, Listing], result: RecoveryResult,
                       now: float) -> None:
        """Machines with our tag that the journal does not know: adopt or retire them."""
        known = {(m.provider, m.machine_id) for m in owned.values()}
        busy = {o.identity for o in ops} | {o.op_id for o in ops}
        seen = await self.journal.first_seen()
        for provider_name, machines in listings.items():
            for machine in machines:
                ident = (provider_name, machine.machine_id)
                if ident in known or machine.name in busy or (machine.key or "") in busy:
                    continue
                if self.fleet.is_fresh(machine.name, now):
                    log.info("recovery: adopting a healthy machine of ours the journal did not "
                             "know", node=machine.name, provider=provider_name)
                    await self.journal.adopt(machine)
                    known.add(ident)
                    result.actions["orphan_adopted"] += 1
                    continue
                facts = self.fleet.facts(machine.name)
                if facts is not None and facts.gears.active > 0:
                    result.actions["orphan_held"] += 1  # silent but holding gears: never retire
                    continue
                born = machine.created_at
                if born is None:
                    born = seen.get(ident)
                if born is None:
                    born = seen[ident] = now
                    await self.journal.see_first(provider_name, machine.machine_id, at=now)
                if now - born < self.settings.orphan_grace or not self.fleet.source_up:
                    result.actions["orphan_waiting"] += 1
                    continue
                await self._retire_orphan(machine, result, now - born)
        if seen:  # (usually empty: no set of every listed machine to build then)
            live = {(p, m.machine_id) for p, ms in listings.items() for m in ms}
            await self.journal.forget_seen([ident for ident in seen if ident in known or (
                ident[0] in listings and ident not in live)])

    async def _retire_orphan(self, machine: Machine, result: RecoveryResult, age: float) -> None:
        now = self.clock.now()
        op = Operation(op_id=self.new_id(), kind="drain", pool=machine.pool or "",
                       identity=machine.name, phase=Phase.RETIRING, started_at=now, updated_at=now,
                       provider=machine.provider, machine_id=machine.machine_id, deadline=now,
                       reason=f"ours (tagged) but never registered in {age:.0f}s: retiring")
        await self.journal.begin(op)
        log.warning("recovery: retiring a machine of ours that never registered",
                    node=machine.name, provider=machine.provider, age=round(age))
        try:
            await self.providers[machine.provider].destroy(machine.machine_id)
        except ProviderError as exc:
            log.warning("recovery: retiring an orphan failed; trying again later",
                        node=machine.name, error=exc.kind)
            result.incomplete = True
            return
        await self._gone(machine.name)
        await self.journal.advance(op.op_id, phase=Phase.RETIRED, at=self.clock.now())
        result.actions["orphan_retired"] += 1
