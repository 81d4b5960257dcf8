"""Has a pool just crossed a policy edge? Then the reconciler should not wait for its timer.

``EdgeWatch.check`` looks at the latest facts and returns the pools that have *just* gone
above their density band or below their headroom (or back inside). Facts sources call it
after ingesting a batch and wake the reconciler when it returns anything.

It keeps per-pool sums up to date incrementally: the fleet model tells it which nodes
changed, so a check costs O(changed nodes), not O(fleet) — at 10k nodes and a check every
debounce period that is the difference between microseconds and tens of milliseconds.
Nodes that go stale without a message are caught by a full resync (O(fleet), a few ms at
10k nodes, so not too often: the reconcile timer covers staleness meanwhile) every
``resync_every`` seconds (and whenever the policies change).
"""

from __future__ import annotations

from gearshift.observe.fleet import FleetModel
from gearshift.policy.schema import PolicySet, PoolPolicy


class EdgeWatch:
    def __init__(self, *, resync_every: float = 30.0) -> None:
        self.resync_every = resync_every
        self._outside: dict[str, bool] = {}
        self._fleet: FleetModel | None = None
        self._pools: tuple[PoolPolicy, ...] | None = None
        self._dirty: set[str] = set()
        self._contrib: dict[str, tuple[str, int, int]] = {}  # identity -> (pool, active, cap)
        self._sums: dict[str, list[int]] = {}  # pool -> [active gears, capacity]
        self._synced_at = float("-inf")
        self.full_resyncs = 0

    def _note(self, identity: str) -> None:
        self._dirty.add(identity)

    def _update(self, fleet: FleetModel, identity: str, now: float) -> None:
        old = self._contrib.pop(identity, None)
        if old is not None:
            sums = self._sums.get(old[0])
            if sums is not None:
                sums[0] -= old[1]
                sums[1] -= old[2]
        facts = fleet.facts(identity)
        if facts is None or not facts.district_active or not fleet.is_fresh(identity, now):
            return
        assert self._pools is not None
        pool = next((p for p in self._pools if p.selector.matches(facts)), None)
        if pool is None:
            return
        self._contrib[identity] = (pool.name, facts.gears.active, facts.max_active_gears)
        sums = self._sums[pool.name]
        sums[0] += facts.gears.active
        sums[1] += facts.max_active_gears

    def _resync(self, fleet: FleetModel, policies: PolicySet, now: float) -> None:
        self._pools = policies.pools
        self._sums = {p.name: [0, 0] for p in policies.pools}
        self._contrib = {}
        self._dirty.clear()
        for identity in list(fleet.identities()):
            self._update(fleet, identity, now)
        self._synced_at = now
        self.full_resyncs += 1

    def check(self, fleet: FleetModel, policies: PolicySet, now: float) -> list[str]:
        """Pools whose "outside the band" reading changed since the last check."""
        if fleet is not self._fleet:
            fleet.add_listener(self._note)
            self._fleet = fleet
            self._resync(fleet, policies, now)
        elif policies.pools is not self._pools or now - self._synced_at >= self.resync_every:
            self._resync(fleet, policies, now)
        else:
            dirty, self._dirty = self._dirty, set()
            for identity in dirty:
                self._update(fleet, identity, now)
        changed = []
        for pool in policies.pools:
            active, capacity = self._sums[pool.name]
            outside = capacity > 0 and (
                active / capacity > pool.density.scale_up_above
                or capacity - active < pool.headroom_gears)
            if self._outside.get(pool.name, False) != outside:
                changed.append(pool.name)
            self._outside[pool.name] = outside
        return changed
