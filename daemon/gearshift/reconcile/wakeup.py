"""Wake the reconciler when new facts move a pool across a policy edge (debounced).

Fact sources call ``poke()`` on every accepted message. The first poke is checked at once
(``EdgeWatch``, which costs only the nodes that changed) and the reconciler woken if a pool
has just gone outside its band or come back; pokes in the next ``debounce`` seconds are
gathered into one more check at the end of that period. So a crossing fact reaches the
planner within milliseconds when the fleet is quiet and within ``debounce`` when it is
busy, and a storm of messages costs one check per period, not one per message.
"""

from __future__ import annotations

import asyncio

from gearshift.observe.edges import EdgeWatch
from gearshift.reconcile.reconciler import Reconciler


class EdgeWaker:
    def __init__(self, reconciler: Reconciler, *, debounce: float) -> None:
        self.reconciler = reconciler
        self.debounce = debounce
        self.watch = EdgeWatch()
        self._poked = asyncio.Event()
        self.wakes = 0

    def poke(self) -> None:
        self._poked.set()

    def check_now(self) -> list[str]:
        changed = self.watch.check(self.reconciler.fleet, self.reconciler.policies.current,
                                   self.reconciler.clock.now())
        if changed:
            self.wakes += 1
            self.reconciler.wake(f"policy edge crossed: {', '.join(changed)}")
        return changed

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            poked = asyncio.create_task(self._poked.wait())
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({poked, stopping}, return_when=asyncio.FIRST_COMPLETED)
            poked.cancel()
            stopping.cancel()
            if stop.is_set():
                return
            self._poked.clear()
            self.check_now()
            await asyncio.sleep(self.debounce)  # pokes meanwhile: one check after it
