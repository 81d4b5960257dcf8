"""The pure decision layer: snapshot + policies + time in, a plan with reasons out.

Nothing here does I/O, reads a clock or imports asyncio; an import-linter contract in CI
keeps it that way, so every rule can be table-tested with plain values.
"""

from gearshift.decide.in_flight import (
    CreateInFlight,
    InFlightPlan,
    ProvisioningTimeouts,
    RetireInFlight,
    plan_in_flight,
)
from gearshift.decide.planner import plan

__all__ = ["CreateInFlight", "InFlightPlan", "ProvisioningTimeouts", "RetireInFlight", "plan",
           "plan_in_flight"]
