"""A placement's warm pool setting (``warm:``): how many stopped machines it keeps.

Apart from ``policy.schema`` as ``predictive`` is: one setting, its own checks. What the
planner does with it is in ``decide.warm``.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from gearshift.durations import Duration
from gearshift.policy.strict import Strict, max_not_below_min


class WarmPool(Strict):
    """Stopped machines a placement keeps to resume instead of creating new ones: a
    scale-in parks a drained node (up to ``max``) rather than destroying it; one parked
    longer than ``max_idle`` is destroyed unless that would leave fewer than ``min``."""

    min: int = Field(0, ge=0)
    max: int = Field(ge=1, le=1000)
    max_idle: Duration = 86400.0

    _max_not_below_min = field_validator("max")(max_not_below_min)
