"""Operations in flight that the planner finishes: nodes that never came up, and machines
whose destroy failed.

A create whose node publishes no fresh facts within its provisioning timeout
(``max(minimum, boot time x factor)``, the boot time being the provider's measured
time-to-ready, else the configured one) is abandoned: its machine destroyed and its
provider backed off. Never while the fact source is down (silence proves nothing then),
never a node whose facts, stale as they are, show active gears. A retire whose destroy
failed is destroyed again. Both are planned actions with reasons, so they show in
``/v1/plan`` like every other change to the fleet; the executor carries them out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gearshift.model import Abandon, Action, DestroyAgain, ProviderStatus


@dataclass(frozen=True, slots=True)
class CreateInFlight:
    """A create the provider answered but whose node is not registered yet (or is being
    given up): what the planner needs to decide whether to wait for it."""

    op_id: str
    identity: str
    pool: str
    provider: str
    machine_id: str | None
    started_at: float
    abandoning: bool  # given up already; its destroy failed
    active_gears: int  # from its (stale) facts, if any: 0 when it has none


@dataclass(frozen=True, slots=True)
class RetireInFlight:
    """A retire whose machine destroy failed: the node is out of its district."""

    op_id: str
    identity: str
    pool: str
    provider: str
    machine_id: str | None


@dataclass(frozen=True)
class ProvisioningTimeouts:
    """How long a new node may stay silent before it is given up."""

    factor: float = 3.0  # x time-to-ready
    minimum: float = 120.0

    def timeout(self, boot_time: float | None) -> float:
        return max(self.minimum, (boot_time or 0.0) * self.factor)


@dataclass(frozen=True)
class InFlightPlan:
    actions: tuple[Action, ...]
    held: tuple[str, ...]  # never came up but report active gears: not retired


def plan_in_flight(*, creates: Sequence[CreateInFlight], retires: Sequence[RetireInFlight],
                   statuses: Mapping[str, ProviderStatus], now: float, facts_fresh: bool,
                   timeouts: ProvisioningTimeouts) -> InFlightPlan:
    """The abandons and destroys-again due at ``now`` (``statuses``: the providers known,
    with their boot times)."""
    actions: list[Action] = []
    held: list[str] = []
    for op in creates:
        status = statuses.get(op.provider)
        if status is None or op.machine_id is None:
            continue
        timeout = timeouts.timeout(status.boot_time)
        waited = now - op.started_at
        if not op.abandoning:
            if waited <= timeout:
                continue
            if not facts_fresh:
                continue  # while the fact source is down, silence proves nothing: wait
            if op.active_gears > 0:
                held.append(op.identity)
                continue
        actions.append(Abandon(
            pool=op.pool, identity=op.identity, provider=op.provider,
            machine_id=op.machine_id, op_id=op.op_id, timeout=timeout, waited=waited,
            resumed=op.abandoning,
            reason=(f"published no facts within {timeout:.0f}s (waited {waited:.0f}s): "
                    f"destroy it and back {op.provider} off")))
    for retire in retires:
        if retire.provider not in statuses or retire.machine_id is None:
            continue
        actions.append(DestroyAgain(
            pool=retire.pool, identity=retire.identity, provider=retire.provider,
            machine_id=retire.machine_id, op_id=retire.op_id,
            reason="retired (out of its district) but its machine's destroy failed: "
                   "destroy it again"))
    return InFlightPlan(actions=tuple(actions), held=tuple(held))
