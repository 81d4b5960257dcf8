"""Retries, timeouts, a circuit breaker and capacity back-off around one provider.

* every call is bounded by a timeout (the provider's own ``call_timeout`` when it declares
  one, since a vSphere clone legitimately waits on tasks; else ``call_timeout``); a timeout
  is a ``TransientError``;
* only transient errors are retried (tenacity: jittered exponential back-off), at most
  ``retry_attempts`` attempts and never past ``retry_deadline``, both measured on the
  injected clock, so a simulation neither really waits nor retries without end; a retry
  gets only what is left of the deadline as its timeout, so a call and its retries end
  within the longer of the first attempt's timeout and ``retry_deadline``;
* the breaker: ``breaker_threshold`` failed calls in a row open it for ``breaker_reset``
  seconds, a permanent error (bad credentials, bad config) opens it at once. While it is
  open every call fails at once with ``CircuitOpen`` (no request reaches the provider) and
  placement skips the provider. After the reset it is half-open: exactly one trial call
  goes through (others still fail fast); its success closes the breaker, its failure opens
  it again. A quota or capacity answer, a not-found answer and a success all prove the
  provider reachable and count as success for the breaker;
* a quota or capacity error backs the provider off for ``capacity_backoff`` seconds, so
  the rest of the nodes spill to the next placement at once;
* an exception that is not a ``ProviderError`` (a bug in a driver) is reported as a
  ``PermanentError`` naming its type, so one bad driver cannot crash the reconciler;
* time-to-ready is measured by the executor and kept here as a moving average; it reaches
  placement through ``status().boot_time``.

Every failed call is logged with its cause (``provider call failed``: the error's kind,
the driver's message, the underlying exception's class and, for a socket error, its text
such as "Connection refused"), and so is every retry; URL credentials are redacted and
drivers put no secrets in their messages.

Metrics: ``gearshift_provider_calls_total{provider,op,outcome}`` (outcome ``ok``,
``transient``, ``quota``, ``capacity``, ``permanent``, ``not_found``, ``circuit_open``;
one per attempt), ``gearshift_provider_call_seconds{provider,op}``,
``gearshift_provider_available`` and ``gearshift_provider_time_to_ready_seconds``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_exponential,
    wait_random,
)

from gearshift.act.providers.base import CreateRequest, Provider, QuotaInfo
from gearshift.clock import Clock
from gearshift.errors import (
    CapacityUnavailable,
    CircuitOpen,
    NotFound,
    PermanentError,
    ProviderError,
    QuotaExceeded,
    TransientError,
)
from gearshift.metrics import Metrics
from gearshift.model import Machine, ProviderStatus
from gearshift.redact import redact

T = TypeVar("T")
log = structlog.get_logger(component="gearshift.act.guard")


def cause(error: BaseException) -> str:
    """Why a call failed, secret-free: the message, then each chained exception's class
    and, for socket errors, the system's words ("Connection refused").

    Only class names and ``strerror`` of the chain are used, never their text (a library's
    message may quote a URL or a request); the provider's own message is built by the
    driver from names and statuses, and URL credentials are redacted anyway.
    """
    parts = [error.message if isinstance(error, ProviderError) else type(error).__name__]
    seen: set[int] = {id(error)}
    inner = error.__cause__ or error.__context__
    while inner is not None and id(inner) not in seen and len(seen) < 6:
        seen.add(id(inner))
        text = type(inner).__name__
        if isinstance(inner, OSError) and isinstance(inner.errno, int) and inner.errno > 0:
            text += f": {os.strerror(inner.errno)}"  # the system's words, no address
        parts.append(text)
        inner = inner.__cause__ or inner.__context__
    return redact(" <- ".join(parts))


@dataclass(frozen=True)
class GuardSettings:
    call_timeout: float = 120.0
    retry_deadline: float = 300.0
    retry_attempts: int = 6
    retry_initial: float = 1.0
    retry_max: float = 30.0
    breaker_threshold: int = 5
    breaker_reset: float = 120.0
    capacity_backoff: float = 300.0


@dataclass(frozen=True)
class BackOff:
    """A provider backed off after it refused capacity (or a node it made never came up):
    placement skips it ``until`` then, and demotes it a while after (``since``)."""

    until: float
    since: float  # when the back-off began
    reason: str


class GuardedProvider:
    """A provider as the executor uses it: safe to call, and honest about its health."""

    def __init__(self, provider: Provider, *, clock: Clock, metrics: Metrics | None = None,
                 settings: GuardSettings | None = None, boot_time: float | None = None) -> None:
        self.provider = provider
        self.name = provider.name
        self.clock = clock
        self.metrics = metrics
        self.settings = settings or GuardSettings()
        self.failures = 0  # failed calls in a row
        self.open_until: float | None = None
        self.trial_running = False
        self._backoff: BackOff | None = None
        self.last_error: str | None = None
        self.boot_time = boot_time  # configured first, refined by measurements
        self.boot_samples = 0
        self.resume_time: float | None = None  # measured only (the spec has the configured)
        self.resume_samples = 0

    @property
    def call_timeout(self) -> float:
        return self.provider.call_timeout or self.settings.call_timeout

    # -- health -----------------------------------------------------------------------
    def breaker(self) -> str:
        """``closed``, ``open`` or ``half-open``."""
        if self.open_until is None:
            return "closed"
        return "open" if self.clock.now() < self.open_until else "half-open"

    def status(self) -> ProviderStatus:
        now = self.clock.now()
        why = None
        if self.open_until is not None and now < self.open_until:
            why = (f"circuit open after {self.failures} failure(s) "
                   f"({self.last_error or 'error'}); retry in {self.open_until - now:.0f}s")
        elif self._backoff is not None and now < self._backoff.until:
            why = f"backed off {self._backoff.until - now:.0f}s more: {self._backoff.reason}"
        if self.metrics is not None:
            self.metrics.provider_available.labels(self.name).set(0 if why else 1)
        return ProviderStatus(name=self.name, available=why is None, why_unavailable=why,
                              boot_time=self.boot_time, resume_time=self.resume_time)

    @property
    def backoff(self) -> BackOff | None:
        """The latest back-off (it may be over: placement still demotes the provider)."""
        return self._backoff

    def back_off(self, *, reason: str, at: float | None = None) -> None:
        """Back this provider off for ``settings.capacity_backoff`` from ``at`` (now)."""
        since = self.clock.now() if at is None else at
        self._backoff = BackOff(until=since + self.settings.capacity_backoff, since=since,
                                reason=reason)

    def note_time_to_ready(self, seconds: float) -> None:
        """Fold one measured create-to-first-facts time into the estimate."""
        if seconds < 0:
            return
        self.boot_samples += 1
        if self.boot_time is None or self.boot_samples == 1:
            self.boot_time = seconds
        else:
            self.boot_time = 0.8 * self.boot_time + 0.2 * seconds
        if self.metrics is not None:
            self.metrics.provider_boot_seconds.labels(self.name).set(self.boot_time)

    def note_time_to_resume(self, seconds: float) -> None:
        """Fold one measured start-to-facts time of a parked machine into the estimate."""
        if seconds < 0:
            return
        self.resume_samples += 1
        self.resume_time = (seconds if self.resume_time is None or self.resume_samples == 1
                            else 0.8 * self.resume_time + 0.2 * seconds)

    def _record(self, op: str, outcome: str, started: float) -> None:
        if self.metrics is not None:
            self.metrics.provider_calls.labels(self.name, op, outcome).inc()
            self.metrics.provider_call_seconds.labels(self.name, op).observe(
                time.perf_counter() - started)

    def _reached(self) -> None:
        """The provider answered: the breaker closes."""
        self.failures = 0
        self.open_until = None

    def _failed(self, error: ProviderError, *, op: str, attempts: int) -> None:
        if not isinstance(error, CircuitOpen):
            log.warning("provider call failed", provider=self.name, op=op, error=error.kind,
                        cause=cause(error), attempts=attempts)
        now = self.clock.now()
        self.last_error = error.kind
        if isinstance(error, QuotaExceeded | CapacityUnavailable):
            self._reached()
            self.back_off(reason=f"{error.kind} error: {error.message}", at=now)
            return
        self.failures += 1
        if (isinstance(error, PermanentError) or self.failures >= self.settings.breaker_threshold
                or self.open_until is not None):  # a failed half-open trial reopens it
            self.open_until = now + self.settings.breaker_reset
            log.warning("circuit opened", provider=self.name, failures=self.failures,
                        error=error.kind, cause=cause(error),
                        reopen_in=self.settings.breaker_reset)

    def _admit(self, op: str) -> bool:
        """May a call go through now? Returns whether it is the half-open trial."""
        state = self.breaker()
        if state == "closed":
            return False
        if state == "half-open" and not self.trial_running:
            self.trial_running = True
            return True
        self._record(op, "circuit_open", time.perf_counter())
        assert self.open_until is not None
        wait = max(0.0, self.open_until - self.clock.now())
        raise CircuitOpen(self.name, f"{op} refused: circuit open after {self.failures} "
                                     f"failure(s) ({self.last_error or 'error'})"
                          + (f"; retry in {wait:.0f}s" if wait else "; a trial call is running"))

    # -- calls ------------------------------------------------------------------------
    async def _call(self, op: str, make: Callable[[], Awaitable[T]]) -> T:
        trial = self._admit(op)
        began = self.clock.now()
        attempts = 0

        async def attempt() -> T:
            nonlocal attempts
            attempts += 1
            timeout = self.call_timeout
            if attempts > 1:  # a retry: only what is left of the deadline
                timeout = min(timeout, self.settings.retry_deadline - (self.clock.now() - began))
                if timeout <= 0:
                    raise TransientError(self.name, f"{op}: retry deadline "
                                                    f"({self.settings.retry_deadline:g}s) spent")
            started = time.perf_counter()
            try:
                async with asyncio.timeout(timeout):
                    result = await make()
            except TimeoutError as exc:
                self._record(op, "transient", started)
                raise TransientError(self.name, f"{op} timed out after {timeout:g}s") from exc
            except ProviderError as exc:
                self._record(op, exc.kind, started)
                raise
            except Exception as exc:  # a driver bug: report it, never crash the caller
                self._record(op, "permanent", started)
                frame = exc.__traceback__
                while frame is not None and frame.tb_next is not None:
                    frame = frame.tb_next
                where = (f" at {frame.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:"
                         f"{frame.tb_lineno}" if frame is not None else "")
                log.error("provider bug", provider=self.name, op=op,
                          error=type(exc).__name__, where=where.strip())
                raise PermanentError(self.name, f"{op} failed: unexpected "
                                                f"{type(exc).__name__}{where}") from None
            self._record(op, "ok", started)
            return result

        def give_up(state: RetryCallState) -> bool:
            if state.attempt_number >= self.settings.retry_attempts:
                return True
            spent = self.clock.now() - began
            return spent + getattr(state, "upcoming_sleep", 0.0) > self.settings.retry_deadline

        async def again(first: TransientError) -> T:
            """The retries after a first attempt that failed with ``first``: tenacity's
            loop, its attempt 1 being that one (raised again, not made again)."""
            replay: TransientError | None = first

            async def next_attempt() -> T:
                nonlocal replay
                if replay is not None:
                    failed, replay = replay, None
                    raise failed
                return await attempt()

            retrying = AsyncRetrying(
                retry=retry_if_exception_type(TransientError),
                stop=give_up,
                # exponential from retry_initial up to retry_max, plus up to retry_initial of jitter
                wait=(wait_exponential(multiplier=self.settings.retry_initial,
                                       max=self.settings.retry_max)
                      + wait_random(0, self.settings.retry_initial)),
                sleep=self.clock.sleep,
                before_sleep=lambda state: self._retrying(op, state),
                reraise=True,
            )
            return await retrying(next_attempt)

        try:
            # The first attempt outside tenacity: most calls succeed at once, and its loop
            # cost more than a simulated provider's answer (a sweep lists every provider).
            try:
                result: T = await attempt()
            except TransientError as first:
                result = await again(first)
        except NotFound:
            self._reached()
            raise
        except ProviderError as exc:
            self._failed(exc, op=op, attempts=attempts)
            raise
        finally:
            if trial:
                self.trial_running = False
        self._reached()
        return result

    def _retrying(self, op: str, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        log.info("provider call failed: retrying", provider=self.name, op=op,
                 attempt=state.attempt_number, error=getattr(error, "kind", None),
                 cause=cause(error) if isinstance(error, BaseException) else None,
                 retry_in=round(getattr(state, "upcoming_sleep", 0.0), 2))

    async def create(self, request: CreateRequest) -> Machine:
        return await self._call("create", lambda: self.provider.create(request))

    async def destroy(self, machine_id: str) -> None:
        try:
            await self._call("destroy", lambda: self.provider.destroy(machine_id))
        except NotFound:
            return  # already gone is what we wanted

    async def list_owned(self) -> list[Machine]:
        return await self._call("list", self.provider.list_owned)

    async def stop(self, machine_id: str) -> None:
        """Power a machine off, keeping its disk. Unlike destroy, an unknown machine is
        ``NotFound`` to the caller (there is nothing to resume later)."""
        await self._call("stop", lambda: self.provider.stop(machine_id))

    async def start(self, machine_id: str) -> None:
        await self._call("start", lambda: self.provider.start(machine_id))

    async def quota(self) -> QuotaInfo:
        return await self._call("quota", self.provider.quota)

    async def close(self) -> None:
        await self.provider.close()
