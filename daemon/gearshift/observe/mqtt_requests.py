"""Capacity requests and unplaced-gears reports that arrive over MQTT.

``{prefix}/requests`` carries capacity requests and ``{prefix}/unplaced`` a broker-side
hook's unplaced-gears reports: the same bodies as ``POST /v1/capacity-requests`` and
``POST /v1/unplaced-gears``, checked by the same parsers (``observe.requests``,
``observe.unplaced``). What only MQTT needs is here: a retained message is refused (it
would come back, with a new expiry, on every reconnect), the payload is bounded, JSON is
read with ``jsonlimits``, and every refusal is a ``BadMessage`` the fact source counts.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection
from typing import Any, TypeVar

from gearshift import jsonlimits
from gearshift.errors import BadMessage
from gearshift.model import CapacityRequest
from gearshift.observe.requests import RequestBook, parse_capacity_request
from gearshift.observe.unplaced import parse_unplaced, record_unplaced

_Parsed = TypeVar("_Parsed")


def _body(payload: bytes, *, retained: bool, max_payload: int) -> Any:
    if retained:
        raise BadMessage("retained_request", "capacity requests must not be retained")
    if len(payload) > max_payload:
        raise BadMessage("too_large", f"{len(payload)} bytes")
    try:
        return jsonlimits.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise BadMessage("invalid_json", str(exc)[:80]) from exc


def _parsed(parse: Callable[[Any], _Parsed], data: Any) -> _Parsed:
    try:
        return parse(data)
    except TypeError as exc:
        raise BadMessage("not_an_object", str(exc)) from exc
    except ValueError as exc:
        raise BadMessage("bad_request", str(exc)[:120]) from exc


def take_capacity_request(payload: bytes, *, book: RequestBook, pools: Collection[str] | None,
                          now: float, retained: bool, max_payload: int) -> None:
    """Hold the request in ``payload`` in ``book``; BadMessage says why not."""
    data = _body(payload, retained=retained, max_payload=max_payload)
    request_id = data.pop("id", None) if isinstance(data, dict) else None
    pool, gears, ttl, reason = _parsed(
        lambda d: parse_capacity_request(d, pools=pools), data)
    # Ids are namespaced so an MQTT client cannot replace a request made over HTTP.
    book.add(CapacityRequest(
        request_id=f"mqtt:{str(request_id)[:100] if request_id else uuid.uuid4().hex}",
        pool=pool, gears=gears, expires_at=now + ttl, reason=reason))


def take_unplaced(payload: bytes, *, book: RequestBook, pools: Collection[str] | None,
                  now: float, retained: bool, max_payload: int) -> None:
    """Record the hook's report in ``payload`` in ``book``; BadMessage says why not."""
    data = _body(payload, retained=retained, max_payload=max_payload)
    record_unplaced(book, _parsed(lambda d: parse_unplaced(d, pools=pools), data), now=now)
