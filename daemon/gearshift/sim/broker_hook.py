"""The simulated broker-side hook: report the gears the simulated broker could not place.

The OpenShift broker refuses a gear with "No nodes available" when no node of the
profile has room; the simulated world (``SimWorld``) keeps that count per pool as
``unmet``. A real hook (README, ``deploy/broker-hook/``) watches the broker for those
refusals and reports the pool's unplaced gears on the capacity-request channel; this one
does the same from the world: a report per pool when the count changes, renewed every
``refresh`` seconds (a report expires after its ``ttl``), 0 included: a report of 0 says
the hook is watching and nothing is refused.

It produces the wire model (``UnplacedGearsBody`` as JSON), so whatever carries it (the
``simulate`` runner straight into the request book, the demo over MQTT) goes through
the parser the daemon uses for HTTP and MQTT alike.
"""

from __future__ import annotations

import math
from typing import Any

from gearshift.sim.world import SimWorld


class SimBrokerHook:
    """Turns the world's unplaced gears into the reports a hook would send."""

    def __init__(self, world: SimWorld, *, source: str = "sim-broker", refresh: float = 60.0,
                 ttl: str = "2m") -> None:
        self.world = world
        self.source = source
        self.refresh = refresh
        self.ttl = ttl
        self._sent: dict[str, tuple[int, float]] = {}  # pool -> (gears, when)
        self.reports = 0
        # What the last look saw: while the unplaced counts and the pools are the same and
        # no renewal is due, nothing is.
        self._looked: tuple[dict[str, int], frozenset[str], float] | None = None

    def next_due(self) -> float | None:
        """When the next renewal falls due (a report must not expire while it holds)."""
        return min((when + self.refresh for _, when in self._sent.values()), default=None)

    def due(self, now: float) -> list[dict[str, Any]]:
        """The report bodies to send at ``now`` (empty: nothing changed)."""
        looked = self._looked
        if (looked is not None and now < looked[2] and looked[1] == self.world.demand.keys()
                and looked[0] == self.world.unmet):
            return []  # (the simulator asks at every step)
        out: list[dict[str, Any]] = []
        for pool in sorted(set(self.world.demand) | set(self.world.unmet) | set(self._sent)):
            gears = self.world.unmet.get(pool, 0)
            last = self._sent.get(pool)
            if last is not None and last[0] == gears and now - last[1] < self.refresh:
                continue
            out.append({"pool": pool, "gears": gears, "source": self.source, "ttl": self.ttl,
                        "reason": f'{gears} gears refused: "No nodes available"'})
            self._sent[pool] = (gears, now)
        self.reports += len(out)
        renewal = self.next_due()
        self._looked = (dict(self.world.unmet), frozenset(self.world.demand),
                        math.inf if renewal is None else renewal)
        return out
