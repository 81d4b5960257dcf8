"""Where the next nodes of a pool go: its placements in order, spilling over on quota.

Preferred (non-burst) placements are filled in the order the policy lists them; burst
placements are used only for what the preferred ones cannot take. A placement is skipped
when its provider is unavailable (circuit open, backed off after a capacity error), its
provider quota is full, or the pool's own ``max_nodes`` for it is reached. Every
placement considered becomes a ``Candidate`` saying what happened to it, for explain.

Usage is shared across pools in one evaluation: pools are planned highest priority
first, so they claim contested quota first.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from gearshift.model import Candidate, FleetSnapshot, ProviderStatus
from gearshift.policy.schema import PoolPolicy, ProvidersFile


@dataclass
class Usage:
    """Nodes per provider (all pools) and per pool and provider, including claims so far."""

    by_provider: Counter[str] = field(default_factory=Counter)
    by_pool_provider: Counter[tuple[str, str]] = field(default_factory=Counter)

    @classmethod
    def of(cls, snapshot: FleetSnapshot) -> Usage:
        usage = cls()
        pending = {p.identity for p in snapshot.pending}
        for node in snapshot.nodes:
            if node.machine is not None and node.identity not in pending:
                usage.claim(node.machine.pool, node.machine.provider, 1)
        for booting in snapshot.pending:
            usage.claim(booting.pool, booting.provider, 1)
        return usage

    def claim(self, pool: str | None, provider: str, count: int) -> None:
        self.by_provider[provider] += count
        if pool is not None:
            self.by_pool_provider[(pool, provider)] += count


@dataclass(frozen=True)
class Allocation:
    provider: str
    blueprint: str
    count: int
    gears_per_node: int


@dataclass(frozen=True)
class PlacementResult:
    allocations: tuple[Allocation, ...]
    candidates: tuple[Candidate, ...]

    @property
    def nodes(self) -> int:
        return sum(a.count for a in self.allocations)

    @property
    def gears(self) -> int:
        return sum(a.count * a.gears_per_node for a in self.allocations)


def place(policy: PoolPolicy, *, providers: ProvidersFile, statuses: Mapping[str, ProviderStatus],
          usage: Usage, min_nodes: int, shortfall_gears: int, max_nodes: int) -> PlacementResult:
    """Choose up to ``max_nodes`` nodes giving at least ``min_nodes`` nodes and
    ``shortfall_gears`` active-gear slots, claiming them in ``usage``."""
    ordered = ([p for p in policy.placement if not p.burst_only]
               + [p for p in policy.placement if p.burst_only])
    allocations: list[Allocation] = []
    candidates: list[Candidate] = []
    nodes = gears = 0
    for placement in ordered:
        spec = providers.provider(placement.provider)
        blueprint = providers.blueprint(placement.blueprint)
        if spec is None or blueprint is None:  # the loader's cross-check prevents this
            continue
        status = statuses.get(spec.name, ProviderStatus(name=spec.name))
        quota_free = spec.quota.max_nodes - usage.by_provider[spec.name]
        free = quota_free
        limit_note = f"quota {usage.by_provider[spec.name]}/{spec.quota.max_nodes} nodes"
        if placement.max_nodes is not None:
            placed = usage.by_pool_provider[(policy.name, spec.name)]
            if placement.max_nodes - placed < free:
                free = placement.max_nodes - placed
                limit_note = f"placement max_nodes {placed}/{placement.max_nodes}"
        free = max(free, 0)
        per_node = blueprint.expected_max_active_gears
        wanted_nodes = max(min_nodes - nodes, math.ceil(max(shortfall_gears - gears, 0) / per_node))
        wanted_nodes = min(wanted_nodes, max_nodes - nodes)
        if wanted_nodes <= 0:
            note = ("not needed: preferred placements cover it" if placement.burst_only
                    else "not needed")
            candidates.append(Candidate(spec.name, blueprint.name, 0, free, note))
            continue
        if not status.available:
            candidates.append(Candidate(spec.name, blueprint.name, 0, free,
                                        f"skipped: {status.why_unavailable or 'unavailable'}"))
            continue
        if free == 0:
            candidates.append(Candidate(spec.name, blueprint.name, 0, 0, f"skipped: full ({limit_note})"))
            continue
        take = min(free, wanted_nodes)
        usage.claim(policy.name, spec.name, take)
        allocations.append(Allocation(spec.name, blueprint.name, take, per_node))
        nodes += take
        gears += take * per_node
        note = f"chosen: {take} of {free} free"
        if placement.burst_only:
            note += " (burst: preferred placements are full or unavailable)"
        candidates.append(Candidate(spec.name, blueprint.name, take, free, note))
    return PlacementResult(tuple(allocations), tuple(candidates))
