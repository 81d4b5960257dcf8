"""What an active-gear slot costs on a pool's placements, from the policy files alone.

Consolidation (``decide.dear``) weighs every calm pool against its cheapest blueprint on
every plan; ``PolicySet.cheapest_slots`` works that figure out once per policy set with
the same function the planner falls back to, so the two can never disagree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gearshift.policy.schema import PoolPolicy, ProvidersFile


def slot_cost(cost_per_hour: float, slots: int) -> float:
    """What one active-gear slot costs per hour."""
    return cost_per_hour / max(1, slots)


def cheapest_slot(policy: PoolPolicy, providers: ProvidersFile | None) -> float | None:
    """What a slot costs on the pool's cheapest non-burst placement (by its blueprint);
    None when it has fewer than two such placements: nothing is dearer then."""
    if providers is None:
        return None
    per_slot = [slot_cost(spec.cost_per_hour, blueprint.expected_max_active_gears)
                for placement in policy.placement if not placement.burst_only
                and (spec := providers.provider(placement.provider)) is not None
                and (blueprint := providers.blueprint(placement.blueprint)) is not None]
    return min(per_slot) if len(per_slot) >= 2 else None
