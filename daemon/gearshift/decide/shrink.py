"""Shrinking a pool whose projected density is low: every reason it must wait, else the
victims (``decide.scale_in`` orders them) with the candidates weighed, as drains.

Proportional scale-in: when the active slots are many times what the pool wants
(``scale_in.proportional.above``), the excess is not a wobble. The step may drain up to
half the excess nodes (not just ``step.max_down``) and the down cooldown is divided by
the ratio; stabilisation, the floor, ``max_concurrent_drains``, the disruption budgets
and the drain rules are unchanged, so every drain still moves gears away before a node
goes. The drain's reason says so, with the figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from gearshift.decide.context import PlanContext
from gearshift.decide.pools import PoolView
from gearshift.decide.scale_in import scale_in_order
from gearshift.decide.signals import Signals
from gearshift.durations import format_duration
from gearshift.model import Drain, FleetSnapshot, Node, NodeCandidate
from gearshift.plan import PoolMemory
from gearshift.policy.schema import PoolPolicy
from gearshift.policy.share import nodes_of


@dataclass(frozen=True)
class Pace:
    """How big a scale-in step may be and how long the down cooldown lasts."""

    step: int
    cooldown: float
    note: str = ""  # set when the excess made them bigger / shorter


def pace(policy: PoolPolicy, *, capacity: int, want_gears: int, per_node: int) -> Pace:
    """``step.max_down`` and ``cooldown.down``, or, when capacity is at least
    ``proportional.above`` times the slots wanted, half the excess nodes and the cooldown
    divided by that ratio."""
    base = Pace(step=policy.step.max_down, cooldown=policy.cooldown.down)
    rule = policy.scale_in.proportional
    if not rule.enabled or capacity <= 0:
        return base
    ratio = capacity / want_gears if want_gears > 0 else math.inf
    if ratio < rule.above:
        return base
    excess = (capacity - want_gears) // max(1, per_node)
    step = max(base.step, math.ceil(excess / 2))
    cooldown = float(round(base.cooldown / ratio)) if math.isfinite(ratio) else 0.0
    times = f"{ratio:.1f}x" if math.isfinite(ratio) else "any multiple of"
    note = (f"proportional scale-in: {capacity} slots is {times} the {want_gears} wanted "
            f"(>= {rule.above:g}x): step {base.step} -> {step} (half the {excess} excess "
            f"nodes), cooldown down {format_duration(base.cooldown)} -> "
            f"{format_duration(cooldown)}; drain budgets still apply")
    return Pace(step=step, cooldown=cooldown, note=note)


def scale_in_blockers(view: PoolView, policy: PoolPolicy, memory: PoolMemory, signals: Signals,
                      *, degraded: bool, requested: int, low_since: float, now: float,
                      snapshot: FleetSnapshot, cooldown: float | None = None) -> list[str]:
    """Every reason scale-in must wait; empty when it may go ahead. ``cooldown``: the
    down cooldown to apply (default ``cooldown.down``; shorter when proportional)."""
    cooldown = policy.cooldown.down if cooldown is None else cooldown
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
    if last is not None and now - last < cooldown:
        blockers.append(f"cooldown down {format_duration(cooldown - (now - last))} left")
    return blockers


SHOWN_CANDIDATES = 20  # a drain's explanation lists this many of the nodes weighed


def choose_drains(view: PoolView, policy: PoolPolicy, ctx: PlanContext, *, want_gears: int,
                  floor: int, size: int, ongoing: int, step: int | None = None
                  ) -> list[tuple[Node, tuple[NodeCandidate, ...]]]:
    """Scale-in victims, each with every node considered and why it was or was not taken.
    ``step``: the most to drain now (default ``step.max_down``)."""
    budget = min(policy.step.max_down if step is None else step,
                 nodes_of(policy.scale_in.max_concurrent_drains, pool_size=size) - ongoing,
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
    per_node = round(view.capacity_gears / len(view.active)) if view.active else 1
    speed = pace(policy, capacity=view.capacity_gears, want_gears=want_gears, per_node=per_node)
    if memory.drain_timed_out_at is not None and memory.drain_timed_out_at == memory.last_scale_down:
        # The last scale-down was a drain that ran out of time: the full cooldown first.
        speed = replace(speed, cooldown=policy.cooldown.down)
    blockers = scale_in_blockers(view, policy, memory, signals, degraded=degraded,
                                 requested=requested, low_since=low_since, now=now,
                                 snapshot=ctx.snapshot, cooldown=speed.cooldown)
    if timed_out:
        blockers.append(f"a drain just passed its deadline: cooldown down "
                        f"{format_duration(policy.cooldown.down)} first")
    if blockers:
        return Shrinking(note=f"projected density {fmt_density(projected)} < "
                              f"{band.scale_down_below:.2f} (with booting nodes) but not "
                              f"shrinking: {'; '.join(blockers)}", blocked=True)
    drains = []
    for node, candidates in choose_drains(view, policy, ctx, want_gears=want_gears, floor=floor,
                                          size=size, ongoing=ongoing, step=speed.step):
        assert node.facts is not None
        drains.append(Drain(
            pool=name, identity=node.identity, candidates=candidates,
            reason=(f"pool {name}: projected density {fmt_density(projected)} < "
                    f"{band.scale_down_below:.2f} for "
                    f"{format_duration(now - low_since)} ({figures}); "
                    f"want {want_gears} slots; draining {node.identity} "
                    f"({node.facts.gears.total} gears, strategy "
                    f"{policy.scale_in.strategy})"
                    + (f"; {speed.note}" if speed.note else ""))))
    note = (f"shrinking: draining {len(drains)} node(s)"
            + (f" ({speed.note})" if drains and speed.note else "") if drains else
            "projected density low, but no node can go without breaching "
            "target, headroom, floor or drain budget")
    return Shrinking(note=note, blocked=False, drains=drains)
