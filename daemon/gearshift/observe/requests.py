"""Pending capacity requests: the PaaS (or an SRE) asking for room before the gears arrive.

A request holds ``gears`` extra active-gear slots in a pool until it expires. Requests come
from ``POST /v1/capacity-requests`` and the MQTT topic ``{prefix}/requests``; both end here.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from gearshift.durations import DURATION_PATTERN, parse_duration
from gearshift.model import CapacityRequest

MAX_OPEN_REQUESTS = 1000
MAX_GEARS = 100_000
MAX_REASON = 200
MAX_TTL_TEXT = 32
MAX_TTL_SECONDS = 7 * 86400
_REQUEST_KEYS = frozenset({"pool", "gears", "ttl", "reason"})


class PoolBody(BaseModel):
    """A body that asks something of a pool: capacity requests, unplaced-gears reports."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    pool: str = Field(description="a pool in the policies in force")


def whole_number(value: Any) -> Any:
    # JSON Schema counts 120.0 as an integer, so do we
    return int(value) if isinstance(value, float) and value.is_integer() else value


class CapacityRequestBody(PoolBody):
    """The body of ``POST /v1/capacity-requests`` and of a message on ``{prefix}/requests``;
    the OpenAPI document's ``CapacityRequest`` schema is generated from it."""

    gears: Annotated[int, BeforeValidator(whole_number)] = Field(
        ge=1, le=MAX_GEARS, description="extra active-gear slots to hold free")
    ttl: str = Field("30m", pattern=DURATION_PATTERN, max_length=MAX_TTL_TEXT,
                     description="how long the request holds, e.g. 10m (longer than 7d is "
                                 "capped at 7d)")
    reason: str = Field("", max_length=MAX_REASON)


_PROBLEMS = {
    "pool": "pool: must name a pool in the policies in force",
    "gears": f"gears: must be an integer from 1 to {MAX_GEARS}",
    "ttl": "ttl: must be a duration such as 90s, 10m, 2h, 1h30m or 1d",
    "reason": f"reason: must be a string of at most {MAX_REASON} characters",
}


_Body = TypeVar("_Body", bound=PoolBody)


def check_body(model: type[_Body], data: Any, *, pools: Collection[str] | None,
               problems: Mapping[str, str]) -> _Body:
    """``data`` as ``model``, or the error a client can act on:
    TypeError when it is not an object, ValueError naming the field (``problems``, keyed
    by field, ``pool`` also for an unknown pool) otherwise. Capacity requests and
    unplaced-gears reports, over HTTP and MQTT, all come through here."""
    if not isinstance(data, dict):
        raise TypeError("the body must be a JSON object")
    unknown = sorted(str(k) for k in data if k not in model.model_fields)
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(unknown)[:100]}")
    try:
        body = model.model_validate(data)
    except ValidationError as exc:
        field = next((str(e["loc"][0]) for e in exc.errors() if e["loc"]), "pool")
        raise ValueError(problems.get(field, problems["pool"])) from None
    if pools is not None and body.pool not in pools:
        raise ValueError(problems["pool"])
    return body


def parse_capacity_request(data: Any, *, pools: Collection[str] | None
                           ) -> tuple[str, int, float, str]:
    """(pool, gears, ttl seconds, reason) from a request body; ValueError says what is wrong.

    Both ways in (HTTP and MQTT) use it, so both accept exactly the ``CapacityRequest``
    schema of the OpenAPI document (schemathesis checks the HTTP side both ways).
    """
    body = check_body(CapacityRequestBody, data, pools=pools, problems=_PROBLEMS)
    ttl = min(parse_duration(body.ttl), float(MAX_TTL_SECONDS))
    return body.pool, body.gears, ttl, body.reason


class RequestBook:
    def __init__(self) -> None:
        self._requests: dict[str, CapacityRequest] = {}

    def add(self, request: CapacityRequest) -> None:
        if len(self._requests) >= MAX_OPEN_REQUESTS and request.request_id not in self._requests:
            oldest = min(self._requests.values(), key=lambda r: r.expires_at)
            del self._requests[oldest.request_id]
        self._requests[request.request_id] = request

    def active(self, now: float) -> list[CapacityRequest]:
        for expired in [k for k, r in self._requests.items() if r.expires_at <= now]:
            del self._requests[expired]
        return sorted(self._requests.values(), key=lambda r: r.expires_at)
