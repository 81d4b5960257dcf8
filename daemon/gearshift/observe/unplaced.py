"""Unplaced gears: demand the PaaS broker refused because no node had room.

Node facts only show the gears that fit: when a pool is full, the OpenShift broker refuses
new gears ("No nodes available") and the refused demand is invisible to the planner. A
broker-side hook (see the README and ``deploy/broker-hook/``) counts those refusals per
pool and reports them, on the capacity-request channel (``POST /v1/unplaced-gears`` with
the same bearer token, or the MQTT topic ``{prefix}/unplaced``), as a level: the gears
that are unplaced *now*. The latest report of a (source, pool) replaces the one before,
and a report expires after its ``ttl`` (a hook that dies stops counting). The planner adds
them to the pool's demand, so one scale-out covers them. A report of 0 is kept too: it
says a hook is watching and nothing is refused, so a full pool is not grown by guesswork
(``decide.planner``'s geometric steps are for pools no hook reports on).

Reports are kept in the capacity-request book (bounded, expiring) as requests flagged
``unplaced``, under ids of their own (``unplaced:{source}:{pool}``): a report can neither
replace nor be replaced by a capacity request.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from gearshift.durations import DURATION_PATTERN, parse_duration
from gearshift.model import CapacityRequest
from gearshift.observe.requests import (
    MAX_GEARS,
    MAX_REASON,
    MAX_TTL_TEXT,
    PoolBody,
    RequestBook,
    check_body,
    whole_number,
)

MAX_SOURCE = 64
MAX_UNPLACED_TTL_SECONDS = 3600.0  # a level, refreshed by its hook: never held for long
SOURCE_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"


class UnplacedGearsBody(PoolBody):
    """The body of ``POST /v1/unplaced-gears`` and of a message on ``{prefix}/unplaced``;
    the OpenAPI document's ``UnplacedGears`` schema is generated from it."""

    gears: Annotated[int, BeforeValidator(whole_number)] = Field(
        ge=0, le=MAX_GEARS, description="gears the broker could not place in this pool now "
                                        "(0: nothing refused)")
    source: str = Field("broker", pattern=SOURCE_PATTERN, max_length=MAX_SOURCE,
                        description="which hook reports (one broker host, say): the latest "
                                    "report of a source replaces its previous one")
    ttl: str = Field("2m", pattern=DURATION_PATTERN, max_length=MAX_TTL_TEXT,
                     description="how long the report holds unless renewed (at most 1h)")
    reason: str = Field("", max_length=MAX_REASON)


_PROBLEMS = {
    "pool": "pool: must name a pool in the policies in force",
    "gears": f"gears: must be an integer from 0 to {MAX_GEARS}",
    "source": "source: must be 1 to 64 characters of letters, digits and . _ : -",
    "ttl": "ttl: must be a duration such as 30s, 2m or 1h",
    "reason": f"reason: must be a string of at most {MAX_REASON} characters",
}


def parse_unplaced(data: Any, *, pools: Collection[str] | None) -> UnplacedGearsBody:
    """The report in ``data``; TypeError when it is not an object, ValueError saying what
    is wrong otherwise (both ways in, HTTP and MQTT, use it)."""
    return check_body(UnplacedGearsBody, data, pools=pools, problems=_PROBLEMS)


def report_id(body: UnplacedGearsBody) -> str:
    return f"unplaced:{body.source}:{body.pool}"


def record_unplaced(book: RequestBook, body: UnplacedGearsBody, *, now: float) -> float:
    """Put the report in the book, replacing the source's last one for the pool (0 gears
    included: a hook watching); returns when it expires."""
    ttl = min(parse_duration(body.ttl), MAX_UNPLACED_TTL_SECONDS)
    book.add(CapacityRequest(request_id=report_id(body), pool=body.pool, gears=body.gears,
                             expires_at=now + ttl, unplaced=True,
                             reason=body.reason or f"reported by {body.source}"))
    return now + ttl
