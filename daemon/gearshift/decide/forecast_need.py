"""Predictive scaling, the pure part: what a pool's demand forecast asks of its size.

The forecast (``forecast.Forecast``, fitted off the event loop and handed in with the
snapshot like any signal) says how many gears the pool will hold. Ordering takes
*time-to-ready* (the pool's slowest placement, measured when known), so what counts now
is the upper forecast for ``now + time_to_ready``, read with the reactive rule itself:
when that demand would put the pool above ``scale_up_above`` or inside its headroom, the
slots the reactive rule would then want (target density, headroom) become the pool's
wanted slots now, at most ``max_extra_nodes`` nodes beyond the reactive need. So the
forecast orders what the reactive rule will order anyway, only a boot earlier (wanting
the target density whenever the forecast was above it held about 30 % more nodes over
the diurnal week: bench/predictive.py). Scale-in keeps enough slots that the forecast's
peak within ``horizon`` would not trigger growth. ``forecast_only`` computes the same
and only says it. A forecast older than ``STALE_AFTER`` is not used: the fitter stopped.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from gearshift.decide.placement import time_to_ready, time_to_resume
from gearshift.durations import format_duration
from gearshift.forecast.result import Forecast
from gearshift.model import ProviderStatus
from gearshift.policy.schema import PoolPolicy, ProvidersFile

STALE_AFTER = 600.0  # seconds a forecast stays usable


@dataclass(frozen=True)
class Ahead:
    """What the forecast asks of one pool now."""

    acting: bool = False  # mode ``on`` with a usable forecast
    gears: float | None = None  # the upper forecast for now + time-to-ready, when usable
    want_gears: int = 0  # slots wanted for now + time-to-ready (capped); 0: no forecast
    hold_gears: int = 0  # slots scale-in must leave (the peak within the horizon)
    extra_nodes: int = 0  # nodes ordered (or, forecast_only, that would be) beyond capacity
    up: str | None = None  # the growth trigger, when acting and short of capacity
    note: str = ""  # for the pool's summary ("" when predictive is off)


_OFF = Ahead()  # predictive scaling off (most pools): one immutable answer for all


def gears(value: float) -> str:
    """1 450 (a thin space between thousands, as the reasons read)."""
    return f"{math.ceil(value):,}".replace(",", " ")


def slots_for(policy: PoolPolicy, demand: float) -> int:
    """Slots the pool wants for ``demand`` gears: the reactive rule (target, headroom)."""
    return max(math.ceil(demand / policy.density.target),
               math.ceil(demand) + policy.headroom_gears)


def trigger_slots(policy: PoolPolicy, demand: float) -> int:
    """The fewest slots at which ``demand`` gears would not make the pool grow."""
    return max(math.ceil(demand / policy.density.scale_up_above),
               math.ceil(demand) + policy.headroom_gears)


def slowest_time_to_ready(policy: PoolPolicy, providers: ProvidersFile,
                          statuses: Mapping[str, ProviderStatus], *,
                          parked: Collection[str] = ()) -> float:
    """The longest time-to-ready among the pool's placements (0 if none is known); on a
    provider where the pool has machines parked in a warm pool (``parked``), the time a
    parked machine takes to resume: that is what it orders there first."""
    times = [(time_to_resume if spec.name in parked else time_to_ready)(
                 spec, statuses.get(spec.name))
             for placement in policy.placement
             if (spec := providers.provider(placement.provider)) is not None]
    return max(times, default=0.0)


def ahead(policy: PoolPolicy, forecast: Forecast | None, *, now: float, ready_in: float,
          want_gears: int, capacity: int, per_node: int) -> Ahead:
    """What ``forecast`` asks of ``policy``'s pool at ``now``; see the module docstring.

    ``want_gears`` is the reactive need (slots), ``capacity`` the slots of active and
    booting nodes, ``per_node`` what one more node holds, ``ready_in`` time-to-ready.
    """
    spec = policy.predictive
    if spec.mode == "off":
        return _OFF
    mode = spec.mode
    if forecast is None:
        return Ahead(note=f"predictive {mode}: no forecast yet (history shorter than "
                          f"{format_duration(spec.min_history)} or too sparse)")
    if now - forecast.made_at > STALE_AFTER:
        return Ahead(note=f"predictive {mode}: forecast from "
                          f"{format_duration(round(now - forecast.made_at))} ago is stale: "
                          f"not used")
    at = now + ready_in
    expected = forecast.upper_at(at) or 0.0
    cap = want_gears + spec.max_extra_nodes * per_node
    need = slots_for(policy, expected) if capacity < trigger_slots(policy, expected) else 0
    wanted = min(need, cap)
    peak = forecast.peak(now, now + spec.horizon) or 0.0
    hold = min(trigger_slots(policy, peak), cap)
    extra = max(0, math.ceil((wanted - max(capacity, want_gears)) / max(per_node, 1)))
    label = (f"forecast p{round(forecast.quantile * 100)} {gears(expected)} gears at "
             f"{datetime.fromtimestamp(at, UTC):%H:%M}")
    capped = f" (capped: max_extra_nodes {spec.max_extra_nodes})" if need > cap else ""
    if extra:
        order = f"{extra} node{'s' if extra > 1 else ''} {format_duration(round(ready_in))} ahead"
        if mode == "forecast_only":
            return Ahead(gears=expected, want_gears=wanted, hold_gears=hold, extra_nodes=extra,
                         note=f"forecast_only: would order {order}: {label}{capped}")
        return Ahead(acting=True, gears=expected, want_gears=wanted, hold_gears=hold,
                     extra_nodes=extra, up=f"{label}; ordering {order}{capped}", note="")
    return Ahead(acting=mode == "on", gears=expected, want_gears=wanted, hold_gears=hold,
                 note=f"predictive {mode}: {label}: no extra nodes (peak {gears(peak)} gears "
                      f"within {format_duration(spec.horizon)})")
