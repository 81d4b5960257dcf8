"""The small bodies of the HTTP API as pydantic models: ``/v1/status`` and its parts,
``/healthz``, ``/readyz``, a pause or resume, a capacity request created, an error.

The server builds these and serialises them (``StatusModel.to_json``), and api/openapi.py
generates their OpenAPI schemas from them (``api_schemas``), so what is sent and what is
documented cannot drift apart. They live in ``gearshift.api`` because only the server and
the daemon, which supplies the leader-only parts of the status (``StatusExtrasModel``),
build them; the pool, provider and action models they hold are ``gearshift.api_models``',
shared with the CLI. The CLI reads ``/v1/status`` as plain JSON (client.render_status).

Key order is the order of the fields below: it is what the API has always sent.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    NonNegativeInt,
    SerializerFunctionWrapHandler,
    WithJsonSchema,
    model_serializer,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue, SkipJsonSchema
from pydantic_core import CoreSchema

from gearshift.api_models import (
    ActionModel,
    PoolStatusModel,
    ProviderStatusModel,
    wire_schemas,
)
from gearshift.observe.requests import MAX_GEARS

IsoTime = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]
"""A time as the API writes it (api_models.iso_time): UTC, whole seconds, ``Z``."""

_FROZEN = ConfigDict(frozen=True)
_CLOSED = ConfigDict(frozen=True, extra="forbid")


class ErrorModel(BaseModel):
    """Every refusal's body: ``{"error": message}``."""

    model_config = _FROZEN
    error: str


class HealthModel(BaseModel):
    """``/healthz``."""

    model_config = _CLOSED
    alive: bool = Field(description="the reconcile loop beat recently")
    last_heartbeat: IsoTime | None
    last_reconcile: IsoTime | None


class ReadyModel(BaseModel):
    """``/readyz``."""

    model_config = _CLOSED
    ready: bool = Field(description="facts are fresh and a reconcile has succeeded")
    facts_fresh: bool
    last_reconcile: IsoTime | None


class PoolPausedModel(BaseModel):
    """The answer to a pause or resume."""

    model_config = _CLOSED
    pool: str
    paused: bool


class CapacityRequestCreatedModel(BaseModel):
    """The answer to a capacity request: held until ``expires_at``."""

    model_config = _CLOSED
    id: str
    pool: str
    gears: Annotated[int, Field(ge=1, le=MAX_GEARS)]
    expires_at: IsoTime


class UnplacedGearsAcceptedModel(BaseModel):
    """The answer to an unplaced-gears report: counted until ``expires_at`` unless renewed
    (a report of 0 gears says nothing is refused)."""

    model_config = _CLOSED
    pool: str
    gears: Annotated[int, Field(ge=0, le=MAX_GEARS)]
    source: str
    expires_at: IsoTime


# -- /v1/status ----------------------------------------------------------------------------
class LeadershipModel(BaseModel):
    """This instance in the leader election."""

    model_config = _FROZEN
    holder: str = Field(description="this instance's lease name")
    token: int | None = Field(description="fencing token while leader")
    terms: NonNegativeInt
    journal: str


class OperationsModel(BaseModel):
    """The journaled operations in flight of one kind (act.progress.Progress.in_flight)."""

    model_config = _FROZEN
    count: NonNegativeInt
    oldest_age_seconds: float
    phases: dict[str, NonNegativeInt]


class RecoveriesModel(BaseModel):
    model_config = _FROZEN
    performed: NonNegativeInt
    incomplete: bool


class UntrustedNodeModel(BaseModel):
    """A node that counts for no pool now, and why (reconcile.trust.untrusted)."""

    model_config = _FROZEN
    identity: str
    state: Literal["unknown", "unvouched"]
    reason: str
    ours: bool
    last_seen: float | None


class RefusedModel(BaseModel):
    """An identity whose last message was refused."""

    model_config = _FROZEN
    identity: str
    reason: str
    detail: str
    at: float


class UntrustedModel(BaseModel):
    """Nodes that count for no pool now and identities whose last message was refused."""

    model_config = _FROZEN
    nodes: list[UntrustedNodeModel]
    counts: dict[str, NonNegativeInt]
    refused: list[RefusedModel]
    disputed: dict[str, str]


class StatusExtrasModel(BaseModel):
    """What the daemon adds to ``/v1/status`` (``ApiServer(extra_status=...)``)."""

    model_config = _FROZEN
    leadership: LeadershipModel
    operations: dict[str, OperationsModel]
    recoveries: RecoveriesModel
    untrusted: UntrustedModel


class DecisionModel(BaseModel):
    """One planned action with when it was planned: on the wire the action's own fields
    after ``at`` (``{"at": ..., "kind": ..., ...}``), as the status page reads it."""

    model_config = _FROZEN
    at: IsoTime
    action: ActionModel

    @model_validator(mode="before")
    @classmethod
    def _nest(cls, data: Any) -> Any:
        if isinstance(data, dict) and "action" not in data:
            return {"at": data.get("at"),
                    "action": {k: v for k, v in data.items() if k != "at"}}
        return data

    @model_serializer(mode="wrap")
    def _flatten(self, handler: SerializerFunctionWrapHandler) -> Any:
        nested = handler(self)
        return {"at": nested["at"], **nested["action"]}

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        """The flat shape: any action, and ``at``."""
        # the fields' schemas (the model's own is its serializer's: any)
        fields = handler(core_schema["schema"] if core_schema["type"] == "model"
                         else core_schema)["properties"]
        fields["action"].pop("title", None)
        return {"allOf": [fields["action"], {"type": "object", "required": ["at"],
                                              "properties": {"at": fields["at"]}}]}


_EXTRAS = ("leadership", "operations", "recoveries", "untrusted")


class StatusModel(BaseModel):
    """``/v1/status``: pools and providers, the latest decisions and, from the daemon,
    leadership, operations in flight, recoveries and untrusted nodes (absent when the
    server runs without them, as in the demo and the tests' rigs)."""

    model_config = _CLOSED
    pools: dict[str, PoolStatusModel]
    leader: bool
    facts_fresh: bool
    last_reconcile: IsoTime | None
    providers: dict[str, ProviderStatusModel]
    policy_errors: list[str] = Field(
        description="FILE:LINE:COL: message per problem of the last refused reload; the "
                    "last good policies stay in force meanwhile")
    decisions: list[DecisionModel] = Field(
        description="the latest actions, newest first, with their reasons and candidates")
    leadership: LeadershipModel | SkipJsonSchema[None] = Field(
        None, description="this instance in the leader election")
    operations: dict[str, OperationsModel] | SkipJsonSchema[None] = Field(
        None, description="journaled operations in flight, by kind")
    recoveries: RecoveriesModel | SkipJsonSchema[None] = Field(
        None, description="recoveries performed since start")
    untrusted: UntrustedModel | SkipJsonSchema[None] = Field(
        None, description="nodes that count for no pool now and identities whose last "
                          "message was refused")

    def to_json(self) -> dict[str, Any]:
        """The body as sent: the daemon's parts left out when it supplied none, and a pool's
        ``forecast`` when its predictive mode is off (so such a pool reads as it always did)."""
        exclude: dict[str, Any] = {k: True for k in _EXTRAS if getattr(self, k) is None}
        no_forecast = {name: {"forecast"} for name, p in self.pools.items() if p.forecast is None}
        if no_forecast:
            exclude["pools"] = no_forecast
        return self.model_dump(mode="json", exclude=exclude)


def api_schemas(*, ref_prefix: str) -> dict[str, Any]:
    """Every OpenAPI component schema, named without ``Model`` (``Status``, ``Health``,
    ``Plan``, ``Action``, ...), its ``$ref``s under ``ref_prefix``."""
    return wire_schemas(ref_prefix=ref_prefix, models=(
        ErrorModel, HealthModel, ReadyModel, StatusModel, PoolPausedModel,
        CapacityRequestCreatedModel, UnplacedGearsAcceptedModel))
