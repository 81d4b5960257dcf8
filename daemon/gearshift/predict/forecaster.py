"""Each pool's demand history and forecast, kept by the leader (see ``predict``).

Demand is what the planner calls demand: active gears, gears on draining nodes and
requested gears, read from the plan's pool evaluations (``PoolEvaluation.demand_gears``:
reading the fleet again would cost about two thirds of a plan). Within a minute the
largest sample wins (an upper quantile is wanted, and a bucket may be written twice).
Once a minute the finished buckets are journaled and, for pools whose
``predictive.mode`` is not ``off``, the forecasts refitted: the central forecast every
minute (cheap), the model's error margin every ``margin_every`` (about a thousand
baselines a pool). Fitting runs in a thread
(``asyncio.to_thread``); a journal error is logged and retried next minute, never
raised into the reconcile loop, and a fit that fails drops every forecast (the pools
are reactive until the next fit succeeds) rather than stop the autoscaler.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

from gearshift.clock import Clock
from gearshift.decide.forecast_need import slowest_time_to_ready
from gearshift.errors import Fenced, JournalError
from gearshift.forecast.result import Forecast
from gearshift.forecast.seasonal import SeasonalModel
from gearshift.forecast.series import WEEK, DemandSeries
from gearshift.plan import PoolEvaluation
from gearshift.policy.schema import PolicySet, PoolPolicy
from gearshift.records import DemandHistory, DemandSample

log = structlog.get_logger(component="gearshift.predict")

KEEP_MINUTES = 5 * WEEK  # history kept (journal and memory): four weeks looked back, plus one
READY_MARGIN = 300.0  # the horizon covers at least the slowest time-to-ready plus this


def horizon_minutes(policy: PoolPolicy, policies: PolicySet) -> int:
    """Minutes forecast: the policy's horizon, at least the slowest time-to-ready + margin."""
    ready = (slowest_time_to_ready(policy, policies.providers, {})
             if policies.providers is not None else 0.0)
    return math.ceil(max(policy.predictive.horizon, ready + READY_MARGIN) / 60)


@dataclass
class _Margin:
    value: float
    at: float
    key: tuple[float, int]  # (quantile, horizon minutes) it was measured for


class Forecaster:
    def __init__(self, history: DemandHistory, *, policies: Callable[[], PolicySet],
                 clock: Clock, model: SeasonalModel | None = None,
                 margin_every: float = 3600.0, in_thread: bool = True) -> None:
        self.history = history
        self.policies = policies
        self.clock = clock
        self.model = model or SeasonalModel()
        self.margin_every = margin_every
        self.in_thread = in_thread
        self.series: dict[str, DemandSeries] = {}
        self.current: dict[str, Forecast] = {}
        self._unsaved: dict[tuple[str, int], int] = {}
        self._margins: dict[str, _Margin] = {}
        self._last_minute: int | None = None
        self._last_prune: int | None = None

    def forecasts(self) -> tuple[Forecast, ...]:
        """The forecasts the planner is handed with the snapshot."""
        return tuple(self.current.values())

    async def load(self) -> None:
        """Read the kept history back (on taking office: a restart or a failover)."""
        since = int(self.clock.now() // 60) - KEEP_MINUTES
        samples = await self.history.demand_since(minute=since)
        by_pool: dict[str, list[tuple[int, int]]] = {}
        for s in samples:
            by_pool.setdefault(s.pool, []).append((s.minute, s.gears))
        self.series = {pool: DemandSeries.from_buckets(b) for pool, b in by_pool.items()}
        self.current.clear()
        self._margins.clear()
        log.info("demand history loaded", pools=len(self.series), buckets=len(samples))

    def observe(self, at: float, pools: Mapping[str, PoolEvaluation]) -> None:
        """Sample each pool's demand from a plan's evaluations (after a reconcile)."""
        minute = int(at // 60)
        for pool, evaluation in pools.items():
            gears = evaluation.demand_gears
            self.series.setdefault(pool, DemandSeries(minute)).put(minute, gears)
            key = (pool, minute)
            self._unsaved[key] = max(gears, self._unsaved.get(key, gears))

    async def tick(self) -> None:
        """Once a minute: journal the finished buckets, prune, refit (before a reconcile)."""
        now = self.clock.now()
        minute = int(now // 60)
        if self._last_minute == minute:
            return
        self._last_minute = minute
        await self._save(minute)
        await self._refit(now)

    async def _save(self, minute: int) -> None:
        done = {k: v for k, v in self._unsaved.items() if k[1] < minute}
        try:
            if done:
                await self.history.record_demand(
                    [DemandSample(pool=p, minute=m, gears=g) for (p, m), g in sorted(done.items())])
            if self._last_prune is None or minute - self._last_prune >= 60:
                await self.history.prune_demand(before_minute=minute - KEEP_MINUTES)
                for series in self.series.values():
                    series.drop_before(minute - KEEP_MINUTES)
                self._last_prune = minute
        except (JournalError, Fenced) as exc:
            log.warning("demand history not saved: retrying next minute", error=str(exc))
            return
        for key in done:
            del self._unsaved[key]

    async def _refit(self, now: float) -> None:
        policies = self.policies()
        wanted = [(p, horizon_minutes(p, policies)) for p in policies.pools
                  if p.predictive.mode != "off"]
        for name in set(self.current) - {p.name for p, _ in wanted}:
            del self.current[name]
        if not wanted:
            return
        try:
            if self.in_thread:
                fitted = await asyncio.to_thread(self._fit_all, wanted, now)
            else:
                fitted = self._fit_all(wanted, now)
        except Exception:  # a forecasting bug must not stop the autoscaler
            log.exception("forecast failed: pools are reactive until the next fit")
            self.current.clear()
            return
        for name, made in fitted.items():
            if made is None:
                self.current.pop(name, None)
            else:
                self.current[name] = made

    def _fit_all(self, wanted: list[tuple[PoolPolicy, int]], now: float
                 ) -> dict[str, Forecast | None]:
        out: dict[str, Forecast | None] = {}
        for policy, minutes in wanted:
            series = self.series.get(policy.name)
            spec = policy.predictive
            if series is None or series.known() < spec.min_history / 60:
                out[policy.name] = None
                continue
            margin = self._margins.get(policy.name)
            key = (spec.quantile, minutes)
            if margin is None or now - margin.at >= self.margin_every or margin.key != key:
                margin = _Margin(self.model.margin(series, now=now, horizon_minutes=minutes,
                                                   q=spec.quantile), now, key)
                self._margins[policy.name] = margin
            out[policy.name] = self.model.forecast(series, pool=policy.name, now=now,
                                                   horizon_minutes=minutes, q=spec.quantile,
                                                   margin=margin.value)
        return out
