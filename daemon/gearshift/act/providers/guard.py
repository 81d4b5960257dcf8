"""Retries, timeouts, a circuit breaker and capacity back-off around one provider.

* every call is bounded by ``call_timeout``; a timeout is a ``TransientError``;
* only transient errors are retried (tenacity: jittered exponential back-off, bounded by
  ``retry_deadline`` in total), through the clock, so simulations do not really wait;
* ``breaker_threshold`` failures in a row open the breaker for ``breaker_reset`` seconds,
  a permanent error (bad credentials, bad config) opens it at once; while open, placement
  skips the provider, and one trial call after the reset closes it again on success;
* a quota or capacity error backs the provider off for ``capacity_backoff`` seconds, so
  the rest of the nodes spill to the next placement at once;
* time-to-ready is measured by the executor and kept here as a moving average.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from gearshift.act.providers.base import CreateRequest, Provider, QuotaInfo
from gearshift.clock import Clock
from gearshift.errors import (
    CapacityUnavailable,
    NotFound,
    PermanentError,
    ProviderError,
    QuotaExceeded,
    TransientError,
)
from gearshift.metrics import Metrics
from gearshift.model import Machine, ProviderStatus

T = TypeVar("T")


@dataclass(frozen=True)
class GuardSettings:
    call_timeout: float = 120.0
    retry_deadline: float = 300.0
    retry_initial: float = 1.0
    retry_max: float = 30.0
    breaker_threshold: int = 5
    breaker_reset: float = 120.0
    capacity_backoff: float = 300.0


class GuardedProvider:
    """A provider as the executor uses it: safe to call, and honest about its health."""

    def __init__(self, provider: Provider, *, clock: Clock, metrics: Metrics | None = None,
                 settings: GuardSettings | None = None, boot_time: float | None = None) -> None:
        self.provider = provider
        self.name = provider.name
        self.clock = clock
        self.metrics = metrics
        self.settings = settings or GuardSettings()
        self.failures = 0
        self.open_until: float | None = None
        self.backoff_until: float | None = None
        self.backoff_reason = ""
        self.last_error: str | None = None
        self.boot_time = boot_time  # configured first, refined by measurements
        self.boot_samples = 0

    # -- health -----------------------------------------------------------------------
    def status(self) -> ProviderStatus:
        now = self.clock.now()
        why = None
        if self.open_until is not None and now < self.open_until:
            why = (f"circuit open after {self.failures} failure(s) "
                   f"({self.last_error or 'error'}); retry in {self.open_until - now:.0f}s")
        elif self.backoff_until is not None and now < self.backoff_until:
            why = f"backed off {self.backoff_until - now:.0f}s more: {self.backoff_reason}"
        if self.metrics is not None:
            self.metrics.provider_available.labels(self.name).set(0 if why else 1)
        return ProviderStatus(name=self.name, available=why is None, why_unavailable=why,
                              boot_time=self.boot_time)

    def note_time_to_ready(self, seconds: float) -> None:
        """Fold one measured create-to-first-facts time into the estimate."""
        self.boot_samples += 1
        if self.boot_time is None or self.boot_samples == 1:
            self.boot_time = seconds
        else:
            self.boot_time = 0.8 * self.boot_time + 0.2 * seconds
        if self.metrics is not None:
            self.metrics.provider_boot_seconds.labels(self.name).set(self.boot_time)

    def _record(self, op: str, outcome: str, started: float) -> None:
        if self.metrics is not None:
            self.metrics.provider_calls.labels(self.name, op, outcome).inc()
            self.metrics.provider_call_seconds.labels(self.name, op).observe(
                time.perf_counter() - started)

    def _failed(self, error: ProviderError) -> None:
        now = self.clock.now()
        self.last_error = error.kind
        if isinstance(error, QuotaExceeded | CapacityUnavailable):
            self.backoff_until = now + self.settings.capacity_backoff
            self.backoff_reason = f"{error.kind} error: {error.message}"
            return
        self.failures += 1
        if isinstance(error, PermanentError) or self.failures >= self.settings.breaker_threshold:
            self.open_until = now + self.settings.breaker_reset

    def _succeeded(self) -> None:
        self.failures = 0
        self.open_until = None

    # -- calls ------------------------------------------------------------------------
    async def _call(self, op: str, make: Callable[[], Awaitable[T]]) -> T:
        async def attempt() -> T:
            started = time.perf_counter()
            try:
                async with asyncio.timeout(self.settings.call_timeout):
                    result = await make()
            except TimeoutError as exc:
                self._record(op, "transient", started)
                raise TransientError(self.name, f"{op} timed out after "
                                                f"{self.settings.call_timeout:g}s") from exc
            except NotFound:
                self._record(op, "not_found", started)
                raise
            except ProviderError as exc:
                self._record(op, exc.kind, started)
                raise
            self._record(op, "ok", started)
            return result

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(TransientError),
            stop=stop_after_delay(self.settings.retry_deadline),
            wait=wait_exponential_jitter(initial=self.settings.retry_initial,
                                         max=self.settings.retry_max),
            sleep=self.clock.sleep,
            reraise=True,
        )
        try:
            result: T = await retrying(attempt)
        except NotFound:
            raise
        except ProviderError as exc:
            self._failed(exc)
            raise
        self._succeeded()
        return result

    async def create(self, request: CreateRequest) -> Machine:
        return await self._call("create", lambda: self.provider.create(request))

    async def destroy(self, machine_id: str) -> None:
        try:
            await self._call("destroy", lambda: self.provider.destroy(machine_id))
        except NotFound:
            return  # already gone is what we wanted

    async def list_owned(self) -> list[Machine]:
        return await self._call("list", self.provider.list_owned)

    async def quota(self) -> QuotaInfo:
        return await self._call("quota", self.provider.quota)

    async def close(self) -> None:
        await self.provider.close()
