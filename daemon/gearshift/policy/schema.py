"""The shape of the files SREs edit: ``kind: Pool`` policies and the ``kind: Providers`` file.

Pydantic models with ``extra="forbid"``, so a misspelt key is an error rather than a
silently ignored setting. Checks that relate two fields of one block live on the later
field, so the error points at the line an SRE has to change. Checks that relate two
files (placements naming providers and blueprints) live in ``policy.loader``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
)

from gearshift.durations import Duration
from gearshift.model import NodeFacts
from gearshift.policy.cron import parse_cron, parse_timezone
from gearshift.policy.predictive import Predictive
from gearshift.policy.pricing import cheapest_slot
from gearshift.policy.share import NodeCount
from gearshift.policy.simulation_spec import SimulationSpec
from gearshift.policy.strict import Strict, max_not_below_min
from gearshift.policy.warm import WarmPool

API_VERSION = "gearshift/v1"

# Sample limits from OpenShift's resource_limits.conf, used when a blueprint says nothing.
DEFAULT_MAX_ACTIVE_GEARS = {"small": 60, "medium": 30, "large": 15}


Name = Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9_.-]{0,62}[a-z0-9])?$")]



class Selector(Strict):
    node_profile: str
    district: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)

    def matches(self, facts: NodeFacts) -> bool:
        """Does a node with these facts belong to the pool?"""
        if facts.node_profile != self.node_profile:
            return False
        if self.district is not None and facts.district_uuid != self.district:
            return False
        return all(facts.labels.get(k) == v for k, v in self.labels.items())


class SizeLimits(Strict):
    min: int = Field(ge=0)
    max: int = Field(ge=1)

    _max_not_below_min = field_validator("max")(max_not_below_min)


class DensityBand(Strict):
    scale_up_above: float = Field(0.80, gt=0, le=1)
    scale_down_below: float = Field(0.45, ge=0, lt=1)
    target: float = Field(0.65, gt=0, le=1)

    @field_validator("scale_down_below")
    @classmethod
    def _down_below_up(cls, value: float, info: ValidationInfo) -> float:
        up = info.data.get("scale_up_above")
        if up is not None and value >= up:
            raise ValueError(f"scale_down_below ({value}) must be below scale_up_above ({up})")
        return value

    @field_validator("target")
    @classmethod
    def _target_inside_band(cls, value: float, info: ValidationInfo) -> float:
        up, down = info.data.get("scale_up_above"), info.data.get("scale_down_below")
        if up is not None and down is not None and not down < value < up:
            raise ValueError(
                f"target ({value}) must lie between scale_down_below ({down}) and "
                f"scale_up_above ({up}), or the pool would flap"
            )
        return value


class StepLimits(Strict):
    max_up: int = Field(5, ge=1)
    max_down: int = Field(2, ge=1)


class Cooldown(Strict):
    up: Duration = 60.0
    down: Duration = 600.0


class Stabilization(Strict):
    up: Duration = 0.0
    down: Duration = 900.0


MAX_SCHEDULE_DURATION = 366 * 86400


class Schedule(Strict):
    """Raise the pool's floor to ``min`` for ``duration`` after every cron fire time."""

    cron: str
    duration: Duration
    timezone: str = "UTC"
    min: int = Field(ge=0)

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        parse_cron(value)
        return value

    @field_validator("duration")
    @classmethod
    def _duration_within_a_year(cls, value: float) -> float:
        if not 0 < value <= MAX_SCHEDULE_DURATION:
            raise ValueError("duration must be more than 0s and at most 366d")
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_zone(cls, value: str) -> str:
        parse_timezone(value)
        return value


ScaleInStrategy = Literal["costliest_per_slot", "fewest_gears", "oldest", "newest",
                          "costliest_first"]


class ProportionalScaleIn(Strict):
    """Shrink faster when the excess is large, not as if every excess were a wobble.

    When the pool's active slots are at least ``above`` times the slots it wants (its
    target density and headroom), a scale-in step may drain up to half the excess nodes
    (instead of ``step.max_down``) and the down cooldown is divided by that ratio.
    Stabilisation, the floor, the drain budgets (``max_concurrent_drains``, disruption
    budgets) and the drain rules still apply; after a drain that ran out of time the full
    cooldown does too.
    """

    enabled: bool = True
    above: float = Field(2.0, gt=1)


class ScaleIn(Strict):
    # costliest_per_slot: the dearest capacity first (cost per hour over active-gear
    # slots), ties by the fewest gears to move; on one provider it is fewest_gears.
    strategy: ScaleInStrategy = "costliest_per_slot"
    drain_timeout: Duration = 1200.0
    # Nodes draining at once for scale-in (and the pool's disruption budget by default):
    # a number, or a share of the pool's nodes ("10%": rounded up, at least one). Unset
    # (or null): the larger of 2 and 10% (policy.share.nodes_of).
    max_concurrent_drains: NodeCount | None = None
    # What a drain past its deadline does: reactivate the node (safe), or retire it anyway
    # provided it holds no active gears (idle and stopped gears are then lost).
    on_drain_timeout: Literal["reactivate", "retire"] = "reactivate"
    proportional: ProportionalScaleIn = ProportionalScaleIn()


class Urgency(Strict):
    """When a pool is full *now*, time-to-ready beats price for the nodes that relieve it.

    The pool is urgent when its active density (demand, unplaced gears reported by the
    broker included, over the capacity of its active nodes, booting ones not counted: they
    are not here yet) is at or above ``full_at``. The nodes needed to bring it back under
    ``scale_up_above`` then go first to the placements ready within ``max_wait``, in the
    policy's order (a placement overtakes a more preferred one when it is ready at least
    ``min_time_saved`` sooner; burst-only ones last); what those cannot cover goes to the
    remaining placements fastest first, burst-only ones included. Rebalancing brings the
    nodes back to cheaper placements later. ``max_wait: null`` keeps burst-only placements
    last whatever their speed.
    """

    enabled: bool = True
    full_at: float = Field(0.95, gt=0, le=2)
    min_time_saved: Duration = 60.0
    max_wait: Duration | None = 180.0


class BurstReturnPolicy(Strict):
    """Replace nodes on burst-only placements by nodes on a preferred one when it has room.

    Make-before-break: the replacement is made first, the burst node is drained only once
    the pool would not be under pressure without it, then retired. Anti-churn guards: a
    burst node younger than ``min_node_lifetime`` is kept, a swap saving less than
    ``min_savings_per_hour`` per node is not made, the pool must not have grown for
    ``stable_for``, and a swap whose replacement did not come up within
    ``replace_timeout`` pauses returns for ``retry_after``.
    """

    enabled: bool = True
    min_node_lifetime: Duration = 1800.0
    min_savings_per_hour: float = Field(0.05, ge=0)
    stable_for: Duration = 600.0
    max_concurrent: int = Field(2, ge=1)
    replace_timeout: Duration = 1800.0
    retry_after: Duration = 1800.0


class ConsolidationPolicy(Strict):
    """Replace nodes on a placement whose active-gear slots cost more by nodes on a
    cheaper one of the same pool, once it has room (``decide.consolidate``).

    The same make-before-break as burst-and-return, for every placement that is not
    burst-only: a node is replaced only when its slots cost at least
    ``min_savings_per_hour`` more than the same slots on the cheaper placement, it is
    older than ``min_node_lifetime``, the pool is calm (not under pressure, not shrinking,
    nothing booting) and has not grown for ``stable_for``. Burst-only nodes keep their
    own guards (``burst_return``).
    """

    enabled: bool = True
    min_node_lifetime: Duration = 1800.0
    min_savings_per_hour: float = Field(0.02, ge=0)
    stable_for: Duration = 900.0
    max_concurrent: int = Field(2, ge=1)
    replace_timeout: Duration = 1800.0
    retry_after: Duration = 1800.0


class DisruptionBudget(Strict):
    """At most ``max_draining`` nodes draining at once, for any reason (scale-in,
    preemption, burst-and-return). On a pool, unset means ``scale_in.max_concurrent_drains``;
    on a provider, unset means no limit."""

    max_draining: int | None = Field(None, ge=1)


class Placement(Strict):
    provider: Name
    blueprint: Name
    max_nodes: int | None = Field(None, ge=0)
    burst_only: bool = False
    warm: WarmPool | None = None


class SignalSpec(Strict):
    """An extra scale signal from Prometheus: one PromQL query compared with thresholds."""

    name: Name
    query: str = Field(min_length=1)
    scale_up_above: float | None = None
    scale_down_below: float | None = None
    on_error: Literal["ignore", "hold"] = "hold"
    timeout: Duration = 5.0
    stale_after: Duration = 120.0

    @field_validator("scale_down_below")
    @classmethod
    def _down_below_up(cls, value: float | None, info: ValidationInfo) -> float | None:
        up = info.data.get("scale_up_above")
        if value is not None and up is not None and value >= up:
            raise ValueError(f"scale_down_below ({value}) must be below scale_up_above ({up})")
        return value


class PoolPolicy(Strict):
    """One ``kind: Pool`` document: the unit gearshift scales."""

    api_version: Literal["gearshift/v1"] = Field(alias="apiVersion")
    kind: Literal["Pool"]
    name: Name
    priority: int = 0
    selector: Selector
    size: SizeLimits
    density: DensityBand = DensityBand()
    headroom_gears: int = Field(0, ge=0)
    step: StepLimits = StepLimits()
    cooldown: Cooldown = Cooldown()
    stabilization: Stabilization = Stabilization()
    schedules: list[Schedule] = Field(default_factory=list)
    scale_in: ScaleIn = ScaleIn()
    preemptible: bool = False
    placement: list[Placement] = Field(min_length=1)
    signals: list[SignalSpec] = Field(default_factory=list)
    urgency: Urgency = Urgency()
    burst_return: BurstReturnPolicy = BurstReturnPolicy()
    consolidation: ConsolidationPolicy = ConsolidationPolicy()
    disruption_budget: DisruptionBudget = DisruptionBudget()
    predictive: Predictive = Predictive()


class Quota(Strict):
    max_nodes: int = Field(ge=0)


ProviderKind = Literal["redfish", "foreman", "vsphere", "ovirt", "ec2", "simulated"]


class ProviderSpec(Strict):
    name: Name
    kind: ProviderKind
    quota: Quota
    cost_per_hour: float = Field(0.0, ge=0)
    boot_time: Duration = 300.0
    # A stopped machine of a warm pool started again, until its first facts (power-on
    # without reprovisioning); unset: the boot time. Measured resumes refine it.
    resume_time: Duration | None = None
    # What a stopped machine of a warm pool still costs (its disk, a reserved address):
    # the simulator bills it, the planner names it in its reasons. At most cost_per_hour.
    stopped_cost_per_hour: float = Field(0.0, ge=0)
    settings: dict[str, Any] = Field(default_factory=dict)
    simulation: SimulationSpec | None = None
    disruption_budget: DisruptionBudget = DisruptionBudget()
    # After a quota or capacity error (and its back-off), place on healthy providers first
    # for this long.
    capacity_error_penalty: Duration = 1800.0

    @field_validator("stopped_cost_per_hour")
    @classmethod
    def _stopped_not_dearer(cls, value: float, info: ValidationInfo) -> float:
        running = info.data.get("cost_per_hour")
        if running is not None and value > running:
            raise ValueError(f"stopped_cost_per_hour ({value}) must not exceed cost_per_hour "
                             f"({running}): a stopped machine that costs more than a running "
                             f"one saves nothing")
        return value


class Blueprint(Strict):
    """How to make a node on one provider."""

    name: Name
    provider: Name
    node_profile: str
    max_active_gears: int | None = Field(None, ge=1)
    template: str | None = None  # vSphere / oVirt template
    image: str | None = None  # EC2 AMI
    instance_type: str | None = None
    user_data: str | None = None  # first-boot data (cloud-init)
    # The district (its UUID, as oo-admin-ctl-district -u takes it) a new node joins once
    # it publishes facts; without it a node in no district takes no gears.
    district: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
    settings: dict[str, Any] = Field(default_factory=dict)  # provider-specific extras

    @property
    def expected_max_active_gears(self) -> int:
        if self.max_active_gears is not None:
            return self.max_active_gears
        return DEFAULT_MAX_ACTIVE_GEARS.get(self.node_profile, 60)


class ProvidersFile(Strict):
    """The ``kind: Providers`` document: where nodes come from and how they are made."""

    api_version: Literal["gearshift/v1"] = Field(alias="apiVersion")
    kind: Literal["Providers"]
    providers: list[ProviderSpec] = Field(min_length=1)
    blueprints: list[Blueprint] = Field(default_factory=list)

    def provider(self, name: str) -> ProviderSpec | None:
        return self._providers.get(name)

    def blueprint(self, name: str) -> Blueprint | None:
        return self._blueprints.get(name)

    # By name, the first of each name (as a scan would find it): a plan looks blueprints
    # up per pool and placement, and 100 pools have hundreds of them.
    @cached_property
    def _providers(self) -> dict[str, ProviderSpec]:
        return {p.name: p for p in reversed(self.providers)}

    @cached_property
    def _blueprints(self) -> dict[str, Blueprint]:
        return {b.name: b for b in reversed(self.blueprints)}

    @cached_property
    def rates(self) -> dict[str, float]:
        """Each provider's ``cost_per_hour`` by name (the last of each name): consolidation
        prices every calm pool's nodes with it on every plan."""
        return {p.name: p.cost_per_hour for p in self.providers}


@dataclass(frozen=True)
class PolicySet:
    """A complete, validated set of pools and providers: what the loop runs with."""

    pools: tuple[PoolPolicy, ...]  # highest priority first
    providers: ProvidersFile | None
    files: tuple[Path, ...] = ()

    def pool(self, name: str) -> PoolPolicy | None:
        return next((p for p in self.pools if p.name == name), None)

    @cached_property
    def cheapest_slots(self) -> dict[str, float | None]:
        """Per pool, ``policy.pricing.cheapest_slot``: consolidation weighs every calm pool
        against it on every plan, so it is worked out once per policy set."""
        return {policy.name: cheapest_slot(policy, self.providers) for policy in self.pools}
