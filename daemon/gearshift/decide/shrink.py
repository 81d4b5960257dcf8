"""Shrinking a pool whose projected density is low: every reason it must wait, else the
victims (``decide.scale_in`` orders them) with the candidates weighed, as drains."""

from __future__ import annotations

from dataclasses import dataclass, field

from gearshift.decide.context import PlanContext
from gearshift.decide.pools import PoolView
from gearshift.decide.scale_in import scale_in_order
from gearshift.decide.signals import Signals
from gearshift.durations import format_duration
from gearshift.model import Drain, FleetSnapshot, Node, NodeCandidate, PoolMemory
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


def fmt_density(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


@dataclass
class Shrinking:
    note: str
    blocked: bool  # scale-in must wait (``note`` says why)
    drains: list[Drain] = field(default_factory=list)


def shrink(view: PoolView, *, ctx: PlanContext, memory: PoolMemory, signals: Signals,
           degraded: bool, requested: int, low_since: float, timed_out: bool,
           projected: float | None, figures: str, want_gears: int, floor: int, size: int,
           ongoing: int) -> Shrinking:
    """Drain what the pool can lose, or say why it must wait."""
    policy, name, now, band = view.policy, view.policy.name, ctx.now, view.policy.density
    blockers = scale_in_blockers(view, policy, memory, signals, degraded=degraded,
                                 requested=requested, low_since=low_since, now=now,
                                 snapshot=ctx.snapshot)
    if timed_out:
        blockers.append(f"a drain just passed its deadline: cooldown down "
                        f"{format_duration(policy.cooldown.down)} first")
    if blockers:
        return Shrinking(note=f"projected density {fmt_density(projected)} < "
                              f"{band.scale_down_below:.2f} (with booting nodes) but not "
                              f"shrinking: {'; '.join(blockers)}", blocked=True)
    drains = []
    for node, candidates in choose_drains(view, policy, ctx, want_gears=want_gears, floor=floor,
                                          size=size, ongoing=ongoing):
        assert node.facts is not None
        drains.append(Drain(
            pool=name, identity=node.identity, candidates=candidates,
            reason=(f"pool {name}: projected density {fmt_density(projected)} < "
                    f"{band.scale_down_below:.2f} for "
                    f"{format_duration(now - low_since)} ({figures}); "
                    f"want {want_gears} slots; draining {node.identity} "
                    f"({node.facts.gears.total} gears, strategy "
                    f"{policy.scale_in.strategy})")))
    note = (f"shrinking: draining {len(drains)} node(s)" if drains else
            "projected density low, but no node can go without breaching "
            "target, headroom, floor or drain budget")
    return Shrinking(note=note, blocked=False, drains=drains)
