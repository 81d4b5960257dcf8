"""How the simulated stand-in for a provider behaves: a ``Providers`` file's
``simulation:`` block, read only by ``simulate`` and ``demo``."""

from __future__ import annotations

from pydantic import Field

from gearshift.durations import Duration
from gearshift.policy.strict import Strict


class SimulationSpec(Strict):
    """How the simulated stand-in for this provider behaves in ``simulate`` and ``demo``."""

    boot_time: Duration | None = None  # default: the provider's boot_time
    boot_jitter: Duration = 0.0
    failure_rate: float = Field(0.0, ge=0, le=1)
    capacity_errors_after: int | None = Field(None, ge=0)  # creates before capacity runs out
    capacity_recovers_after: Duration | None = None  # capacity returns this long after
    # The provider's real quota when it is lower than the file says (another tenant uses
    # the rest): creates beyond it fail with a quota error.
    quota_max_nodes: int | None = Field(None, ge=0)
    # A stopped machine started again is ready after this (plus up to resume_jitter);
    # default: a full boot_time, as nothing says resuming is faster.
    resume_time: Duration | None = None
    resume_jitter: Duration = 0.0
