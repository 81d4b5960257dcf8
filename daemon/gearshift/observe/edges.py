"""Has a pool just crossed a policy edge? Then the reconciler should not wait for its timer.

``EdgeWatch.check`` looks at the latest facts and returns the pools that have *just* gone
above their density band or below their headroom (or back inside). Facts sources call it
after ingesting a batch and wake the reconciler when it returns anything.
"""

from __future__ import annotations

from gearshift.observe.fleet import FleetModel
from gearshift.policy.schema import PolicySet


class EdgeWatch:
    def __init__(self) -> None:
        self._outside: dict[str, bool] = {}

    def check(self, fleet: FleetModel, policies: PolicySet, now: float) -> list[str]:
        """Pools whose "outside the band" reading changed since the last check."""
        sums = {p.name: [0, 0] for p in policies.pools}
        for identity in fleet.identities():
            facts = fleet.facts(identity)
            if facts is None or not facts.district_active or not fleet.is_fresh(identity, now):
                continue
            pool = next((p for p in policies.pools if p.selector.matches(facts)), None)
            if pool is not None:
                sums[pool.name][0] += facts.gears.active
                sums[pool.name][1] += facts.max_active_gears
        changed = []
        for pool in policies.pools:
            active, capacity = sums[pool.name]
            outside = capacity > 0 and (
                active / capacity > pool.density.scale_up_above
                or capacity - active < pool.headroom_gears)
            if self._outside.get(pool.name, False) != outside:
                changed.append(pool.name)
            self._outside[pool.name] = outside
        return changed
