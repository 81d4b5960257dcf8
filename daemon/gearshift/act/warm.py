"""Warm pools in action: filling one, parking a drained node's machine, resuming it,
destroying it.

* A machine made for a warm pool (a ``ScaleOut`` with ``warm``, its create journaled with
  cause ``warm``) is drained as soon as it registers (a drain with cause ``warm``:
  deactivated, any gear the broker placed in between moved away); the planner then parks
  it like any drained node.
* ``Park``: the same last checks as a retire (``act.retire.checked_empty``: fresh facts,
  no gears, facts newer than the deactivation, the second witness), then ``parking`` is
  journaled (with the node's blueprint and slots, which a resume needs) and the machine
  stopped; ``parked`` once the provider confirms. The node stays deactivated in its
  district. A stop that failed (or a restart in between) is tried again: ``stop`` is
  idempotent.
* ``Resume``: ``resuming`` is journaled, then the machine started (idempotent too); a
  start the provider refuses leaves it ``parked``. The node counts as booting until it
  publishes facts; the planner then reactivates it (a ``CancelDrain``).
* ``RetireParked``: ``removing`` journaled, the node removed from its district, then
  ``retiring`` and the machine destroyed. Refused if the node publishes facts newer than
  its parking that show active gears, or show it taking gears in its district: someone
  started it behind gearshift's back, and it is no longer an empty, stopped machine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from gearshift.act.platform.base import NodeRef
from gearshift.act.progress import ExecutionReport
from gearshift.act.retire import checked_empty
from gearshift.errors import PlatformError, ProviderError
from gearshift.model import FleetSnapshot, Node, Park, Resume, RetireParked
from gearshift.policy.schema import PolicySet
from gearshift.records import Operation, Phase

if TYPE_CHECKING:
    from gearshift.act.executor import Executor

log = structlog.get_logger(component="gearshift.act")


# A warm-pool machine's drain deadline when its pool's policy is gone (seconds).
DEFAULT_DRAIN_TIMEOUT = 1200.0


async def fill_warm_pool(ex: Executor, create: Operation, *, node: Node | None,
                         policies: PolicySet | None) -> None:
    """A machine made for a warm pool has registered: drain it at once (then it is parked)."""
    policy = policies.pool(create.pool) if policies is not None else None
    timeout = policy.scale_in.drain_timeout if policy is not None else DEFAULT_DRAIN_TIMEOUT
    now = ex.clock.now()
    op = Operation(op_id=ex.new_id(), kind="drain", pool=create.pool, identity=create.identity,
                   phase=Phase.DEACTIVATING, started_at=now, updated_at=now,
                   provider=create.provider, machine_id=create.machine_id,
                   blueprint=create.blueprint, max_active_gears=create.max_active_gears,
                   deadline=now + timeout, reason="made for the warm pool: parked once empty",
                   cause="warm")
    await ex.journal.begin(op)
    district = node.facts.district_uuid if node is not None and node.facts else None
    try:
        await ex.platform.deactivate(NodeRef(create.identity, district))
    except PlatformError as exc:
        # Left deactivating: recovery deactivates it again, a later park is refused until then
        log.warning("deactivating a new warm-pool node failed", node=create.identity,
                    error=str(exc))
        return
    await ex.journal.advance(op.op_id, phase=Phase.MOVING, at=ex.clock.now())


def _refuse(ex: Executor, action: Park | Resume | RetireParked, report: ExecutionReport,
            error: str) -> None:
    ex._event(report, kind=action.kind, pool=action.pool, target=action.identity,
              outcome="refused", reason=action.reason, error=error)


async def park(ex: Executor, action: Park, snapshot: FleetSnapshot,
               report: ExecutionReport) -> None:
    """Stop a drained, empty node's machine and keep it in its warm pool."""
    op = await ex._drain_op(action.identity)
    if op is None or op.phase not in (Phase.DEACTIVATING, Phase.MOVING, Phase.PARKING):
        _refuse(ex, action, report, "no drain of this node to finish by parking it")
        return
    provider = ex.providers.get(action.provider)
    if provider is None:
        _refuse(ex, action, report, f"unknown provider {action.provider}")
        return
    if op.phase != Phase.PARKING:
        checked = await checked_empty(ex, action, snapshot, report, past=(Phase.PARKING,))
        if checked is None:
            return
        node = snapshot.by_id.get(action.identity)
        blueprint = node.machine.blueprint if node is not None and node.machine else None
        op = await ex.journal.advance(op.op_id, phase=Phase.PARKING, at=ex.clock.now(),
                                      blueprint=blueprint,
                                      max_active_gears=checked.facts.max_active_gears)
    try:
        await provider.stop(action.machine_id)
    except ProviderError as exc:
        ex._event(report, kind=action.kind, pool=action.pool, target=action.identity,
                  outcome="failed", reason=action.reason, error=exc.kind)
        return
    await ex.journal.advance(op.op_id, phase=Phase.PARKED, at=ex.clock.now())
    ex._event(report, kind=action.kind, pool=action.pool, target=action.identity,
              outcome="ok", reason=action.reason, provider=action.provider)


async def resume(ex: Executor, action: Resume, report: ExecutionReport) -> None:
    """Start a parked machine again (journaled first: a restart starts it again)."""
    op = await ex._drain_op(action.identity)
    if op is None or op.phase not in (Phase.PARKED, Phase.RESUMING):
        _refuse(ex, action, report, "not a parked machine")
        return
    provider = ex.providers.get(action.provider)
    if provider is None:
        _refuse(ex, action, report, f"unknown provider {action.provider}")
        return
    op = await ex.journal.advance(op.op_id, phase=Phase.RESUMING, at=ex.clock.now())
    try:
        await provider.start(action.machine_id)
    except ProviderError as exc:
        await ex.journal.advance(op.op_id, phase=Phase.PARKED, at=ex.clock.now(),
                                 error=f"start: {exc.kind}")
        ex._event(report, kind=action.kind, pool=action.pool, target=action.identity,
                  outcome="failed", reason=action.reason, error=exc.kind,
                  provider=action.provider)
        return
    ex._event(report, kind=action.kind, pool=action.pool, target=action.identity,
              outcome="ok", reason=action.reason, provider=action.provider)


async def retire_parked(ex: Executor, action: RetireParked, snapshot: FleetSnapshot,
                        report: ExecutionReport) -> None:
    """Destroy a parked machine (idle too long, surplus, or never back from a resume)."""
    op = await ex._drain_op(action.identity)
    if op is None or op.phase not in (Phase.PARKED, Phase.RESUMING, Phase.REMOVING,
                                      Phase.RETIRING):
        _refuse(ex, action, report, "not a parked machine")
        return
    provider = ex.providers.get(action.provider)
    if provider is None:
        _refuse(ex, action, report, f"unknown provider {action.provider}")
        return
    node = snapshot.by_id.get(action.identity)
    facts = node.facts if node is not None else None
    if (facts is not None and node is not None and node.last_seen is not None
            and node.last_seen > op.updated_at
            and (facts.gears.active > 0 or facts.district_active)):
        log.error("a parked machine publishes facts with gears or active in its district: "
                  "not destroying it", node=action.identity, active=facts.gears.active)
        _refuse(ex, action, report, "it runs again and says it holds or takes gears")
        return
    try:
        if op.phase != Phase.RETIRING:
            if op.phase != Phase.REMOVING:
                await ex.journal.advance(op.op_id, phase=Phase.REMOVING, at=ex.clock.now())
            await ex.platform.remove(NodeRef(action.identity,
                                             facts.district_uuid if facts else None))
            await ex.journal.advance(op.op_id, phase=Phase.RETIRING, at=ex.clock.now())
        await provider.destroy(action.machine_id)
    except (PlatformError, ProviderError) as exc:
        ex._event(report, kind=action.kind, pool=action.pool, target=action.identity,
                  outcome="failed", reason=action.reason, error=exc.__class__.__name__)
        return
    await ex._forget_retired(action.identity)
    await ex.journal.advance(op.op_id, phase=Phase.RETIRED, at=ex.clock.now())
    ex._event(report, kind=action.kind, pool=action.pool, target=action.identity,
              outcome="ok", reason=action.reason, provider=action.provider)
