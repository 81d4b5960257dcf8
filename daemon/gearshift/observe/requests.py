"""Pending capacity requests: the PaaS (or an SRE) asking for room before the gears arrive.

A request holds ``gears`` extra active-gear slots in a pool until it expires. Requests come
from ``POST /v1/capacity-requests`` and the MQTT topic ``{prefix}/requests``; both end here.
"""

from __future__ import annotations

from gearshift.model import CapacityRequest

MAX_OPEN_REQUESTS = 1000


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
