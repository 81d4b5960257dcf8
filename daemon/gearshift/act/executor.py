"""Carry out a plan, and move in-flight operations forward, journaling before every step.

* ``ScaleOut``: one journaled create per node (its op id is the provider's idempotency
  key), run concurrently; a quota or capacity error is reported back so the reconciler can
  re-plan at once and spill the rest to the next placement.
* ``Drain``: journal (with its cause, and the pool a preemption frees quota for, so a
  restart knows it), deactivate the node in its district, then (in ``progress``) move its
  gears away in bounded batches until it is empty.
* ``CancelDrain``: reactivate the node, close the drain.
* ``Retire``: checked once more against the latest facts (never a node with active gears,
  never a drained node whose facts still show it active in its district) and against a
  second witness (``act.witness``: the platform's gear listing, the provider's machine
  name; a disagreement cancels the drain and holds the node), removed from
  its district, machine destroyed, forgotten. A retire that failed half-way resumes at
  the step it stopped at.
* ``Abandon`` (planned by ``decide.in_flight``): a node that never came up; its machine
  destroyed, its provider backed off, its create closed as failed.
* ``DestroyAgain`` (planned by ``decide.in_flight``): a retired node whose destroy failed.
* ``Park``, ``Resume``, ``RetireParked`` (``act.warm``): a placement's warm pool.
* ``progress``: registers booting nodes when their first fresh facts arrive (measuring
  time-to-ready; a node in no district joins its blueprint's district first), pushes gear
  moves along (never on a node whose facts are not fresh), finishes cancellations.

Actions are carried out one by one, each on its own: one that fails (whatever the error,
short of the journal itself failing) is reported and the others still run.
A create whose outcome is unknown (a timeout, a dropped connection) stays ``requested``:
recovery asks again with the same key, so the machine is never made twice.

Every step is journaled before it is taken (``store.journal`` lists the phases), so a
restart at any instant can repeat the step it was about to take; a retire is refused on
facts older than the node's deactivation, which could miss gears placed just before.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import assert_never

import structlog

from gearshift.act.platform.base import NodeRef, Platform
from gearshift.act.progress import Event, ExecutionReport, Progress
from gearshift.act.providers.base import CreateRequest
from gearshift.act.providers.guard import GuardedProvider
from gearshift.act.retire import abandon, destroy_again, retire
from gearshift.act.warm import fill_warm_pool, park, resume, retire_parked
from gearshift.clock import Clock
from gearshift.errors import (
    CapacityUnavailable,
    CircuitOpen,
    JournalError,
    PlatformError,
    ProviderError,
    QuotaExceeded,
    TransientError,
)
from gearshift.metrics import Metrics
from gearshift.model import (
    Abandon,
    Action,
    CancelDrain,
    DestroyAgain,
    Drain,
    FleetSnapshot,
    Node,
    NodeState,
    Park,
    Resume,
    Retire,
    RetireParked,
    ScaleOut,
)
from gearshift.plan import Plan
from gearshift.policy.schema import PolicySet
from gearshift.records import Journal, Operation, Phase

log = structlog.get_logger(component="gearshift.act")


@dataclass(frozen=True)
class ExecutorSettings:
    create_concurrency: int = 10
    # A reconcile waits this long for its creates; slower ones (a vCenter clone can take
    # many minutes) go on in the background, journaled as requested, counted as booting.
    create_wait: float = 60.0
    move_batch: int = 10  # gears moved per drain per reconcile
    provisioning_timeout_factor: float = 3.0  # x time-to-ready before a silent node is retired
    min_provisioning_timeout: float = 120.0


def _new_id() -> str:
    return uuid.uuid4().hex


class Executor:
    def __init__(self, *, providers: Mapping[str, GuardedProvider], platform: Platform,
                 journal: Journal, clock: Clock, metrics: Metrics | None = None,
                 settings: ExecutorSettings | None = None,
                 new_id: Callable[[], str] = _new_id,
                 on_retired: Callable[[str], Awaitable[None]] | None = None,
                 on_disputed: Callable[[str, str], None] | None = None) -> None:
        self.providers = providers
        self.platform = platform
        self.journal = journal
        self.clock = clock
        self.metrics = metrics
        self.settings = settings or ExecutorSettings()
        self.new_id = new_id
        self.on_retired = on_retired
        self.on_disputed = on_disputed  # (identity, why): the witnesses contradicted its facts
        self.progress_view = Progress(metrics=metrics)  # events and in-flight, for the API
        self.creating: set[str] = set()  # op ids whose provider call is running right now
        self._background: set[asyncio.Task[None]] = set()

    # -- bookkeeping ------------------------------------------------------------------
    def _event(self, report: ExecutionReport, *, kind: str, pool: str, target: str,
               outcome: str, reason: str, error: str | None = None,
               provider: str = "") -> None:
        event = Event(at=self.clock.now(), kind=kind, pool=pool, target=target,
                      outcome=outcome, reason=reason, error=error)
        report.events.append(event)
        self.progress_view.record(event, provider=provider)

    @property
    def events(self) -> deque[Event]:
        return self.progress_view.events

    @property
    def counts(self) -> Counter[tuple[str, str]]:
        return self.progress_view.counts

    @property
    def in_flight(self) -> dict[str, dict[str, object]]:
        return self.progress_view.in_flight

    # -- plan -------------------------------------------------------------------------
    async def execute(self, plan: Plan, snapshot: FleetSnapshot,
                      policies: PolicySet) -> ExecutionReport:
        report = ExecutionReport()
        for action in plan.actions:
            try:
                await self._execute_one(action, snapshot, policies, report)
            except JournalError:
                raise  # nothing can be done safely without the journal
            except Exception as exc:  # one action's bug must not stop the others
                log.exception("action crashed", kind=action.kind, pool=action.pool)
                self._event(report, kind=action.kind, pool=action.pool,
                            target=getattr(action, "identity", getattr(action, "provider", "")),
                            outcome="failed", reason=action.reason,
                            error=exc.__class__.__name__)
        return report

    async def _execute_one(self, action: Action, snapshot: FleetSnapshot, policies: PolicySet,
                           report: ExecutionReport) -> None:
        match action:
            case ScaleOut():
                await self._scale_out(action, policies, report)
            case Drain():
                await self._drain(action, snapshot, policies, report)
            case CancelDrain():
                await self._cancel_drain(action, snapshot, report)
            case Retire():
                await self._retire(action, snapshot, report)
            case Abandon():
                await abandon(self, action)
            case DestroyAgain():
                await destroy_again(self, action)
            case Park():
                await park(self, action, snapshot, report)
            case Resume():
                await resume(self, action, report)
            case RetireParked():
                await retire_parked(self, action, snapshot, report)
            case _:
                assert_never(action)

    async def _scale_out(self, action: ScaleOut, policies: PolicySet,
                         report: ExecutionReport) -> None:
        provider = self.providers.get(action.provider)
        blueprint = policies.providers.blueprint(action.blueprint) if policies.providers else None
        if provider is None or blueprint is None:
            self._event(report, kind=action.kind, pool=action.pool, target=action.provider,
                        outcome="refused", reason=action.reason,
                        error=f"no provider {action.provider!r} or blueprint {action.blueprint!r}")
            return
        limit = asyncio.Semaphore(self.settings.create_concurrency)

        async def create_one() -> None:
            op_id = self.new_id()
            name = f"{action.pool}-{action.provider}-{op_id[-8:]}"
            now = self.clock.now()
            await self.journal.begin(Operation(
                op_id=op_id, kind="create", pool=action.pool, identity=name, phase=Phase.REQUESTED,
                started_at=now, updated_at=now, provider=action.provider,
                blueprint=blueprint.name, max_active_gears=blueprint.expected_max_active_gears,
                reason=action.reason, cause="warm" if action.warm else None))
            self.creating.add(op_id)
            try:
                async with limit:
                    machine = await provider.create(CreateRequest(
                        key=op_id, name=name, pool=action.pool, blueprint=blueprint))
            except ProviderError as exc:
                if isinstance(exc, TransientError) and not isinstance(exc, CircuitOpen):
                    # Timed out or cut off: the machine may exist. Keep the op requested;
                    # recovery asks again with the same key, never a second machine.
                    log.warning("create outcome unknown; recovery will ask again with the "
                                "same key", node=name, provider=action.provider,
                                error=exc.kind)
                else:
                    await self.journal.advance(op_id, phase=Phase.FAILED, at=self.clock.now(),
                                               error=f"{exc.kind}: {exc.message}")
                if isinstance(exc, QuotaExceeded | CapacityUnavailable):
                    report.spill = True
                self._event(report, kind=action.kind, pool=action.pool, target=name,
                            outcome="failed", reason=action.reason, error=exc.kind,
                            provider=action.provider)
                return
            finally:
                self.creating.discard(op_id)
            if machine.blueprint is None:  # what we asked for, if its listing does not say
                machine = replace(machine, blueprint=blueprint.name)
            await self.journal.adopt(machine)
            await self.journal.advance(op_id, phase=Phase.CREATED, at=self.clock.now(),
                                       machine_id=machine.machine_id, identity=machine.name)
            self._event(report, kind=action.kind, pool=action.pool, target=name, outcome="ok",
                        reason=action.reason, provider=action.provider)

        tasks = {asyncio.create_task(create_one()) for _ in range(action.count)}
        _, slow = await asyncio.wait(tasks, timeout=self.settings.create_wait)
        for task in tasks - slow:
            task.result()  # a journal error must not pass silently
        for task in slow:
            log.info("create still running; it goes on in the background", pool=action.pool,
                     provider=action.provider, waited=self.settings.create_wait)
            self._background.add(task)
            task.add_done_callback(self._create_finished)

    def _create_finished(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background create failed", error=repr(task.exception()))

    async def close(self) -> None:
        """Stop creates still running in the background; their ops stay ``requested``
        in the journal, so recovery asks again with the same key after a restart."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    async def _drain(self, action: Drain, snapshot: FleetSnapshot, policies: PolicySet,
                     report: ExecutionReport) -> None:
        node = snapshot.by_id.get(action.identity)
        policy = policies.pool(action.pool)
        if node is None or node.facts is None or node.machine is None or policy is None:
            self._event(report, kind=action.kind, pool=action.pool, target=action.identity,
                        outcome="refused", reason=action.reason, error="unknown or not ours")
            return
        now = self.clock.now()
        op_id = self.new_id()
        await self.journal.begin(Operation(
            op_id=op_id, kind="drain", pool=action.pool, identity=action.identity,
            phase=Phase.DEACTIVATING, started_at=now, updated_at=now,
            provider=node.machine.provider, machine_id=node.machine.machine_id,
            deadline=now + policy.scale_in.drain_timeout, reason=action.reason,
            cause=action.cause, preempted_by=action.preempted_by))
        try:
            await self.platform.deactivate(NodeRef(action.identity, node.facts.district_uuid))
        except PlatformError as exc:
            # It may have been deactivated all the same (the command ran, its answer was
            # lost): reactivate it before closing the drain (``progress`` does it).
            await self.journal.advance(op_id, phase=Phase.CANCELLING, at=self.clock.now(),
                                       error=str(exc))
            self._event(report, kind=action.kind, pool=action.pool, target=action.identity,
                        outcome="failed", reason=action.reason, error="platform")
            return
        await self.journal.advance(op_id, phase=Phase.MOVING, at=self.clock.now())
        self._event(report, kind=action.kind, pool=action.pool, target=action.identity,
                    outcome="ok", reason=action.reason, provider=node.machine.provider)

    async def _drain_op(self, identity: str) -> Operation | None:
        return next((o for o in await self.journal.open_operations()
                     if o.kind == "drain" and o.identity == identity), None)

    async def _cancel_drain(self, action: CancelDrain, snapshot: FleetSnapshot,
                            report: ExecutionReport) -> None:
        op = await self._drain_op(action.identity)
        node = snapshot.by_id.get(action.identity)
        district = node.facts.district_uuid if node is not None and node.facts else None
        if op is not None:
            if op.phase == Phase.RESUMING:  # a parked machine is back: how long it took
                provider = self.providers.get(op.provider or "")
                if provider is not None:
                    provider.note_time_to_resume(self.clock.now() - op.updated_at)
            # Journal the intent first: a restart finds "cancelling" and reactivates.
            op = await self.journal.advance(op.op_id, phase=Phase.CANCELLING, at=self.clock.now())
        try:
            await self.platform.activate(NodeRef(action.identity, district))
        except PlatformError as exc:
            self._event(report, kind=action.kind, pool=action.pool, target=action.identity,
                        outcome="failed", reason=action.reason, error=str(exc))
            return
        if op is not None:
            await self.journal.advance(op.op_id, phase=Phase.CANCELLED, at=self.clock.now())
        self._event(report, kind=action.kind, pool=action.pool, target=action.identity,
                    outcome="ok", reason=action.reason)

    async def _retire(self, action: Retire, snapshot: FleetSnapshot,
                      report: ExecutionReport) -> None:
        await retire(self, action, snapshot, report)

    async def _forget_retired(self, identity: str) -> None:
        """The machine is gone: forget it, and its retained facts, before closing the op."""
        await self.journal.release(identity)
        if self.on_retired is not None:
            await self.on_retired(identity)

    # -- in flight --------------------------------------------------------------------
    async def progress(self, snapshot: FleetSnapshot, is_fresh: Callable[[str], bool], *,
                       policies: PolicySet | None = None) -> None:
        """Move every open operation one step forward."""
        now = self.clock.now()
        nodes = snapshot.by_id
        for op in await self.journal.open_operations():
            if op.kind == "create" and op.phase == Phase.CREATED:
                await self._register(op, now, is_fresh, node=nodes.get(op.identity),
                                     policies=policies)
            elif op.kind == "drain" and op.phase == Phase.CANCELLING:
                node = nodes.get(op.identity)
                district = node.facts.district_uuid if node is not None and node.facts else None
                try:
                    await self.platform.activate(NodeRef(op.identity, district))
                except PlatformError as exc:
                    log.warning("reactivating a node failed", node=op.identity, error=str(exc))
                    continue
                await self.journal.advance(op.op_id, phase=Phase.CANCELLED, at=self.clock.now())
            elif op.kind == "drain" and op.phase == Phase.MOVING:
                node = nodes.get(op.identity)
                if (node is None or node.facts is None or node.state is NodeState.UNKNOWN
                        or node.facts.gears.total == 0):
                    continue  # a silent node cannot list its gears: do not wait on it
                try:
                    await self.platform.move_gears(NodeRef(op.identity, node.facts.district_uuid),
                                                   limit=self.settings.move_batch)
                except PlatformError as exc:
                    log.warning("gear moves failed", node=op.identity, error=str(exc))
        await self.record_operations(now)

    async def record_operations(self, now: float) -> None:
        """Export the operations in flight: by kind and phase, and the oldest by kind."""
        self.progress_view.record_operations(await self.journal.open_operations(), now)

    async def _join_district(self, op: Operation, node: Node | None,
                             policies: PolicySet | None) -> bool:
        """A new node in no district joins its blueprint's (if it names one).

        False until its facts show it in a district: until then it stays booting (pending),
        so the pool counts it, rather than as a node that takes no gears.
        """
        providers_file = policies.providers if policies is not None else None
        blueprint = providers_file.blueprint(op.blueprint or "") if providers_file else None
        if blueprint is None or not blueprint.district:
            return True
        district = node.facts.district_uuid if node is not None and node.facts else None
        if district and district.upper() != "NONE":
            return True
        try:
            await self.platform.add(NodeRef(op.identity, blueprint.district))
        except PlatformError as exc:
            log.warning("adding a new node to its district failed; trying again",
                        node=op.identity, district=blueprint.district, error=str(exc))
            return False
        log.info("new node added to its district; waiting for its facts to show it",
                 node=op.identity, district=blueprint.district)
        return False

    async def _register(self, op: Operation, now: float, is_fresh: Callable[[str], bool], *,
                        node: Node | None, policies: PolicySet | None) -> None:
        """A new node's first fresh facts: it is registered (and its time-to-ready noted).
        One that never comes up is the planner's to give up (``decide.in_flight``)."""
        if not (is_fresh(op.identity) and await self._join_district(op, node, policies)):
            return
        await self.journal.advance(op.op_id, phase=Phase.REGISTERED, at=now)
        provider = self.providers.get(op.provider or "")
        if provider is not None:
            provider.note_time_to_ready(now - op.started_at)
        log.info("node registered", node=op.identity, pool=op.pool, provider=op.provider,
                 time_to_ready=round(now - op.started_at, 1))
        if op.cause == "warm":
            await fill_warm_pool(self, op, node=node, policies=policies)
