"""A plan as SREs read it: JSON for tools (``plan --json``, ``/v1/plan``) and plain text."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from gearshift.model import Plan, ScaleOut


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    actions = []
    for action in plan.actions:
        item: dict[str, Any] = {"kind": action.kind}
        item.update({k: v for k, v in asdict(action).items() if k != "candidates"})
        if isinstance(action, ScaleOut):
            item["candidates"] = [asdict(c) for c in action.candidates]
        actions.append(item)
    return {
        "at": _iso(plan.at),
        "pools": {name: asdict(e) for name, e in plan.pools.items()},
        "actions": actions,
    }


def plan_to_text(plan: Plan) -> str:
    lines = [f"plan at {_iso(plan.at)}"]
    for name, e in plan.pools.items():
        density = "n/a" if e.active_density is None else f"{e.active_density:.2f}"
        flags = "".join([" DEGRADED" if e.degraded else "", " PAUSED" if e.paused else ""])
        lines.append(f"  pool {name}: {e.active} active, {e.booting} booting, {e.draining} "
                     f"draining, {e.unknown} unknown; density {density}; desired "
                     f"{e.desired_nodes}{flags}")
        lines.append(f"    {e.summary}")
    if not plan.actions:
        lines.append("  no actions")
    for action in plan.actions:
        target = (f"+{action.count} on {action.provider} ({action.blueprint})"
                  if isinstance(action, ScaleOut) else action.identity)
        lines.append(f"  {action.kind} {action.pool}: {target}")
        lines.append(f"    why: {action.reason}")
        if isinstance(action, ScaleOut):
            for c in action.candidates:
                lines.append(f"    candidate {c.provider}/{c.blueprint}: {c.note}")
    return "\n".join(lines)
