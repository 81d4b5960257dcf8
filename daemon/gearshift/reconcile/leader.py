"""Leadership: only the instance holding the journal's leader lease acts.

``Leadership.run`` keeps trying to take the lease (every ``poll``) while a follower, and
renews it (every ``renew``) while leader. The lease's fencing token is handed to the
journal, which then refuses any write carrying an older token, so a leader that lost
the lease without noticing (paused, partitioned) cannot record, and therefore cannot
start, anything. It steps down at once when a renewal says the lease moved on, when a
journal write is refused (``Fenced``), or when it could not renew for most of the
lease's life (the database is unreachable: better idle than unsure).

``lead`` is the loop's life cycle around it: wait until the fact source has caught up;
as follower, evaluate pools read-only every interval so ``/v1/status`` stays useful
(``"leader": false``, with the pools the leader paused); on election, run recovery, read
back what the journal remembers (paused pools, preemptions in flight), then reconcile
until stopped or deposed; then follow again.

On a graceful stop the leader releases the lease, so a follower takes over at once
instead of waiting for it to expire.

Lease timing (renew, poll, the renewal deadline) and the heartbeat use real time, not the
reconciler's ``Clock``: other processes and the database expire the lease in real time,
and the watchdog reads the heartbeat in real time. Only the reconcile interval goes
through ``Clock``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable

import structlog

from gearshift.errors import JournalError
from gearshift.metrics import Metrics
from gearshift.reconcile.reconciler import Reconciler
from gearshift.reconcile.recovery import Recovery
from gearshift.records import Leases

log = structlog.get_logger(component="gearshift.leader")

NOT_LEADER = -1  # the fencing token of an instance that never held the lease: never valid


def instance_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Leadership:
    def __init__(self, journal: Leases, *, holder: str | None = None, ttl: float = 10.0,
                 renew: float = 2.0, poll: float = 1.0, metrics: Metrics | None = None) -> None:
        self.journal = journal
        self.holder = holder or instance_name()
        self.ttl = ttl
        self.renew = renew
        self.poll = poll
        self.metrics = metrics
        self.token: int | None = None
        self.elected = asyncio.Event()
        self.deposed = asyncio.Event()
        self.elected_at: float | None = None
        self.terms = 0
        self._last_renewed = 0.0
        journal.fence(NOT_LEADER)  # a follower's writes are refused
        journal.on_fenced = self._fenced
        self._set_gauge()

    @property
    def is_leader(self) -> bool:
        return self.token is not None

    def _set_gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.leader.set(1 if self.is_leader else 0)
            self.metrics.journal_fenced_writes.inc(0)

    def _fenced(self) -> None:
        if self.metrics is not None:
            self.metrics.journal_fenced_writes.inc()
        if self.is_leader:
            self.step_down("a journal write was refused: another instance holds the lease")

    def _become(self, token: int) -> None:
        self.token = token
        self.terms += 1
        self.elected_at = time.time()
        self._last_renewed = time.monotonic()
        self.journal.fence(token)
        self.deposed.clear()
        self.elected.set()
        self._set_gauge()
        if self.metrics is not None:
            self.metrics.leader_changes.labels("leader").inc()
        log.warning("elected leader: acting from now on", holder=self.holder, token=token)

    def step_down(self, why: str) -> None:
        if not self.is_leader:
            return
        log.warning("stepping down: following from now on", holder=self.holder,
                    token=self.token, why=why)
        self.token = None
        self.journal.fence(NOT_LEADER)
        self.elected.clear()
        self.deposed.set()
        self._set_gauge()
        if self.metrics is not None:
            self.metrics.leader_changes.labels("follower").inc()

    async def _wait(self, seconds: float, stop: asyncio.Event) -> None:
        stopping = asyncio.create_task(stop.wait())
        deposed = asyncio.create_task(self.deposed.wait())
        try:
            await asyncio.wait({stopping, deposed}, timeout=seconds,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            deposed.cancel()

    async def try_acquire(self) -> bool:
        try:
            token = await self.journal.acquire_lease(self.holder, self.ttl)
        except JournalError as exc:
            log.warning("cannot reach the journal to take the lease", error=str(exc))
            return False
        if token is not None:
            self._become(token)
        return token is not None

    async def renew_once(self) -> None:
        token = self.token
        if token is None:
            return
        if self.journal.lease_ttl_matters and (
                time.monotonic() - self._last_renewed > self.ttl):
            # We were away longer than the lease lasts (paused, starved): it may be gone.
            self.step_down(f"lease not renewed for more than {self.ttl:g}s")
            return
        try:
            renewed = await self.journal.renew_lease(self.holder, token, self.ttl)
        except JournalError as exc:
            if (self.journal.lease_ttl_matters
                    and time.monotonic() - self._last_renewed > 0.75 * self.ttl):
                self.step_down(f"cannot renew the lease: {exc}")
            else:
                log.warning("lease renewal failed; retrying", error=str(exc))
            return
        if renewed and self.token == token:
            self._last_renewed = time.monotonic()
        elif not renewed:
            self.step_down("the lease was taken over by another instance")

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                if self.is_leader:
                    await self._wait(self.renew, stop)
                    if not stop.is_set():
                        await self.renew_once()
                elif not await self.try_acquire():
                    await self._wait(self.poll, stop)
        finally:
            await self.release()

    async def release(self, why: str = "stopping") -> None:
        """Step down and give the lease up, so another instance need not wait for it."""
        token = self.token
        if token is None:
            return
        self.step_down(why)
        try:
            await self.journal.release_lease(self.holder, token)
            log.info("lease released", holder=self.holder)
        except JournalError as exc:
            log.warning("could not release the lease; it expires by itself", error=str(exc))


async def _until(event: asyncio.Event, stop: asyncio.Event) -> None:
    waiters = {asyncio.create_task(event.wait()), asyncio.create_task(stop.wait())}
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def follow(reconciler: Reconciler, leadership: Leadership, stop: asyncio.Event) -> None:
    """Until elected: evaluate pools read-only so status and metrics stay meaningful.

    A follower's loop is alive too: it beats (``/healthz``, the systemd watchdog).
    """
    while not stop.is_set() and not leadership.is_leader:
        try:
            await reconciler.load_paused()
            plan = await reconciler.dry_run()
            reconciler.last_pools = plan.pools
            reconciler.last_plan = plan
            reconciler.last_success = reconciler.clock.now()
        except Exception:
            log.exception("read-only evaluation failed")
        reconciler.beat()
        elected = asyncio.create_task(leadership.elected.wait())
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({elected, stopping},
                               timeout=min(reconciler.interval,
                                           reconciler.heartbeat_every or reconciler.interval),
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            elected.cancel()
            stopping.cancel()


async def lead(*, reconciler: Reconciler, leadership: Leadership, recovery: Recovery,
               caught_up: Callable[[], Awaitable[object]], stop: asyncio.Event) -> None:
    """Follow until elected; then recover and reconcile until stopped or deposed."""
    await caught_up()
    while not stop.is_set():
        await follow(reconciler, leadership, stop)
        if stop.is_set():
            return
        term = asyncio.Event()
        relay = asyncio.create_task(_relay(term, stop, leadership.deposed))
        beating = asyncio.create_task(_beat(reconciler))  # recovery's calls are bounded
        try:
            try:
                await recovery.run(reason="start")
                await reconciler.restore()
            except JournalError as exc:
                # Acting without a journal is never safe: give the lease up, wait, try again.
                log.error("recovery failed: the journal is unusable; stepping down",
                          error=str(exc))
                await leadership.release("recovery could not use the journal")
                await reconciler.clock.wait_for(stop, reconciler.interval)
                continue
            finally:
                beating.cancel()
            await reconciler.run(term)
        finally:
            relay.cancel()
        if leadership.is_leader and not stop.is_set():
            leadership.step_down("the reconcile loop ended")


async def _beat(reconciler: Reconciler) -> None:
    while True:
        reconciler.beat()
        await asyncio.sleep(reconciler.heartbeat_every or reconciler.interval)


async def _relay(term: asyncio.Event, stop: asyncio.Event, deposed: asyncio.Event) -> None:
    await _until(deposed, stop)
    term.set()
