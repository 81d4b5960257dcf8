"""What one evaluation shares across pools: claimed quota, drain budgets, nodes taken.

Pools are planned one after another, highest priority first; whatever one pool claims
(quota for new nodes, a node to drain, a slot of a drain budget) the next one sees.
``PoolReading`` is the planner's reading of one pool, kept so the passes that run after
every pool has been planned (burst-and-return) decide on the same figures.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from gearshift.decide.budget import DrainBudget
from gearshift.decide.placement import Usage
from gearshift.decide.pools import PoolView
from gearshift.model import FleetSnapshot, Node, ProviderStatus
from gearshift.plan import Preemption
from gearshift.policy.schema import ProvidersFile


@dataclass
class PlanContext:
    snapshot: FleetSnapshot
    providers: ProvidersFile
    statuses: Mapping[str, ProviderStatus]
    now: float
    nodes_by_id: Mapping[str, Node]
    views: Mapping[str, PoolView]
    usage: Usage
    budget: DrainBudget
    preemptions: dict[str, Preemption]  # by victim identity, in flight and planned now
    taken: set[str] = field(default_factory=set)  # nodes some action of this plan drains
    disrupted: Counter[str] = field(default_factory=Counter)  # pool -> nodes taken from it now
    # (pool, provider, blueprint) -> machines this plan parks in that warm pool
    parking: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    # Pool -> its cheapest blueprint's slot cost (``PolicySet.cheapest_slots``), when known.
    cheapest_slots: Mapping[str, float | None] | None = None

    @property
    def draining_ids(self) -> set[str]:
        return {d.identity for d in self.snapshot.drains}


class PoolReading(NamedTuple):
    """The figures one pool was planned on (immutable; a named tuple, as one is made per pool
    per plan and a frozen dataclass costs several times more to build)."""

    demand: int  # active gears + gears on draining nodes + requested gears
    capacity_now: int  # slots on active nodes
    capacity: int  # ... plus booting nodes
    want_gears: int  # slots wanted at the target density and headroom
    floor: int
    size: int
    pressure: bool
    degraded: bool
    paused: bool
    grew: int
    shrank: int
    unplaced: int  # nodes wanted but not placed for lack of room anywhere
    unplaced_why: str  # what placement said about each placement it could not use
    figures: str
