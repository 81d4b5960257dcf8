"""Pending capacity requests: the PaaS (or an SRE) asking for room before the gears arrive.

A request holds ``gears`` extra active-gear slots in a pool until it expires. Requests come
from ``POST /v1/capacity-requests`` and the MQTT topic ``{prefix}/requests``; both end here.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from gearshift.durations import parse_duration
from gearshift.model import CapacityRequest

MAX_OPEN_REQUESTS = 1000
MAX_GEARS = 100_000
MAX_REASON = 200
MAX_TTL_TEXT = 32
MAX_TTL_SECONDS = 7 * 86400
_REQUEST_KEYS = frozenset({"pool", "gears", "ttl", "reason"})


def parse_capacity_request(data: Any, *, pools: Collection[str] | None
                           ) -> tuple[str, int, float, str]:
    """(pool, gears, ttl seconds, reason) from a request body; ValueError says what is wrong.

    Both ways in (HTTP and MQTT) use it, so both accept exactly the ``CapacityRequest``
    schema of the OpenAPI document (schemathesis checks the HTTP side both ways).
    """
    if not isinstance(data, dict):
        raise TypeError("the body must be a JSON object")
    unknown = sorted(str(k) for k in data if k not in _REQUEST_KEYS)
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(unknown)[:100]}")
    pool, gears = data.get("pool"), data.get("gears")
    if not isinstance(pool, str) or (pools is not None and pool not in pools):
        raise ValueError("pool: must name a pool in the policies in force")
    if isinstance(gears, float) and gears.is_integer():
        gears = int(gears)  # JSON Schema counts 120.0 as an integer, so do we
    if not isinstance(gears, int) or isinstance(gears, bool) or not 0 < gears <= MAX_GEARS:
        raise ValueError(f"gears: must be an integer from 1 to {MAX_GEARS}")
    ttl_text = data.get("ttl", "30m")
    try:
        if not isinstance(ttl_text, str) or len(ttl_text) > MAX_TTL_TEXT \
                or ttl_text != ttl_text.strip():
            raise ValueError
        ttl = min(parse_duration(ttl_text), float(MAX_TTL_SECONDS))
    except ValueError:
        raise ValueError("ttl: must be a duration such as 90s, 10m, 2h, 1h30m or 1d") from None
    reason = data.get("reason", "")
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise ValueError(f"reason: must be a string of at most {MAX_REASON} characters")
    return pool, gears, ttl, reason



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
