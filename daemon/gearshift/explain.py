"""A plan as SREs read it: JSON for tools (``plan --json``, ``/v1/plan``, the status
page's decisions) and plain text, every action with the candidates it was chosen from."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from gearshift.model import Action, Drain, Plan, ScaleOut


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def action_to_dict(action: Action) -> dict[str, Any]:
    """One action with its reason and the candidates it was chosen from: placements for
    a scale-out (chosen, or skipped and why), nodes for a drain (scale-in victims,
    preemption victims, the burst node of a burst-and-return). Reactivations and
    retirements follow from a drain and have none."""
    item: dict[str, Any] = {"kind": action.kind}
    item.update({k: v for k, v in asdict(action).items() if k != "candidates"})
    item["candidates"] = [asdict(c) for c in getattr(action, "candidates", ())]
    return item


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    return {
        "at": _iso(plan.at),
        "pools": {name: asdict(e) for name, e in plan.pools.items()},
        "actions": [action_to_dict(a) for a in plan.actions],
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
        elif isinstance(action, Drain):
            for n in action.candidates:
                lines.append(f"    candidate {n.identity} ({n.provider}): {n.note}")
    return "\n".join(lines)
