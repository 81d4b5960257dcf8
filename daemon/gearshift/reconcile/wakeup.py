"""Wake the reconciler when new facts move a pool across a policy edge (debounced).

Fact sources call ``poke()`` on every accepted message; at most every ``debounce``
seconds the fleet is checked (``EdgeWatch``) and the reconciler woken if a pool has just
gone outside its band or come back. So a flash crowd is acted on in well under a second,
and a storm of messages costs one check per debounce period, not one per message.
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
            await asyncio.sleep(self.debounce)
            self._poked.clear()
            self.check_now()
