"""Taking machines away: retiring a drained node (the last checks, the second witness,
then remove and destroy), abandoning a node that never came up, destroying again.

A retire is the one step that cannot be undone, so it is checked once more at the last
moment (fresh facts, no active gears, facts newer than the deactivation, not active in its
district) and against a second witness (``act.witness``); it is journaled before each step
so a retire that failed half-way resumes where it stopped. Kept apart from the executor's
dispatch so the checks read in one place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import structlog

from gearshift.act.platform.base import NodeRef
from gearshift.act.progress import ExecutionReport
from gearshift.act.providers.guard import GuardedProvider
from gearshift.act.witness import confirm_retire
from gearshift.errors import PlatformError, ProviderError
from gearshift.model import (
    Abandon,
    DestroyAgain,
    FleetSnapshot,
    NodeFacts,
    NodeState,
    Park,
    Retire,
)
from gearshift.records import Operation, Phase

if TYPE_CHECKING:
    from gearshift.act.executor import Executor

log = structlog.get_logger(component="gearshift.act")


class Checked(NamedTuple):
    """A drained node the last checks found empty: its facts, provider and drain."""

    facts: NodeFacts
    provider: GuardedProvider
    op: Operation | None


async def checked_empty(ex: Executor, action: Retire | Park, snapshot: FleetSnapshot,
                        report: ExecutionReport, *, past: tuple[Phase, ...]
                        ) -> Checked | None:
    """The last checks before a drained node's machine is destroyed or stopped (fresh facts,
    no active gears, facts newer than the deactivation, out of service in its district,
    the second witness); None (and an event saying why) when one fails. A drain already
    in a phase of ``past`` passed them before: only its facts and provider are looked up."""
    node = snapshot.by_id.get(action.identity)
    facts = node.facts if node is not None and node.state is not NodeState.UNKNOWN else None
    if facts is None or facts.gears.active > 0:
        # The planner checked this; checking again here costs nothing and is final.
        ex._event(report, kind=action.kind, pool=action.pool, target=action.identity,
                  outcome="refused", reason=action.reason,
                  error="facts not fresh or active gears present")
        return None
    provider = ex.providers.get(action.provider)
    if provider is None:
        ex._event(report, kind=action.kind, pool=action.pool, target=action.identity,
                  outcome="refused", reason=action.reason,
                  error=f"unknown provider {action.provider}")
        return None
    op = await ex._drain_op(action.identity)
    if op is not None and op.phase == Phase.CANCELLING:
        ex._event(report, kind=action.kind, pool=action.pool, target=action.identity,
                  outcome="refused", reason=action.reason,
                  error="its drain is being cancelled")
        return None
    seen = node.last_seen if node is not None else None
    if op is not None and op.phase in (Phase.DEACTIVATING, Phase.MOVING):
        if seen is None or seen < op.updated_at:
            # Facts from before the node left its district may miss gears placed on it
            # just before: only facts the node published since then can prove it empty.
            ex._event(report, kind=action.kind, pool=action.pool,
                      target=action.identity, outcome="refused", reason=action.reason,
                      error="facts predate the deactivation; waiting for newer ones")
            return None
        if facts.district_active:
            # The node still says it takes new gears: the deactivation did not land.
            ex._event(report, kind=action.kind, pool=action.pool,
                      target=action.identity, outcome="refused", reason=action.reason,
                      error="facts still show the node active in its district")
            return None
    if (op is None or op.phase not in past) and \
            not await _witnessed(ex, action, facts=facts, provider=provider, op=op,
                                report=report):
        return None
    return Checked(facts, provider, op)


async def retire(ex: Executor, action: Retire, snapshot: FleetSnapshot,
                 report: ExecutionReport) -> None:
    """Carry out a ``Retire`` (``act.executor``'s docstring lists the checks)."""
    checked = await checked_empty(ex, action, snapshot, report,
                                  past=(Phase.REMOVING, Phase.RETIRING))
    if checked is None:
        return
    facts, provider, op = checked
    now = ex.clock.now()
    try:
        if op is None:
            op = Operation(
                op_id=ex.new_id(), kind="drain", pool=action.pool,
                identity=action.identity, phase=Phase.REMOVING, started_at=now, updated_at=now,
                provider=action.provider, machine_id=action.machine_id, deadline=now,
                reason=action.reason)
            await ex.journal.begin(op)
        elif op.phase != Phase.RETIRING:
            await ex.journal.advance(op.op_id, phase=Phase.REMOVING, at=now)
        if op.phase != Phase.RETIRING:  # a retire resumed after a failed destroy: removed
            await ex.platform.remove(NodeRef(action.identity, facts.district_uuid))
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


async def _witnessed(ex: Executor, action: Retire | Park, *, facts: NodeFacts,
                     provider: GuardedProvider, op: Operation | None,
                     report: ExecutionReport) -> bool:
    """Do the platform and the provider agree that the node may go (``act.witness``)?
    On a disagreement the drain is cancelled (the node reactivated) and the node held."""
    try:
        disagreement = await confirm_retire(identity=action.identity, facts=facts,
                                            platform=ex.platform, provider=provider,
                                            machine_id=action.machine_id,
                                            listed=report.listings)
    except (PlatformError, ProviderError) as exc:
        ex._event(report, kind=action.kind, pool=action.pool, target=action.identity,
                  outcome="failed", reason=action.reason,
                  error=f"second witness unavailable: {str(exc)[:200]}")
        return False
    if disagreement is None:
        return True
    why = disagreement.describe()
    log.error("retire refused: the witnesses disagree with the node's facts",
              node=action.identity, pool=action.pool, witness=disagreement.witness,
              facts_say=disagreement.facts_say, witness_says=disagreement.witness_says)
    if ex.metrics is not None:
        ex.metrics.witness_disagreements.labels(action.pool, disagreement.witness).inc()
    if op is not None and op.phase in (Phase.DEACTIVATING, Phase.MOVING):
        await ex.journal.advance(op.op_id, phase=Phase.CANCELLING, at=ex.clock.now(),
                                 error=why[:200])
    if ex.on_disputed is not None:
        ex.on_disputed(action.identity, why)
    ex._event(report, kind=action.kind, pool=action.pool, target=action.identity,
              outcome="refused", reason=action.reason, error=why)
    return False


async def destroy_again(ex: Executor, action: DestroyAgain) -> None:
    """A retire whose destroy failed (it is out of its district): destroy it again."""
    provider = ex.providers.get(action.provider)
    if provider is None:
        return
    try:
        await provider.destroy(action.machine_id)
    except ProviderError as exc:
        log.warning("destroying a retired node's machine failed again; trying later",
                    node=action.identity, provider=action.provider, error=exc.kind)
        return
    await ex._forget_retired(action.identity)
    await ex.journal.advance(action.op_id, phase=Phase.RETIRED, at=ex.clock.now())
    log.info("machine destroyed on a second try", node=action.identity,
             provider=action.provider)


async def abandon(ex: Executor, action: Abandon) -> None:
    """A node that never came up: destroy its machine, back its provider off."""
    provider = ex.providers.get(action.provider)
    if provider is None:
        return
    now = ex.clock.now()
    if not action.resumed:
        log.warning("node never came up: retiring it", node=action.identity,
                    provider=action.provider, waited=round(action.waited),
                    timeout=round(action.timeout))
        await ex.journal.advance(action.op_id, phase=Phase.ABANDONING, at=now,
                                 error=f"no facts within {action.timeout:.0f}s")
    try:
        await provider.destroy(action.machine_id)
    except ProviderError as exc:
        log.warning("could not retire a node that never came up", node=action.identity,
                    error=exc.kind)
        return
    provider.back_off(
        reason=f"{action.identity} published no facts within {action.timeout:.0f}s", at=now)
    await ex._forget_retired(action.identity)
    await ex.journal.advance(action.op_id, phase=Phase.FAILED, at=ex.clock.now(),
                             error="provisioning timeout")
