"""Drains that end this plan: drained nodes retired (or parked in their placement's warm
pool, ``decide.warm``), overdue drains reactivated (or retired anyway when the policy says
so and no gear is active)."""

from __future__ import annotations

from gearshift.decide.context import PlanContext
from gearshift.decide.pools import PoolView
from gearshift.decide.warm import park_instead
from gearshift.durations import format_duration
from gearshift.model import Action, CancelDrain, NodeState, Retire
from gearshift.records import Phase

# Drain phases past which a node is never reactivated: it is being taken out of its
# district (``removing``) or its machine destroyed (``retiring``); the retire only resumes.
POINT_OF_NO_RETURN = frozenset({Phase.REMOVING, Phase.RETIRING})


def finish_drains(view: PoolView, ctx: PlanContext) -> tuple[list[Action], set[str]]:
    """Retire drained nodes; stop drains past their deadline. Returns the drains it ended."""
    policy = view.policy
    now = ctx.now
    actions: list[Action] = []
    ended: set[str] = set()
    for drain in view.drains:
        if drain.phase == Phase.RETIRING:
            continue  # out of its district, its machine being destroyed: the executor finishes
        node = ctx.nodes_by_id.get(drain.identity)
        facts = node.facts if node is not None and node.state is not NodeState.UNKNOWN else None
        machine = node.machine if node is not None else None
        why = drain_purpose(drain.identity, ctx)
        parked = None
        if facts is not None and machine is not None and facts.gears.total == 0:
            parked = park_instead(policy, drain=drain, machine=machine, ctx=ctx, why=why)
        if parked is not None:
            actions.append(parked)
            ended.add(drain.identity)
        elif facts is not None and machine is not None and facts.gears.total == 0:
            actions.append(Retire(pool=policy.name, identity=drain.identity,
                                  provider=machine.provider, machine_id=machine.machine_id,
                                  reason=f"pool {policy.name}: {drain.identity} is drained "
                                         f"(0 gears left){why}; retiring its machine"))
            ended.add(drain.identity)
        elif now >= drain.deadline and drain.phase not in POINT_OF_NO_RETURN:
            ended.add(drain.identity)
            left = "unknown" if facts is None else str(facts.gears.total)
            overdue = f"drain of {drain.identity}{why} passed its deadline " \
                      f"({format_duration(policy.scale_in.drain_timeout)}) with {left} gears left"
            if (policy.scale_in.on_drain_timeout == "retire" and facts is not None
                    and machine is not None and facts.gears.active == 0):
                actions.append(Retire(pool=policy.name, identity=drain.identity,
                                      provider=machine.provider, machine_id=machine.machine_id,
                                      reason=f"pool {policy.name}: {overdue}, none active; "
                                             f"retiring anyway (on_drain_timeout: retire)"))
            else:
                actions.append(CancelDrain(pool=policy.name, identity=drain.identity,
                                           reason=f"pool {policy.name}: {overdue}; reactivating"))
        if drain.identity in ended:
            ctx.budget.end(policy.name, machine.provider if machine is not None else None)
    return actions, ended


def drain_purpose(identity: str, ctx: PlanContext) -> str:
    """' (preempted by pool X)' for a preemption drain, else ''."""
    preemption = ctx.preemptions.get(identity)
    return f" (preempted by pool {preemption.by_pool})" if preemption is not None else ""
