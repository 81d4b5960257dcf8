"""Small builders for policies, nodes and snapshots, so planner tables stay readable."""

from __future__ import annotations

from typing import Any

from gearshift.act.providers.base import CreateRequest, Provider, QuotaInfo
from gearshift.model import (
    DrainProgress,
    FleetSnapshot,
    GearCounts,
    Machine,
    Node,
    NodeFacts,
    NodeState,
    PendingNode,
)
from gearshift.policy.schema import PolicySet, PoolPolicy, ProvidersFile

PROVIDERS: dict[str, Any] = {
    "apiVersion": "gearshift/v1",
    "kind": "Providers",
    "providers": [
        {"name": "rack-a", "kind": "redfish", "quota": {"max_nodes": 24}, "cost_per_hour": 0.02,
         "boot_time": "8m"},
        {"name": "vsphere-dc1", "kind": "vsphere", "quota": {"max_nodes": 40},
         "cost_per_hour": 0.06, "boot_time": "3m"},
        {"name": "ec2-east", "kind": "ec2", "quota": {"max_nodes": 100}, "cost_per_hour": 0.19,
         "boot_time": "2m"},
    ],
    "blueprints": [
        {"name": "small-bm", "provider": "rack-a", "node_profile": "small",
         "max_active_gears": 60},
        {"name": "small-vmw", "provider": "vsphere-dc1", "node_profile": "small",
         "max_active_gears": 60},
        {"name": "small-ec2", "provider": "ec2-east", "node_profile": "small",
         "max_active_gears": 60},
        {"name": "large-bm", "provider": "rack-a", "node_profile": "large",
         "max_active_gears": 15},
    ],
}


def pool(**overrides: Any) -> PoolPolicy:
    """A pool like the ARCHITECTURE example, without schedules, with overrides."""
    data: dict[str, Any] = {
        "apiVersion": "gearshift/v1", "kind": "Pool", "name": "small", "priority": 100,
        "selector": {"node_profile": "small"}, "size": {"min": 2, "max": 40},
        "density": {"scale_up_above": 0.80, "scale_down_below": 0.45, "target": 0.65},
        "headroom_gears": 0, "step": {"max_up": 5, "max_down": 2},
        "cooldown": {"up": "60s", "down": "10m"}, "stabilization": {"down": "15m"},
        "scale_in": {"strategy": "fewest_gears", "drain_timeout": "20m",
                     "max_concurrent_drains": 2},
        "placement": [
            {"provider": "rack-a", "blueprint": "small-bm", "max_nodes": 20},
            {"provider": "vsphere-dc1", "blueprint": "small-vmw", "max_nodes": 30},
            {"provider": "ec2-east", "blueprint": "small-ec2", "max_nodes": 50,
             "burst_only": True},
        ],
    }
    for key, value in overrides.items():
        data[key] = value
    return PoolPolicy.model_validate(data)


def policy_set(*pools: PoolPolicy, providers: dict[str, Any] | None = None) -> PolicySet:
    ordered = sorted(pools, key=lambda p: (-p.priority, p.name))
    return PolicySet(pools=tuple(ordered),
                     providers=ProvidersFile.model_validate(providers or PROVIDERS))


def node(identity: str, *, active: int, max_gears: int = 60, profile: str = "small",
         state: NodeState = NodeState.ACTIVE, total: int | None = None,
         provider: str | None = "rack-a", created_at: float = 0.0, owned: bool = True,
         pool_name: str = "small", bad: str | None = None) -> Node:
    facts = NodeFacts(identity=identity, node_profile=profile, max_active_gears=max_gears,
                      gears=GearCounts(total=active if total is None else total, active=active),
                      district_uuid="d1", district_active=state is not NodeState.DRAINING,
                      bad_reason=bad)
    machine = (Machine(provider=provider, machine_id=f"m-{identity}", name=identity,
                       pool=pool_name, created_at=created_at)
               if owned and provider is not None else None)
    return Node(identity=identity, state=state, facts=facts, last_seen=0.0, machine=machine)


def nodes(count: int, *, active: int, prefix: str = "n", **kwargs: Any) -> list[Node]:
    return [node(f"{prefix}{i:02d}", active=active, **kwargs) for i in range(count)]


def booting(identity: str, *, provider: str = "rack-a", blueprint: str = "small-bm",
            max_gears: int = 60, pool_name: str = "small") -> PendingNode:
    return PendingNode(identity=identity, pool=pool_name, provider=provider, blueprint=blueprint,
                       max_active_gears=max_gears, requested_at=0.0)


def drain(identity: str, *, started: float, deadline: float, pool_name: str = "small"
          ) -> DrainProgress:
    return DrainProgress(identity=identity, pool=pool_name, started_at=started, deadline=deadline,
                         phase="moving")


def snapshot(node_list: list[Node], *, at: float = 1_800_000_000.0, **kwargs: Any
             ) -> FleetSnapshot:
    return FleetSnapshot(taken_at=at, nodes=tuple(node_list), **kwargs)


class ListedMachines(Provider):
    """A provider that lists ``owned`` (counting how often it was asked) and records
    destroys; nothing else is used by the tests that take it."""

    def __init__(self, name: str, *, owned: list[Machine] | None = None) -> None:
        super().__init__(name)
        self.destroyed: list[str] = []
        self.owned = owned or []
        self.listings = 0

    async def create(self, request: CreateRequest) -> Machine:
        raise AssertionError("nothing is created here")

    async def list_owned(self) -> list[Machine]:
        self.listings += 1
        return list(self.owned)

    async def destroy(self, machine_id: str) -> None:
        self.destroyed.append(machine_id)

    async def stop(self, machine_id: str) -> None:
        raise AssertionError("nothing is stopped here")

    async def start(self, machine_id: str) -> None:
        raise AssertionError("nothing is started here")

    async def quota(self) -> QuotaInfo:
        return QuotaInfo(10, 3)
