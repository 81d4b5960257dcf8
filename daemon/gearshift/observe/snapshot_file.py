"""A fleet snapshot from a JSON file, for ``gearshift plan --snapshot`` and for tests.

Shape (every key but ``nodes`` optional)::

    {"now": "2026-11-24T12:00:00Z",
     "nodes": [ <gearshift.node.facts/1 message or legacy flat facts with "identity"> ...],
     "offline": ["node7.example.com"],
     "machines": [{"identity": "node1.example.com", "provider": "rack-a",
                   "machine_id": "rack-a-1", "pool": "small"}],
     "requests": [{"pool": "small", "gears": 120, "ttl": "30m"}]}

Node facts go through the same parser as MQTT messages.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from gearshift.durations import parse_duration
from gearshift.errors import BadMessage, ConfigError
from gearshift.model import CapacityRequest, FleetSnapshot, Machine
from gearshift.observe.fleet import FleetModel
from gearshift.wire.facts import parse_facts


def _now(value: Any, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, int | float):
        return float(value)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def load_snapshot(path: Path, *, now: float, stale_after: float) -> FleetSnapshot:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError([f"{path}:1:1: cannot read snapshot: {exc}"]) from exc
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
        raise ConfigError([f"{path}:1:1: expected an object with a list under 'nodes'"])
    at = _now(data.get("now"), now)
    fleet = FleetModel(stale_after=stale_after)
    problems = []
    for index, raw in enumerate(data["nodes"]):
        identity = raw.get("identity") if isinstance(raw, dict) else None
        if not isinstance(identity, str):
            problems.append(f"{path}:1:1: nodes[{index}]: no identity")
            continue
        try:
            facts = parse_facts(json.dumps(raw).encode(), topic_identity=identity)
        except BadMessage as exc:
            problems.append(f"{path}:1:1: nodes[{index}] ({identity}): {exc}")
            continue
        fleet.ingest(facts, received_at=at)
    for identity in data.get("offline", []):
        fleet.set_online(str(identity), False, at=at)
    if problems:
        raise ConfigError(problems)
    try:
        machines = {
            m["identity"]: Machine(provider=m["provider"], machine_id=m["machine_id"],
                                   name=m["identity"], pool=m.get("pool"),
                                   created_at=m.get("created_at"))
            for m in data.get("machines", [])}
        requests = [CapacityRequest(request_id=f"file-{i}", pool=r["pool"], gears=int(r["gears"]),
                                    expires_at=at + parse_duration(r.get("ttl", "30m")),
                                    reason=r.get("reason", ""))
                    for i, r in enumerate(data.get("requests", []))]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError([f"{path}:1:1: machines and requests need identity, provider, "
                           f"machine_id / pool, gears (and a ttl like 30m): "
                           f"{exc.__class__.__name__}: {exc}"]) from exc
    return fleet.snapshot(at, machines=machines, requests=requests)
