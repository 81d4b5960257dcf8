"""Long-lived tasks that never die silently: a crash is logged, counted and restarted.

``supervise`` runs each coroutine factory until ``stop`` is set; if one raises, the
error is logged with its traceback and the task restarts after a back-off (doubling up
to a minute, reset after a long healthy run). The back-off runs in real time, not through
``Clock``: it paces restarts after real faults, which a manual clock would not let pass.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger(component="gearshift.supervisor")

TaskFactory = Callable[[asyncio.Event], Awaitable[None]]


async def _guard(name: str, factory: TaskFactory, stop: asyncio.Event,
                 restarts: dict[str, int]) -> None:
    backoff = 1.0
    while not stop.is_set():
        started = time.monotonic()
        try:
            await factory(stop)
            if stop.is_set():
                return
            log.warning("task ended on its own; restarting", task=name)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("task crashed; restarting", task=name, retry_in=backoff)
        restarts[name] = restarts.get(name, 0) + 1
        if time.monotonic() - started > 300:
            backoff = 1.0
        try:
            async with asyncio.timeout(backoff):
                await stop.wait()
        except TimeoutError:
            pass
        backoff = min(backoff * 2, 60.0)


async def supervise(tasks: dict[str, TaskFactory], stop: asyncio.Event) -> dict[str, int]:
    """Run every task until ``stop``; returns how often each was restarted."""
    restarts: dict[str, int] = {}
    await asyncio.gather(*(_guard(name, factory, stop, restarts)
                           for name, factory in tasks.items()))
    return restarts
