"""A plan as SREs read it: JSON for tools (``plan --json``, ``/v1/plan``, the status
page's decisions) and plain text, every action with the candidates it was chosen from."""

from __future__ import annotations

from typing import Any

from gearshift.api_models import PlanModel, action_model
from gearshift.api_models import iso_time as _iso
from gearshift.model import Action, Drain, ScaleOut
from gearshift.plan import Plan


def action_to_dict(action: Action) -> dict[str, Any]:
    """One action with its reason and the candidates it was chosen from: placements for
    a scale-out (chosen, or skipped and why), nodes for a drain (scale-in victims,
    preemption victims, the burst node of a burst-and-return). Reactivations and
    retirements follow from a drain and have none."""
    return action_model(action).model_dump(mode="json")


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """``/v1/plan`` (api_models.PlanModel); ``PlanModel.model_validate(...).to_plan()``
    reads it back whole."""
    return PlanModel.from_plan(plan).model_dump(mode="json")


def plan_to_text(plan: Plan) -> str:
    lines = [f"plan at {_iso(plan.at)}"]
    for name, e in plan.pools.items():
        density = "n/a" if e.active_density is None else f"{e.active_density:.2f}"
        flags = "".join([" DEGRADED" if e.degraded else "", " PAUSED" if e.paused else ""])
        lines.append(f"  pool {name}: {e.active} active, {e.booting} booting, {e.draining} "
                     f"draining, {e.unknown} unknown; active density now {density}; desired "
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
