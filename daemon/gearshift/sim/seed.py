"""The fleet a simulation starts with: each pool's nodes, ready at the start and ours.

Kept apart from the run loop because the demo and the reconciler tests seed a world the
same way without running a simulation: one place decides how many nodes a pool starts
with (enough for its initial demand at the target density, at least ``min``).
"""

from __future__ import annotations

from gearshift.model import Machine
from gearshift.policy.schema import PolicySet, PoolPolicy
from gearshift.records import Journal
from gearshift.sim.nodes import SimNode
from gearshift.sim.world import SimWorld


def _initial_nodes(policy: PoolPolicy, policies: PolicySet, demand: int) -> list[tuple[str, str]]:
    """(provider, blueprint) of the nodes a pool starts with: enough for its initial demand
    at the target density, at least ``min``, in placement order."""
    assert policies.providers is not None
    result: list[tuple[str, str]] = []
    gears = 0
    for placement in [p for p in policy.placement if not p.burst_only] or policy.placement:
        blueprint = policies.providers.blueprint(placement.blueprint)
        spec = policies.providers.provider(placement.provider)
        if blueprint is None or spec is None:
            continue
        room = min(spec.quota.max_nodes, placement.max_nodes or spec.quota.max_nodes)
        for _ in range(room):
            if len(result) >= policy.size.min and gears >= max(
                    demand / policy.density.target, demand + policy.headroom_gears):
                return result
            if len(result) >= policy.size.max:
                return result
            result.append((spec.name, blueprint.name))
            gears += blueprint.expected_max_active_gears
    return result


async def seed_fleet(world: SimWorld, journal: Journal, policies: PolicySet,
                     demand: dict[str, int], *, start: float) -> None:
    """Give every pool the nodes it starts with, ready at ``start`` and owned by us."""
    assert policies.providers is not None
    for policy in policies.pools:
        world.set_demand(policy.name, demand.get(policy.name, 0))
        for i, (provider, blueprint_name) in enumerate(
                _initial_nodes(policy, policies, demand.get(policy.name, 0))):
            blueprint = policies.providers.blueprint(blueprint_name)
            assert blueprint is not None
            node = SimNode(identity=f"{policy.name}-seed-{i}", pool=policy.name,
                           profile=blueprint.node_profile,
                           max_active_gears=blueprint.expected_max_active_gears,
                           provider=provider, machine_id=f"{provider}-seed-{policy.name}-{i}",
                           key=f"seed-{policy.name}-{i}", created_at=start - 86400,
                           ready_at=start)
            world.add_node(node)
            await journal.adopt(Machine(provider=provider, machine_id=node.machine_id,
                                        name=node.identity, blueprint=blueprint_name,
                                        pool=policy.name, created_at=node.created_at,
                                        key=node.key))
