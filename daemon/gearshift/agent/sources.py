"""Where a node's facts come from: OpenShift's Facter file, the container runtime, or a file.

Each source returns typed ``NodeFacts`` through the same parser the daemon uses for MQTT
messages, so the agent can never publish something the daemon would reject for its shape.
A source that cannot be read raises ``FactsUnavailable``; the agent then publishes
nothing new (its retained facts age, and the daemon's ``stale_after`` does the rest).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import yaml

from gearshift import safeyaml
from gearshift.agent.config import ContainerFacts, FactSourceConfig, FileFacts, OpenShiftFacts
from gearshift.errors import BadMessage, FactsUnavailable
from gearshift.model import GearCounts, NodeFacts
from gearshift.wire.facts import MAX_PAYLOAD, parse_facts

# container state -> gear state (podman and docker use the same words)
CONTAINER_STATES = {
    "running": "started", "exited": "stopped", "created": "stopped", "stopped": "stopped",
    "paused": "idle", "restarting": "deploying", "configured": "stopped",
    "initialized": "stopped", "removing": "stopped", "dead": "unknown",
}


def _flat(data: dict[Any, Any]) -> dict[str, str]:
    """Facter YAML values as MCollective hands them on: strings (nested facts dropped)."""
    flat = {}
    for key, value in data.items():
        if isinstance(value, bool):
            flat[str(key)] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            flat[str(key)] = str(value)
    return flat


def facts_from_mapping(data: Any, identity: str) -> NodeFacts:
    """A ``gearshift.node.facts/1`` message or flat facts, read the daemon's way."""
    if not isinstance(data, dict):
        raise FactsUnavailable("facts are not a mapping")
    payload = ({**data, "identity": data.get("identity", identity)} if "schema" in data
               else _flat(data))
    try:
        # YAML turns unquoted timestamps into datetimes: JSON gets their ISO form.
        text = json.dumps(payload, default=_as_json)
    except (TypeError, ValueError) as exc:
        raise FactsUnavailable(f"facts cannot be written as JSON: {exc}") from exc
    try:
        return parse_facts(text.encode(), topic_identity=identity)
    except BadMessage as exc:
        raise FactsUnavailable(f"facts rejected: {exc}") from exc


def _as_json(value: Any) -> str:
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not a fact value")


def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FactsUnavailable(f"cannot read {path}: {exc.strerror}") from exc
    if len(text) > 4 * MAX_PAYLOAD * 16:
        raise FactsUnavailable(f"{path} is too large")
    try:
        return json.loads(text) if path.suffix == ".json" else safeyaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise FactsUnavailable(f"{path} is not valid {path.suffix.lstrip('.') or 'YAML'}") \
            from exc


def count_containers(output: str) -> Counter[str]:
    """Gear states from ``ps --all --format json``: a JSON array (podman) or JSON lines
    (docker)."""
    text = output.strip()
    if not text:
        return Counter()
    try:
        parsed = json.loads(text)
        rows = parsed if isinstance(parsed, list) else [parsed]
    except ValueError:
        try:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError as exc:
            raise FactsUnavailable("container runtime printed something that is not JSON") \
                from exc
    states: Counter[str] = Counter()
    for row in rows:
        if not isinstance(row, dict):
            raise FactsUnavailable("container runtime printed a non-object row")
        state = str(row.get("State", "")).lower()
        states[CONTAINER_STATES.get(state, "unknown")] += 1
    return states


class FactSource:
    def __init__(self, config: FactSourceConfig, identity: str) -> None:
        self.config = config
        self.identity = identity

    async def read(self) -> NodeFacts:
        config = self.config
        if isinstance(config, OpenShiftFacts | FileFacts):
            data = await asyncio.to_thread(_read, config.path)
            return facts_from_mapping(data, self.identity)
        return await self._containers(config)

    async def _containers(self, config: ContainerFacts) -> NodeFacts:
        binary = str(config.binary) if config.binary else shutil.which(config.runtime)
        if binary is None:
            raise FactsUnavailable(f"{config.runtime} is not installed")
        argv = [binary, "ps", "--all", "--format", "json"]
        for value in config.filters:
            argv += ["--filter", value]
        try:
            process = await asyncio.create_subprocess_exec(
                *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                stdin=asyncio.subprocess.DEVNULL)
        except OSError as exc:
            raise FactsUnavailable(f"cannot run {binary}: {exc.strerror}") from exc
        try:
            async with asyncio.timeout(config.timeout):
                out, err = await process.communicate()
        except TimeoutError as exc:
            process.kill()
            await process.wait()
            raise FactsUnavailable(f"{config.runtime} ps took longer than "
                                   f"{config.timeout:g}s") from exc
        if process.returncode != 0:
            raise FactsUnavailable(f"{config.runtime} ps exited {process.returncode}: "
                                   f"{err.decode(errors='replace')[:200]}")
        states = count_containers(out.decode(errors="replace"))
        started, idle = states["started"], states["idle"]
        stopped, deploying = states["stopped"], states["deploying"]
        total = sum(states.values())
        return NodeFacts(
            identity=self.identity, node_profile=config.node_profile,
            max_active_gears=config.max_active_gears,
            gears=GearCounts(total=total, active=total - idle - stopped, started=started,
                             idle=idle, stopped=stopped, deploying=deploying,
                             unknown=states["unknown"]),
            district_uuid=config.district_uuid, district_active=config.district_active,
            public_hostname=self.identity)
