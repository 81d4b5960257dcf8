"""Turn one node-facts message into typed ``NodeFacts``, or reject it with a reason.

Two forms are accepted:

* ``gearshift.node.facts/1`` JSON, as ``gearshift agent`` publishes it (see
  ``../shared/domain/openshift-v2.md`` for a sample);
* legacy MCollective facts: a flat JSON map whose values are all strings, as Facter's
  YAML turned into JSON (``"max_active_gears": "60"``, ``"district_active": "true"``).

Every number is bounded: a count past ``HARD_LIMIT`` is a bad message (it could only be a
lie or a bug, and unbounded integers overflow the planner's float arithmetic), one past
the configured ``max_gears`` makes the facts bad (the node is unknown, and says why).

Anything else raises ``BadMessage`` whose ``reason`` is a short metric label
(``too_large``, ``invalid_json``, ``unknown_schema``, ``wrong_type``,
``identity_mismatch``, ...). Facts that parse but cannot be used for density
(``max_active_gears`` of 0, NaN or infinite percentages) come back with ``bad_reason``
set: the node is then unknown, the pool's density is not poisoned.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from sys import intern
from types import MappingProxyType
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gearshift import jsonlimits
from gearshift.errors import BadMessage
from gearshift.model import GearCounts, NodeFacts

SCHEMA = "gearshift.node.facts/1"
MAX_PAYLOAD = 64 * 1024
HARD_LIMIT = 1 << 31  # no count may reach this; trust.max_gears is the useful ceiling
DEFAULT_MAX_GEARS = 10_000
Count = Annotated[int, Field(ge=0, lt=HARD_LIMIT)]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


class _District(_Wire):
    uuid: str | None = None
    active: bool = True


class _Limits(_Wire):
    max_active_gears: Count
    no_overcommit_active: bool = False


class _Gears(_Wire):
    total: Count = 0
    active: Count | None = None
    started: Count = 0
    idle: Count = 0
    stopped: Count = 0
    deploying: Count = 0
    unknown: Count = 0


class _Net(_Wire):
    public_hostname: str | None = None


class FactsMessage(_Wire):
    """The ``gearshift.node.facts/1`` message, as published on ``nodes/{identity}/facts``."""

    schema_: str = Field(alias="schema")
    ts: str | None = None
    seq: int | None = Field(None, ge=0, lt=1 << 63)
    identity: str = Field(min_length=1, max_length=255)
    node_profile: str = Field(min_length=1, max_length=64)
    district: _District = _District()
    limits: _Limits
    gears: _Gears = _Gears()
    net: _Net = _Net()
    labels: dict[str, str] = Field(default_factory=dict, max_length=64)
    active_usage_pct: float | None = None


# Per-node memory: a fleet holds every node's latest facts for as long as it runs, and
# most of their strings repeat (profile, district, the identity itself on every message).
# ``sys.intern`` makes equal strings one object (the fleet's key, the facts, the journal's
# machine); nodes with equal labels share one read-only dict, from a bounded table so
# whoever can publish cannot grow it without limit.
MAX_SHARED_LABELS = 4096
_EMPTY_LABELS: Mapping[str, str] = MappingProxyType({})
_labels: dict[tuple[tuple[str, str], ...], Mapping[str, str]] = {}


def shared_labels(labels: dict[str, str]) -> Mapping[str, str]:
    """A read-only mapping equal to ``labels``, shared by every node that has them."""
    if not labels:
        return _EMPTY_LABELS
    key = tuple(sorted(labels.items()))
    held = _labels.get(key)
    if held is None:
        held = MappingProxyType(dict(key))
        if len(_labels) < MAX_SHARED_LABELS:
            _labels[key] = held
    return held


def _timestamp(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadMessage("bad_value", f"ts {text[:40]!r} is not ISO 8601") from exc
    if parsed.tzinfo is None:
        raise BadMessage("bad_value", "ts has no time zone")
    return parsed.timestamp()


def _bad_numbers(max_active_gears: int, percentages: list[float | None]) -> str | None:
    if max_active_gears <= 0:
        return f"max_active_gears is {max_active_gears}: usage percentages are undefined"
    for value in percentages:
        if value is not None and (math.isnan(value) or math.isinf(value)):
            return f"usage percentage is {value}"
    return None


def _validate(data: dict[str, Any]) -> FactsMessage:
    if data.get("schema") != SCHEMA:
        raise BadMessage("unknown_schema", f"schema {str(data.get('schema'))[:60]!r}")
    try:
        return FactsMessage.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        reason = "missing_field" if first["type"] == "missing" else "wrong_type"
        raise BadMessage(reason, f"{where}: {first['msg']}") from exc


def _from_message(message: FactsMessage, topic_identity: str) -> NodeFacts:
    if message.identity != topic_identity:
        raise BadMessage("identity_mismatch",
                         f"topic says {topic_identity[:80]!r}, message {message.identity[:80]!r}")
    gears = message.gears
    active = gears.active if gears.active is not None else max(
        0, gears.total - gears.idle - gears.stopped)
    identity = intern(message.identity)
    hostname = message.net.public_hostname
    return NodeFacts(
        identity=identity,
        node_profile=intern(message.node_profile),
        max_active_gears=message.limits.max_active_gears,
        gears=GearCounts(total=gears.total, active=active, started=gears.started,
                         idle=gears.idle, stopped=gears.stopped, deploying=gears.deploying,
                         unknown=gears.unknown),
        district_uuid=None if message.district.uuid is None else intern(message.district.uuid),
        district_active=message.district.active,
        no_overcommit_active=message.limits.no_overcommit_active,
        public_hostname=identity if hostname == identity else hostname,
        produced_at=_timestamp(message.ts),
        seq=message.seq,
        labels=shared_labels(message.labels),
        bad_reason=_bad_numbers(message.limits.max_active_gears, [message.active_usage_pct]),
    )


def _int(data: dict[str, str], key: str, default: int | None = 0) -> int:
    text = data.get(key)
    if text is None:
        if default is None:
            raise BadMessage("missing_field", key)
        return default
    try:
        value = int(float(text)) if "." in text else int(text)
    except (ValueError, OverflowError) as exc:  # "1e400", or more digits than int() takes
        raise BadMessage("wrong_type", f"{key}={text[:40]!r} is not a number") from exc
    if value < 0:
        raise BadMessage("bad_value", f"{key}={value} is negative")
    if value >= HARD_LIMIT:
        raise BadMessage("bad_value", f"{key} is {len(str(value))} digits long")
    return value


def _float(data: dict[str, str], key: str) -> float | None:
    text = data.get(key)
    if text is None:
        return None
    try:
        return float(text)
    except ValueError as exc:
        raise BadMessage("wrong_type", f"{key}={text[:40]!r} is not a number") from exc


def _bool(data: dict[str, str], key: str, default: bool) -> bool:
    text = data.get(key)
    if text is None:
        return default
    if text.lower() in ("true", "yes", "1"):
        return True
    if text.lower() in ("false", "no", "0"):
        return False
    raise BadMessage("wrong_type", f"{key}={text[:40]!r} is not a boolean")


def _from_legacy(data: dict[str, str], topic_identity: str) -> NodeFacts:
    """MCollective/Facter facts: every value a string (openshift_facts.rb's names)."""
    profile = data.get("node_profile")
    if not profile:
        raise BadMessage("missing_field", "node_profile")
    max_active = _int(data, "max_active_gears", default=None)
    total = _int(data, "gears_total_count")
    idle = _int(data, "gears_idle_count")
    stopped = _int(data, "gears_stopped_count")
    active = _int(data, "gears_active_count", default=max(0, total - idle - stopped))
    district = data.get("district_uuid")
    return NodeFacts(
        identity=intern(topic_identity),
        node_profile=intern(profile),
        max_active_gears=max_active,
        gears=GearCounts(total=total, active=active, started=_int(data, "gears_started_count"),
                         idle=idle, stopped=stopped,
                         deploying=_int(data, "gears_deploying_count"),
                         unknown=_int(data, "gears_unknown_count")),
        district_uuid=None if district in (None, "", "NONE") else intern(district),
        district_active=_bool(data, "district_active", True),
        no_overcommit_active=_bool(data, "no_overcommit_active", False),
        public_hostname=data.get("public_hostname"),
        labels=_EMPTY_LABELS,
        bad_reason=_bad_numbers(max_active, [_float(data, k) for k in (
            "active_capacity", "capacity", "gears_usage_pct", "gears_active_usage_pct")]),
    )


def too_many(facts: NodeFacts, max_gears: int) -> str | None:
    """Which count, if any, is above ``max_gears`` (a liar or a broken agent)."""
    gears = facts.gears
    if max(facts.max_active_gears, gears.total, gears.active, gears.idle, gears.stopped,
           gears.started, gears.deploying, gears.unknown) <= max_gears:
        return None  # every message takes this path: one call, no tuples
    for name, value in (("max_active_gears", facts.max_active_gears), ("gears.total", gears.total),
                        ("gears.active", gears.active), ("gears.idle", gears.idle),
                        ("gears.stopped", gears.stopped), ("gears.started", gears.started),
                        ("gears.deploying", gears.deploying), ("gears.unknown", gears.unknown)):
        if value > max_gears:
            return f"{name} is {value}, above trust.max_gears ({max_gears})"
    return None


def _bounded(facts: NodeFacts, max_gears: int) -> NodeFacts:
    if facts.bad_reason is None:
        why = too_many(facts, max_gears)
        if why is not None:
            return replace(facts, bad_reason=why)
    return facts


def parse_legacy_facts(data: dict[str, str], *, identity: str,
                       max_gears: int = DEFAULT_MAX_GEARS) -> NodeFacts:
    """Legacy MCollective facts (every value a string) of ``identity``, already decoded:
    what the MCollective fact source gets from rpcutil. ``BadMessage`` when unusable."""
    return _bounded(_from_legacy(data, identity), max_gears)


def parse_facts(payload: bytes, *, topic_identity: str,
                max_gears: int = DEFAULT_MAX_GEARS) -> NodeFacts:
    """Parse and bound one facts payload (see ``_parse``); counts above ``max_gears`` make
    the facts bad, with the field named."""
    return _bounded(_parse(payload, topic_identity), max_gears)


def _parse(payload: bytes, topic_identity: str) -> NodeFacts:
    """Parse one facts payload published on ``nodes/{topic_identity}/facts``.

    Well-formed ``gearshift.node.facts/1`` messages take a fast path (pydantic parses the
    JSON itself, about four times faster than ``json.loads`` plus validation); anything
    that path does not accept goes the slow way, which names the exact reason.
    """
    if len(payload) > MAX_PAYLOAD:
        raise BadMessage("too_large", f"{len(payload)} bytes > {MAX_PAYLOAD}")
    if b'"schema"' in payload:
        try:
            message = FactsMessage.model_validate_json(payload)
        except ValidationError:
            pass
        else:
            if message.schema_ == SCHEMA:
                return _from_message(message, topic_identity)
    return _parse_slowly(payload, topic_identity)


def _parse_slowly(payload: bytes, topic_identity: str) -> NodeFacts:
    try:
        data = jsonlimits.loads(payload)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise BadMessage("invalid_json", str(exc)[:80]) from exc
    if not isinstance(data, dict):
        raise BadMessage("not_an_object", type(data).__name__)
    if "schema" in data:
        return _from_message(_validate(data), topic_identity)
    if data and all(isinstance(v, str) for v in data.values()):
        return _from_legacy(data, topic_identity)
    raise BadMessage("unknown_schema", "neither gearshift.node.facts/1 nor flat string facts")


def facts_to_message(facts: NodeFacts, *, now: float) -> dict[str, Any]:
    """The ``gearshift.node.facts/1`` message for ``facts`` (what agents publish)."""
    gears = facts.gears
    return {
        "schema": SCHEMA,
        "ts": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "seq": facts.seq,
        "identity": facts.identity,
        "node_profile": facts.node_profile,
        "district": {"uuid": facts.district_uuid, "active": facts.district_active},
        "limits": {"max_active_gears": facts.max_active_gears,
                   "no_overcommit_active": facts.no_overcommit_active},
        "gears": {"total": gears.total, "active": gears.active, "started": gears.started,
                  "idle": gears.idle, "stopped": gears.stopped, "deploying": gears.deploying,
                  "unknown": gears.unknown},
        "net": {"public_hostname": facts.public_hostname or facts.identity},
        "labels": dict(facts.labels),
    }
