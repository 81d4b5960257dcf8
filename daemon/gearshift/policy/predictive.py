"""A pool's ``predictive:`` block: scaling ahead of the demand its own history forecasts.

``off`` (the default) changes nothing. ``forecast_only`` forecasts and says what it would
order (in the plan's pool summary and the ``gearshift_forecast_*`` metrics) without
acting: turn it on there first and compare the forecast with what happened. ``on``: the
pool's wanted slots are the larger of the reactive need and the need at the forecast for
*now + time-to-ready*, at most ``max_extra_nodes`` nodes beyond the reactive need, and
scale-in never leaves fewer slots than the forecast needs within ``horizon``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gearshift.durations import Duration

PredictiveMode = Literal["off", "forecast_only", "on"]


class Predictive(BaseModel):
    # As schema.Strict (which imports this module): unknown keys are errors.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    mode: PredictiveMode = "off"
    # How far ahead the forecast looks (and scale-in protects); the daemon stretches it to
    # the slowest placement's time-to-ready plus 5 minutes when shorter.
    horizon: Duration = 1800.0
    quantile: float = Field(0.9, ge=0.5, lt=1)  # the upper quantile planned for
    max_extra_nodes: int = Field(10, ge=0)  # nodes the forecast may add beyond the reactive need
    min_history: Duration = 2 * 86400.0  # no forecast before this much history is kept

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_on_off(cls, value: object) -> object:
        """``mode: on`` and ``mode: off`` as written: YAML reads a bare on/off as a bool."""
        if isinstance(value, bool):
            return "on" if value else "off"
        return value
