"""What the planner returns: its reading of each pool, its memory, and the plan.

``model`` holds the nouns the planner reads (facts, nodes, the fleet snapshot) and the
actions it may take; this module holds what it makes of them: a ``Plan`` (the actions, each
pool's ``PoolEvaluation``) and the ``PlannerState`` it carries to the next evaluation
(cooldown clocks, preemptions and burst returns in flight). Frozen, like the snapshot: the
executor acts on exactly what was decided, and the next evaluation starts from exactly what
was remembered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from gearshift.frozen import fast_init
from gearshift.model import Action


@fast_init
@dataclass(frozen=True, slots=True)
class PoolEvaluation:
    """The planner's reading of one pool, for status, metrics and explanations."""

    pool: str
    active: int
    booting: int
    draining: int
    unknown: int
    active_gears: int
    capacity_gears: int
    active_density: float | None
    desired_nodes: int
    degraded: bool
    summary: str
    paused: bool = False
    # Predictive scaling: the upper demand forecast for now + time-to-ready (None: off or
    # no forecast), the instant it is for, and the nodes it orders (on) or would order
    # (forecast_only) now.
    forecast_gears: float | None = None
    forecast_at: float | None = None
    forecast_extra_nodes: int = 0
    demand_gears: int = 0  # active + draining + requested gears: the demand history's figure


@fast_init
@dataclass(frozen=True, slots=True)
class PoolMemory:
    """What the planner remembers about a pool between evaluations."""

    last_scale_up: float | None = None
    last_scale_down: float | None = None
    low_since: float | None = None  # density below the band (continuously) since
    high_since: float | None = None  # density above the band (continuously) since
    returns_paused_until: float | None = None  # burst-and-return backs off after a failure
    growing_to: int | None = None  # slots (booting included) the last growth aimed for
    # Pool size before the last growth (reactivated nodes counted as growth): a spill round
    # at the same instant may add only what keeps the whole growth within step.max_up.
    grown_from: int | None = None
    # Nodes the last growth asked for while the pool was full and no broker reported the
    # gears it refused: the next growth while it stays full asks for twice as many.
    full_step: int = 0
    # When a drain last ran out of time: the down cooldown after it is never shortened
    # by proportional scale-in (drains are slow or failing; going faster would not help).
    drain_timed_out_at: float | None = None


@dataclass(frozen=True, slots=True)
class Preemption:
    """A node of a preemptible pool being drained so a higher-priority pool gets its quota."""

    identity: str
    victim_pool: str
    by_pool: str
    provider: str
    at: float


@dataclass(frozen=True, slots=True)
class BurstReturn:
    """A burst node being replaced on a preferred provider (make, then drain, then retire)."""

    identity: str  # the burst node
    pool: str
    provider: str  # where its replacement goes
    requested_at: float
    drained_at: float | None = None  # None: waiting for the replacement to come up
    # burst_return: a burst-only node going home; consolidation: a node on a placement
    # whose slots cost more than the replacement's (``decide.consolidate``)
    cause: Literal["burst_return", "consolidation"] = "burst_return"


@dataclass(frozen=True)
class PlannerState:
    """Memory across evaluations; the planner returns a new one with every plan."""

    pools: Mapping[str, PoolMemory] = field(default_factory=dict)
    preemptions: Mapping[str, Preemption] = field(default_factory=dict)  # by victim identity
    returns: Mapping[str, BurstReturn] = field(default_factory=dict)  # by burst node identity

    def pool(self, name: str) -> PoolMemory:
        memory = self.pools.get(name)  # (a default made only when missing: once per pool)
        return memory if memory is not None else PoolMemory()


@dataclass(frozen=True)
class Plan:
    """What to do now, why, and the planner's memory after deciding it."""

    at: float
    actions: tuple[Action, ...]
    pools: Mapping[str, PoolEvaluation]
    state: PlannerState
