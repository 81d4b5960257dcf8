"""Scale-in: every reason it must wait, and the victims with the candidates weighed."""

from __future__ import annotations

from gearshift.decide.context import PlanContext
from gearshift.decide.pools import PoolView
from gearshift.decide.scale_in import scale_in_order
from gearshift.decide.signals import Signals
from gearshift.durations import format_duration
from gearshift.model import FleetSnapshot, Node, NodeCandidate, PoolMemory
from gearshift.policy.schema import PoolPolicy


def scale_in_blockers(view: PoolView, policy: PoolPolicy, memory: PoolMemory, signals: Signals,
                       *, degraded: bool, requested: int, low_since: float, now: float,
                       snapshot: FleetSnapshot) -> list[str]:
    """Every reason scale-in must wait; empty when it may go ahead."""
    blockers = []
    if not snapshot.facts_fresh:
        blockers.append("facts are not fresh (fact source lost): scale-in frozen")
    elif degraded:
        blockers.append(f"{len(view.unknown)} node(s) unknown: scale-in frozen")
    if view.pending:
        blockers.append(f"{len(view.pending)} node(s) still booting")
    if requested:
        blockers.append(f"{requested} gears of capacity requests pending")
    blockers.extend(signals.block_down)
    waited = now - low_since
    if waited < policy.stabilization.down:
        blockers.append(f"low for {format_duration(waited)} of "
                        f"{format_duration(policy.stabilization.down)} stabilisation")
    last = max((t for t in (memory.last_scale_up, memory.last_scale_down) if t is not None),
               default=None)
    if last is not None and now - last < policy.cooldown.down:
        blockers.append(f"cooldown down {format_duration(policy.cooldown.down - (now - last))} left")
    return blockers


SHOWN_CANDIDATES = 20  # a drain's explanation lists this many of the nodes weighed


def choose_drains(view: PoolView, policy: PoolPolicy, ctx: PlanContext, *, want_gears: int,
                   floor: int, size: int, ongoing: int
                   ) -> list[tuple[Node, tuple[NodeCandidate, ...]]]:
    """Scale-in victims, each with every node considered and why it was or was not taken."""
    budget = min(policy.step.max_down, policy.scale_in.max_concurrent_drains - ongoing,
                 size - floor)
    remaining = view.capacity_gears
    chosen: list[Node] = []
    considered: list[NodeCandidate] = []
    for node in scale_in_order(policy, view.active, ctx.providers):
        assert node.facts is not None and node.machine is not None
        if len(chosen) >= budget and len(considered) >= SHOWN_CANDIDATES:
            break  # every node after this one is skipped for the budget, and not shown
        provider = node.machine.provider
        order = f"{node.facts.gears.total} gears, {provider}"
        if node.identity in ctx.taken:
            considered.append(NodeCandidate(node.identity, provider, False,
                                            "skipped: already drained by another action"))
            continue
        if len(chosen) >= budget:
            considered.append(NodeCandidate(
                node.identity, provider, False,
                f"skipped: step/drain budget ({max(budget, 0)}) or floor {floor} reached"))
            continue
        if remaining - node.facts.max_active_gears < want_gears:
            considered.append(NodeCandidate(
                node.identity, provider, False,
                f"skipped: would leave {remaining - node.facts.max_active_gears} < "
                f"{want_gears} slots wanted"))
            continue
        blocked = ctx.budget.allows(policy, provider)
        if blocked is not None:
            considered.append(NodeCandidate(node.identity, provider, False, f"skipped: {blocked}"))
            continue
        considered.append(NodeCandidate(node.identity, provider, True,
                                        f"chosen: {policy.scale_in.strategy} ({order})"))
        chosen.append(node)
        ctx.budget.take(policy.name, provider)
        ctx.taken.add(node.identity)
        remaining -= node.facts.max_active_gears
    shown = tuple(considered[:SHOWN_CANDIDATES])
    return [(node, shown) for node in chosen]
