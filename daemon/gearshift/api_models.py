"""The plan and events as they travel over HTTP: pydantic models for ``/v1/plan``, the
status page's decisions, ``/v1/events`` and ``gearshift plan --url``.

One model per ``model.Action`` kind, tagged by ``kind``, so the daemon (explain.py) and
the CLI (client.py) read and write the same shape and a plan comes back from JSON whole:
scale-outs with their placements, drains with their node candidates. It lives outside
``gearshift.api`` so the CLI can import it without aiohttp, and the domain (model.py)
stays plain frozen dataclasses the planner builds without validation.

Adding an action kind: one ``WireModel`` subclass below with ``kind: Literal[...]``, the
dataclass's fields and ``domain = TheDataclass``, and one member in ``ActionModel``.
``tests/test_api_models.py`` fails until every ``model.Action`` member has its model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt

from gearshift.model import (
    Abandon,
    Action,
    CancelDrain,
    Candidate,
    DestroyAgain,
    Drain,
    DrainCause,
    NodeCandidate,
    Park,
    Resume,
    Retire,
    RetireParked,
    ScaleOut,
)
from gearshift.plan import Plan, PlannerState, PoolEvaluation


def iso_time(at: float) -> str:
    """Epoch seconds as the API writes times: UTC, whole seconds, ``Z``."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def from_iso_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class WireModel(BaseModel):
    """A frozen model mirroring one dataclass of model.py (``domain``), field for field."""

    # Every field is always sent, so the served schema marks them all required.
    model_config = ConfigDict(frozen=True, from_attributes=True,
                              json_schema_serialization_defaults_required=True)
    domain: ClassVar[type]

    def to_domain(self) -> Any:
        """The dataclass back, nested models (candidates) converted too."""
        values = {name: _to_domain(getattr(self, name))
                  for name in type(self).model_fields if name != "kind"}
        return self.domain(**values)


def _to_domain(value: Any) -> Any:
    if isinstance(value, WireModel):
        return value.to_domain()
    if isinstance(value, tuple):
        return tuple(_to_domain(v) for v in value)
    return value


class CandidateModel(WireModel):
    """A placement considered for a scale-out."""

    domain = Candidate
    provider: str
    blueprint: str
    chosen: int
    free: int
    note: str
    rank: int | None = None
    cost_per_hour: float | None = None
    time_to_ready: float | None = None


class NodeCandidateModel(WireModel):
    """A node considered for a drain."""

    domain = NodeCandidate
    identity: str
    provider: str | None
    chosen: bool
    note: str


class ScaleOutModel(WireModel):
    domain = ScaleOut
    kind: Literal["scale_out"] = "scale_out"
    pool: str
    provider: str
    blueprint: str
    count: int
    reason: str
    replaces: tuple[str, ...] = ()
    warm: bool = False
    candidates: tuple[CandidateModel, ...] = ()


class DrainModel(WireModel):
    domain = Drain
    kind: Literal["drain"] = "drain"
    pool: str
    identity: str
    reason: str
    cause: DrainCause = "scale_in"
    preempted_by: str | None = None
    candidates: tuple[NodeCandidateModel, ...] = ()


class CancelDrainModel(WireModel):
    domain = CancelDrain
    kind: Literal["cancel_drain"] = "cancel_drain"
    pool: str
    identity: str
    reason: str
    # Always empty: kept so every action has ``candidates`` (as the API has always sent).
    candidates: tuple[()] = ()

    def to_domain(self) -> Any:
        return CancelDrain(pool=self.pool, identity=self.identity, reason=self.reason)


class _MachineActionModel(WireModel):
    """An action on one node's machine: the fields ``Retire``, ``Park``, ``Resume`` and
    ``RetireParked`` share."""

    kind: str  # each subclass's literal (declared here to come first, as on the others)
    pool: str
    identity: str
    provider: str
    machine_id: str
    reason: str
    candidates: tuple[()] = ()  # always empty, as for CancelDrainModel

    def to_domain(self) -> Any:
        return self.domain(pool=self.pool, identity=self.identity, provider=self.provider,
                           machine_id=self.machine_id, reason=self.reason)


class RetireModel(_MachineActionModel):
    domain = Retire
    kind: Literal["retire"] = "retire"


class ParkModel(_MachineActionModel):
    domain = Park
    kind: Literal["park"] = "park"


class ResumeModel(_MachineActionModel):
    domain = Resume
    kind: Literal["resume"] = "resume"


class RetireParkedModel(_MachineActionModel):
    domain = RetireParked
    kind: Literal["retire_parked"] = "retire_parked"


class AbandonModel(WireModel):
    domain = Abandon
    kind: Literal["abandon"] = "abandon"
    pool: str
    identity: str
    provider: str
    machine_id: str
    op_id: str
    reason: str
    timeout: float
    waited: float
    resumed: bool = False
    candidates: tuple[()] = ()  # always empty, as for CancelDrainModel

    def to_domain(self) -> Any:
        return Abandon(pool=self.pool, identity=self.identity, provider=self.provider,
                       machine_id=self.machine_id, op_id=self.op_id, reason=self.reason,
                       timeout=self.timeout, waited=self.waited, resumed=self.resumed)


class DestroyAgainModel(WireModel):
    domain = DestroyAgain
    kind: Literal["destroy_again"] = "destroy_again"
    pool: str
    identity: str
    provider: str
    machine_id: str
    op_id: str
    reason: str
    candidates: tuple[()] = ()  # always empty, as for CancelDrainModel

    def to_domain(self) -> Any:
        return DestroyAgain(pool=self.pool, identity=self.identity, provider=self.provider,
                            machine_id=self.machine_id, op_id=self.op_id, reason=self.reason)


ActionModel = Annotated[ScaleOutModel | DrainModel | CancelDrainModel | RetireModel
                        | AbandonModel | DestroyAgainModel | ParkModel | ResumeModel
                        | RetireParkedModel,
                        Field(discriminator="kind")]
_BY_DOMAIN: dict[type, type[WireModel]] = {
    m.domain: m for m in (ScaleOutModel, DrainModel, CancelDrainModel, RetireModel,
                          AbandonModel, DestroyAgainModel, ParkModel, ResumeModel,
                          RetireParkedModel)}


def action_model(action: Action) -> WireModel:
    """The wire model of one planned action."""
    return _BY_DOMAIN[type(action)].model_validate(action)


class PoolEvaluationModel(WireModel):
    domain = PoolEvaluation
    pool: str
    active: int
    booting: int
    draining: int
    unknown: int
    active_gears: int
    capacity_gears: int
    active_density: float | None
    desired_nodes: int
    degraded: bool
    summary: str
    paused: bool = False
    forecast_gears: float | None = None
    forecast_at: float | None = None
    forecast_extra_nodes: int = 0
    demand_gears: int = 0


class EventLike(Protocol):
    """What the executor records (act.executor.Event), as far as the API reads it."""

    @property
    def at(self) -> float: ...
    @property
    def kind(self) -> str: ...
    @property
    def pool(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def outcome(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def error(self) -> str | None: ...


class EventModel(BaseModel):
    """One thing gearshift did (or failed to do), for ``/v1/events``."""

    model_config = ConfigDict(frozen=True, json_schema_serialization_defaults_required=True)
    at: str = Field(json_schema_extra={"format": "date-time"})
    kind: str
    pool: str
    target: str
    outcome: Literal["ok", "failed", "refused"]
    reason: str
    error: str | None = None

    @classmethod
    def from_event(cls, event: EventLike) -> EventModel:
        return cls(at=iso_time(event.at), kind=event.kind, pool=event.pool,
                   target=event.target, outcome=event.outcome,
                   reason=event.reason, error=event.error)


class EventsModel(BaseModel):
    """``/v1/events``: the latest events, newest first."""

    model_config = ConfigDict(frozen=True, extra="forbid",
                              json_schema_serialization_defaults_required=True)
    events: list[EventModel] = Field(description="newest first")


class NodeCountsModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    active: NonNegativeInt
    booting: NonNegativeInt
    draining: NonNegativeInt
    unknown: NonNegativeInt
    parked: NonNegativeInt = Field(0, description="warm-pool machines: being made to park, "
                                   "stopping or stopped (a resumed one counts as booting)")


class BandModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    scale_up_above: float
    target: float
    scale_down_below: float


class PoolForecastModel(BaseModel):
    """A predictive pool's forecast in ``/v1/status``: what it orders (``on``) or would
    order (``forecast_only``), so SREs can judge the forecast before they let it act."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    mode: Literal["forecast_only", "on"]
    quantile: float = Field(description="the upper quantile forecast (0.9: p90)")
    at: str | None = Field(json_schema_extra={"format": "date-time"},
                           description="the instant forecast: now + the pool's slowest "
                                       "time-to-ready (null: no usable forecast)")
    gears: float | None = Field(description="the upper forecast of demand (gears) at ``at``; "
                                            "null: no forecast yet, or a stale one")
    extra_nodes: NonNegativeInt = Field(
        description="nodes the forecast orders now beyond capacity (on), or would order "
                    "(forecast_only)")


class PoolStatusModel(BaseModel):
    """One pool in ``/v1/status``: its last evaluation beside its policy's limits
    (``forecast`` only for a pool whose ``predictive.mode`` is not ``off``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    nodes: NodeCountsModel
    active_density: Annotated[float, Field(ge=0)] | None = Field(
        description="active gears / max_active_gears over the pool's active nodes")
    desired_nodes: NonNegativeInt
    degraded: bool = Field(description="some of the pool's facts cannot be trusted")
    paused: bool
    min: NonNegativeInt
    max: NonNegativeInt
    band: BandModel
    summary: str
    forecast: PoolForecastModel | None = Field(
        None, description="predictive scaling's forecast; absent when the pool's mode is off")


class ProviderStatusModel(BaseModel):
    """One provider in ``/v1/status`` (model.ProviderStatus and how many nodes it holds)."""

    model_config = ConfigDict(frozen=True, json_schema_serialization_defaults_required=True)
    name: str
    available: bool = Field(description="false while the circuit is open or backed off")
    why_unavailable: str | None
    boot_time: float | None = Field(None, description="measured time-to-ready, seconds")
    capacity_error_at: float | None = None
    capacity_error: str | None = None
    nodes: NonNegativeInt


def wire_schemas(*, ref_prefix: str,
                 models: Sequence[type[BaseModel]] = ()) -> dict[str, Any]:
    """JSON schemas of the plan, event and status models (and ``models``) as the API sends
    them, named without ``Model`` (``Plan``, ``Action``, ``Drain``, ``Events``, ...), their
    ``$ref``s under ``ref_prefix``."""
    schema = PlanModel.model_json_schema(mode="serialization",
                                         ref_template=ref_prefix + "{model}")
    defs = {**schema.pop("$defs"), "Plan": schema}
    defs["Action"] = schema["properties"]["actions"]["items"]
    events = EventsModel.model_json_schema(mode="serialization",
                                           ref_template=ref_prefix + "{model}")
    defs.update({**events.pop("$defs"), "Events": events})
    parts: list[type[BaseModel]] = [PoolStatusModel, ProviderStatusModel, *models]
    for model in parts:
        part = model.model_json_schema(mode="serialization", ref_template=ref_prefix + "{model}")
        defs.update({**part.pop("$defs", {}), model.__name__: part})
    text = json.dumps(defs)
    for name in list(defs):
        if name.endswith("Model"):
            text = text.replace(f'"{ref_prefix}{name}"', f'"{ref_prefix}{name[:-5]}"')
    renamed: dict[str, Any] = {name.removesuffix("Model"): value
                               for name, value in json.loads(text).items()}
    return renamed


class PlanModel(BaseModel):
    """``/v1/plan``: when, each pool's evaluation, and the actions with their reasons."""

    model_config = ConfigDict(frozen=True, json_schema_serialization_defaults_required=True)
    at: str = Field(json_schema_extra={"format": "date-time"})
    pools: dict[str, PoolEvaluationModel]
    actions: list[ActionModel]

    @classmethod
    def from_plan(cls, plan: Plan) -> PlanModel:
        return cls(at=iso_time(plan.at),
                   pools={name: PoolEvaluationModel.model_validate(e)
                          for name, e in plan.pools.items()},
                   actions=[action_model(a) for a in plan.actions])

    def to_plan(self) -> Plan:
        """The plan back (its ``state``, the planner's memory, is not on the wire)."""
        return Plan(at=from_iso_time(self.at),
                    actions=tuple(a.to_domain() for a in self.actions),
                    pools={name: e.to_domain() for name, e in self.pools.items()},
                    state=PlannerState())
