"""The world server's referee: the faults it injects and the score it keeps.

The world server (``server.py``) is the referee of the crash, fault and HA tests. Its
HTTP handlers decide *when* something counts; this module holds *what* is counted and
how the report (``GET /v1/report``) is made of it. Both are plain data with no HTTP and
no clock of their own (times are parameters), so the figures a test asserts on are
computed in one place that can be read without the server around it:

* ``Faults``: the knobs ``POST /v1/admin/faults`` turns (names are the wire names);
* ``Score``: every provider call by provider, operation and outcome with its time,
  PaaS steps, machines touched that are not ours, resurrected keys, retired nodes;
* ``report``: the score and the world's state as one JSON-ready dict, with the busiest
  10-second window of provider calls (a retry storm shows there).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from gearshift.sim.world import SimWorld

BUSY_WINDOW = 10.0  # seconds: the window of busiest_10s_provider_calls


@dataclass
class Faults:
    failure_rate: float = 0.0
    hang_rate: float = 0.0
    hang_seconds: float = 5.0
    slow_seconds: float = 0.0
    platform_failure_rate: float = 0.0
    platform_slow_seconds: float = 0.0


@dataclass
class Score:
    calls: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    call_times: list[float] = field(default_factory=list)
    platform_calls: Counter[str] = field(default_factory=Counter)
    foreign_touched: int = 0
    resurrected_keys: list[str] = field(default_factory=list)
    destroyed_keys: set[str] = field(default_factory=set)
    deactivations: list[tuple[float, str]] = field(default_factory=list)
    retired: list[dict[str, Any]] = field(default_factory=list)

    def count(self, provider: str, op: str, outcome: str, *, at: float) -> None:
        """One provider call ``op`` that ended in ``outcome`` at time ``at``."""
        self.calls[(provider, op, outcome)] += 1
        self.call_times.append(at)


def busiest(times: list[float], *, window: float = BUSY_WINDOW) -> int:
    """The most of ``times`` (sorted) that fall within any ``window`` seconds."""
    most, left = 0, 0
    for right, t in enumerate(times):
        while t - times[left] > window:
            left += 1
        most = max(most, right - left + 1)
    return most


def report(score: Score, world: SimWorld, *, now: float) -> dict[str, Any]:
    """The score and the world's state at ``now``, as ``GET /v1/report`` answers it."""
    times = sorted(score.call_times)
    calls: dict[str, dict[str, int]] = {}
    for (provider, op, outcome), n in sorted(score.calls.items()):
        calls.setdefault(provider, {})[f"{op}:{outcome}"] = n
    nodes = [{"identity": n.identity, "provider": n.provider, "machine_id": n.machine_id,
              "key": n.key, "pool": n.pool, "tagged": n.tagged, "ready": n.ready(now),
              "district_active": n.district_active, "active": n.active, "idle": n.idle,
              "stopped": n.stopped, "powered": n.powered} for n in world.nodes.values()]
    violations = world.violations.as_dict()
    violations["foreign_touched"] = score.foreign_touched
    return {
        "now": now,
        "nodes": nodes,
        "demand": dict(world.demand),
        "unmet": dict(world.unmet),
        "violations": violations,
        "resurrected_keys": score.resurrected_keys,
        "calls": calls,
        "total_provider_calls": len(times),
        "busiest_10s_provider_calls": busiest(times),
        "platform_calls": dict(score.platform_calls),
        "deactivations": score.deactivations,
        "retired": score.retired,
        "creates": sum(n for (_, op, outcome), n in score.calls.items()
                       if op == "create" and outcome == "ok"),
        "machines_made": len(world.keys),
        "destroyed": len(world.destroyed),
        "gear_moves": dict(world.move_stats),
    }
