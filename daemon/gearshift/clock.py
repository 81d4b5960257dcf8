"""Time as a parameter: the real clock for the daemon, a manual one for tests and simulation.

What decides the fleet waits and reads time through a ``Clock`` (the reconcile timer, the
provider guard's retry back-off, fact ages and staleness), so a test can move time forward
by an hour without sleeping, and ``simulate`` can run a week in seconds.

Some waits use real time on purpose, because what they wait for lives outside the process
and would not move with a manual clock:

- leadership (``reconcile/leader.py``): lease renewal and polling, and the "could not renew
  for most of the lease's life" test, count monotonic seconds against a lease that other
  processes and the database expire in real time; the loop's heartbeat is real too, since
  the watchdog reading it is.
- the task supervisor (``reconcile/supervisor.py``): restart back-off after a crash is for
  a real fault (a library, the network), not for simulated fleet time.
- the MQTT fact source (``observe/mqtt.py``): broker reconnect back-off, catch-up after
  subscribing and the log rate limit wait for a real broker and real agents.
- the in-memory journal's lease (``store/journal.py``): stands in for the SQLite/Postgres
  lease, which expires by the database's wall clock, and so keeps the same real-time TTL.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the Unix epoch."""

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""

    async def wait_for(self, event: asyncio.Event, timeout: float) -> bool:
        """Wait until ``event`` is set (True) or ``timeout`` passes (False)."""


class SystemClock:
    """Wall-clock time and real waiting."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait_for(self, event: asyncio.Event, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            return False
        return True


class ManualClock:
    """Time that moves only when told to; waits end when ``advance`` passes their deadline."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._changed = asyncio.Condition() if _in_loop() else None

    def now(self) -> float:
        return self._now

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def advance(self, seconds: float) -> None:
        """Move time forward and let every waiter whose deadline passed run."""
        self._now += seconds
        condition = self._condition()
        async with condition:
            condition.notify_all()
        for _ in range(100):  # let woken tasks run until they wait again
            await asyncio.sleep(0)

    def set(self, now: float) -> None:
        """Jump to ``now`` without waking anyone (for synchronous simulation loops)."""
        self._now = now

    async def sleep(self, seconds: float) -> None:
        deadline = self._now + seconds
        condition = self._condition()
        async with condition:
            await condition.wait_for(lambda: self._now >= deadline)

    async def wait_for(self, event: asyncio.Event, timeout: float) -> bool:
        deadline = self._now + timeout
        waiter = asyncio.ensure_future(event.wait())
        sleeper = asyncio.ensure_future(self.sleep(max(0.0, deadline - self._now)))
        done, pending = await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        return waiter in done


class InstantClock(ManualClock):
    """A manual clock whose sleeps return at once (retries inside a simulation)."""

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)


def _in_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
