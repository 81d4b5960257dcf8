"""Extra scale signals from Prometheus: every pool's PromQL ``signals:``, polled over HTTP.

Gear density is not the only sign a pool needs room: a queue of builds, memory pressure on
the nodes, or the PaaS broker's own latency can say so first. A pool lists such signals in
its policy (``signals: [{name, query, scale_up_above, scale_down_below, on_error, timeout,
stale_after}]``); this source evaluates each query with an instant query
(``POST /api/v1/query``) every ``prometheus.interval`` and hands the reconciler the latest
``model.Signal`` per pool and name.

What a value means and what a missing one does is the planner's business
(``decide.planner._read_signals``): a value above ``scale_up_above`` asks for nodes, one at
or above ``scale_down_below`` forbids scale-in, and a signal with no value, or one observed
longer than ``stale_after`` ago, is *unavailable*: ``on_error: hold`` then freezes scale-in,
``on_error: ignore`` carries on without it.

A failed query (unreachable, HTTP error, PromQL error, timed out after the signal's
``timeout``, an empty result, a NaN or infinite value) does not wipe the last good value:
it keeps it with the time it was observed, so a blip is ridden out and a lasting failure
turns into "stale" once ``stale_after`` has passed. A signal that never had a good value
is reported with ``value=None``. A result with several series counts as its largest value
(the cautious reading for both thresholds). Queries run concurrently, at most
``MAX_CONCURRENT`` at a time; a signal that crosses ``scale_up_above`` wakes the
reconciler at once.
"""

from __future__ import annotations

import asyncio
import json
import math
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

from gearshift.clock import Clock, SystemClock
from gearshift.errors import SignalQueryFailed
from gearshift.metrics import Metrics
from gearshift.model import Signal
from gearshift.policy.schema import PolicySet, SignalSpec
from gearshift.settings import PrometheusSettings

log = structlog.get_logger(component="gearshift.prometheus")

MAX_CONCURRENT = 8
MAX_RESPONSE = 4 << 20


def read_value(body: Any) -> float:
    """The number an instant-query response holds (the largest, for several series)."""
    if not isinstance(body, dict) or body.get("status") != "success":
        error = body.get("error", "unknown error") if isinstance(body, dict) else "not JSON"
        raise SignalQueryFailed("error", str(error)[:200])
    data = body.get("data")
    if not isinstance(data, dict):
        raise SignalQueryFailed("error", "no data in the response")
    kind, result = data.get("resultType"), data.get("result")
    samples: list[Any]
    if kind in ("scalar", "string"):
        samples = [result]
    elif kind == "vector" and isinstance(result, list):
        samples = [series.get("value") for series in result if isinstance(series, dict)]
    else:
        raise SignalQueryFailed("error", f"result type {kind!r} is not an instant vector or scalar")
    values = []
    for sample in samples:
        try:
            values.append(float(sample[1]))
        except (TypeError, ValueError, IndexError) as exc:
            raise SignalQueryFailed("error", f"bad sample {str(sample)[:60]}") from exc
    if not values:
        raise SignalQueryFailed("no_data", "the query returned no series")
    value = max(values)
    if not math.isfinite(value):
        raise SignalQueryFailed("not_finite", f"value is {value}")
    return value


@dataclass
class _Latest:
    value: float | None = None
    observed_at: float | None = None
    above: bool = False


class PrometheusSignalSource:
    """Polls every pool's signals; ``signals()`` is what the reconciler's snapshot takes."""

    def __init__(self, settings: PrometheusSettings, policies: Callable[[], PolicySet], *,
                 clock: Clock | None = None, metrics: Metrics | None = None,
                 on_edge: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.policies = policies
        self.clock = clock or SystemClock()
        self.metrics = metrics
        self.on_edge = on_edge
        self.url = settings.url.rstrip("/") + "/api/v1/query"
        self._latest: dict[tuple[str, str], _Latest] = {}
        self._session: aiohttp.ClientSession | None = None
        self._ssl: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(settings.ca_file))
            if settings.ca_file is not None else True)
        self.polls = 0

    def specs(self) -> list[tuple[str, SignalSpec]]:
        return [(pool.name, spec) for pool in self.policies().pools for spec in pool.signals]

    def signals(self) -> list[Signal]:
        """The latest reading of every signal the current policies define."""
        out = []
        for pool, spec in self.specs():
            latest = self._latest.get((pool, spec.name), _Latest())
            out.append(Signal(pool=pool, name=spec.name, value=latest.value,
                              observed_at=latest.observed_at))
        return out

    def _headers(self) -> dict[str, str]:
        if self.settings.token_file is None:
            return {}
        try:
            token = self.settings.token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:  # a failed query, not a dead task
            raise SignalQueryFailed("error", f"cannot read the token file: "
                                             f"{exc.__class__.__name__}") from exc
        return {"Authorization": f"Bearer {token}"}

    async def _query(self, session: aiohttp.ClientSession, spec: SignalSpec) -> float:
        form = {"query": spec.query, "timeout": f"{spec.timeout:g}s"}
        headers = self._headers()
        try:
            async with asyncio.timeout(spec.timeout):
                async with session.post(self.url, data=form, headers=headers,
                                        ssl=self._ssl) as response:
                    raw = await response.content.read(MAX_RESPONSE + 1)
                    if len(raw) > MAX_RESPONSE:
                        raise SignalQueryFailed("error", "response too large")
                    try:
                        body = json.loads(raw)
                    except ValueError as exc:
                        raise SignalQueryFailed("error", f"HTTP {response.status}, not JSON") from exc
                    if response.status >= 400 and not isinstance(body, dict):
                        raise SignalQueryFailed("error", f"HTTP {response.status}")
                    return read_value(body)
        except TimeoutError as exc:
            raise SignalQueryFailed("timeout", f"no answer within {spec.timeout:g}s") from exc
        except aiohttp.ClientError as exc:
            raise SignalQueryFailed("unreachable", str(exc)[:200]) from exc

    async def _poll_one(self, session: aiohttp.ClientSession, pool: str, spec: SignalSpec,
                        limit: asyncio.Semaphore) -> None:
        key = (pool, spec.name)
        latest = self._latest.setdefault(key, _Latest())
        async with limit:
            try:
                value = await self._query(session, spec)
            except SignalQueryFailed as exc:
                outcome = exc.outcome
                log.warning("signal query failed; keeping the last good value until it is "
                            "stale", pool=pool, signal=spec.name, outcome=exc.outcome,
                            detail=exc.detail, last_value=latest.value)
            else:
                outcome = "ok"
                latest.value, latest.observed_at = value, self.clock.now()
        if self.metrics is not None:
            self.metrics.signal_queries.labels(pool, spec.name, outcome).inc()
            self.metrics.signal_value.labels(pool, spec.name).set(
                math.nan if latest.value is None else latest.value)
        above = (latest.value is not None and spec.scale_up_above is not None
                 and latest.value > spec.scale_up_above)
        if above != latest.above:
            latest.above = above
            if self.on_edge is not None:
                self.on_edge(f"signal {spec.name} of pool {pool} "
                             f"{'above' if above else 'back under'} {spec.scale_up_above:g}")

    async def poll_once(self) -> list[Signal]:
        """Query every signal once (concurrently); the readings afterwards."""
        session = self._session
        owned = session is None
        if session is None:
            session = aiohttp.ClientSession()
        try:
            limit = asyncio.Semaphore(MAX_CONCURRENT)
            specs = self.specs()
            await asyncio.gather(*(self._poll_one(session, pool, spec, limit)
                                   for pool, spec in specs))
            live = {(pool, spec.name) for pool, spec in specs}
            for gone in set(self._latest) - live:  # a signal removed by a policy reload
                del self._latest[gone]
        finally:
            if owned:
                await session.close()
        self.polls += 1
        return self.signals()

    async def run(self, stop: asyncio.Event) -> None:
        """Poll every ``interval`` until ``stop``."""
        async with aiohttp.ClientSession() as session:
            self._session = session
            try:
                while not stop.is_set():
                    await self.poll_once()
                    try:
                        async with asyncio.timeout(self.settings.interval):
                            await stop.wait()
                    except TimeoutError:
                        pass
            finally:
                self._session = None
