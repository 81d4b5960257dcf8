"""Simulated stand-ins for every provider and for the PaaS, backed by one ``SimWorld``.

Each provider named in the providers file gets a ``SimulatedProvider`` that obeys its
``simulation:`` block: boot time (default: the provider's ``boot_time``) plus a random
jitter, a ``failure_rate`` of transient errors, and capacity errors once
``capacity_errors_after`` machines have been made (and, with ``capacity_recovers_after``,
only for that long). A stopped machine started again is ready after ``resume_time`` (default:
the boot time) plus up to ``resume_jitter``, and costs the provider's
``stopped_cost_per_hour`` while it is stopped (sim/report.py). Quotas are enforced as a
real provider would, the real one (``quota_max_nodes``) when it is lower than the file
says.
"""

from __future__ import annotations

import random

from gearshift.act.platform.base import GearCount, MoveReport, NodeRef, Platform
from gearshift.act.providers.base import CreateRequest, Provider, QuotaInfo
from gearshift.clock import Clock
from gearshift.errors import (
    CapacityUnavailable,
    NotFound,
    PermanentError,
    QuotaExceeded,
    TransientError,
)
from gearshift.model import Machine, PowerState
from gearshift.policy.schema import ProviderSpec
from gearshift.policy.simulation_spec import SimulationSpec
from gearshift.sim.nodes import SimNode
from gearshift.sim.world import SimWorld


class SimulatedProvider(Provider):
    def __init__(self, spec: ProviderSpec, *, world: SimWorld, clock: Clock,
                 rng: random.Random) -> None:
        super().__init__(spec.name)
        self.spec = spec
        self.sim = spec.simulation or SimulationSpec()
        self.world = world
        self.clock = clock
        self.rng = rng
        self.created = 0
        self.capacity_error_since: float | None = None
        self._machines: dict[str, Machine] = {}  # identity -> its Machine, built once

    def _machine(self, node: SimNode) -> Machine:
        power = (PowerState.STOPPED if not node.powered else
                 PowerState.RUNNING if node.ready(self.clock.now()) else PowerState.STARTING)
        machine = self._machines.get(node.identity)
        if (machine is None or machine.machine_id != node.machine_id or machine.key != node.key
                or machine.power is not power):
            machine = Machine(provider=self.name, machine_id=node.machine_id,
                              name=node.identity, blueprint=node.blueprint, pool=node.pool,
                              created_at=node.created_at, key=node.key, power=power)
            self._machines[node.identity] = machine  # immutable: listings reuse it
        return machine

    def _capacity_exhausted(self, now: float) -> bool:
        limit = self.sim.capacity_errors_after
        if limit is None or self.created < limit:
            return False
        if self.capacity_error_since is None:
            self.capacity_error_since = now
        recover = self.sim.capacity_recovers_after
        if recover is not None and now - self.capacity_error_since >= recover:
            self.created = 0  # capacity came back; it may run out again later
            self.capacity_error_since = None
            return False
        return True

    async def create(self, request: CreateRequest) -> Machine:
        existing = self.world.keys.get(request.key)
        if existing is not None and existing in self.world.nodes:
            return self._machine(self.world.nodes[existing])
        now = self.clock.now()
        if self.rng.random() < self.sim.failure_rate:
            raise TransientError(self.name, "simulated API error (503)")
        owned = sum(1 for n in self.world.nodes.values() if n.provider == self.name)
        quota = self.spec.quota.max_nodes
        if self.sim.quota_max_nodes is not None:
            quota = min(quota, self.sim.quota_max_nodes)
        if owned >= quota:
            raise QuotaExceeded(self.name, f"quota of {quota} nodes reached")
        if self._capacity_exhausted(now):
            raise CapacityUnavailable(self.name, "simulated InsufficientInstanceCapacity")
        boot = self.sim.boot_time if self.sim.boot_time is not None else self.spec.boot_time
        ready_at = now + boot + (self.rng.uniform(0, self.sim.boot_jitter)
                                 if self.sim.boot_jitter else 0.0)
        blueprint = request.blueprint
        node = SimNode(identity=request.name, pool=request.pool, profile=blueprint.node_profile,
                       max_active_gears=blueprint.expected_max_active_gears, provider=self.name,
                       machine_id=f"{self.name}-m{len(self.world.keys) + 1}", key=request.key,
                       created_at=now, ready_at=ready_at, blueprint=blueprint.name)
        self.world.add_node(node)
        self.created += 1
        return self._machine(node)

    async def list_owned(self) -> list[Machine]:
        return [self._machine(n) for n in self.world.nodes.values()
                if n.provider == self.name and n.tagged]

    async def destroy(self, machine_id: str) -> None:
        node = next((n for n in self.world.nodes.values() if n.machine_id == machine_id), None)
        if node is not None:
            self.world.destroy(node.identity)

    def _owned(self, machine_id: str, what: str) -> SimNode:
        node = next((n for n in self.world.nodes.values()
                     if n.machine_id == machine_id and n.provider == self.name), None)
        if node is None:
            raise NotFound(self.name, f"{what}: no such machine")
        if not node.tagged:
            raise PermanentError(self.name, f"refusing to {what}: it is not gearshift's")
        return node

    async def stop(self, machine_id: str) -> None:
        self.world.power_off(self._owned(machine_id, f"stop {machine_id}").identity)

    async def start(self, machine_id: str) -> None:
        node = self._owned(machine_id, f"start {machine_id}")
        if node.powered:
            return
        resume = self.sim.resume_time
        if resume is None:
            resume = self.spec.resume_time
        if resume is None:
            resume = self.sim.boot_time if self.sim.boot_time is not None else self.spec.boot_time
        jitter = self.rng.uniform(0, self.sim.resume_jitter) if self.sim.resume_jitter else 0.0
        self.world.power_on(node.identity, ready_at=self.clock.now() + resume + jitter)

    async def quota(self) -> QuotaInfo:
        used = sum(1 for n in self.world.nodes.values() if n.provider == self.name)
        return QuotaInfo(max_nodes=self.spec.quota.max_nodes, used=used)


class SimulatedPlatform(Platform):
    """The PaaS side: districts and gear moves, in the simulated world."""

    def __init__(self, world: SimWorld) -> None:
        self.world = world

    async def deactivate(self, node: NodeRef) -> None:
        self.world.set_district_active(node.identity, False)

    async def activate(self, node: NodeRef) -> None:
        self.world.set_district_active(node.identity, True)

    async def move_gears(self, node: NodeRef, *, limit: int) -> MoveReport:
        started, remaining = self.world.start_moves(node.identity, limit)
        return MoveReport(started=started, failed=0, remaining=remaining)

    async def remove(self, node: NodeRef) -> None:
        return None

    async def add(self, node: NodeRef) -> None:
        return None

    async def gears(self, node: NodeRef) -> GearCount | None:
        found = self.world.nodes.get(node.identity)
        if found is None:
            return GearCount(total=0, active=0, source="simulated world")
        return GearCount(total=found.total, active=found.active, source="simulated world")

    async def members(self) -> frozenset[str] | None:
        now = self.world.now
        return frozenset(i for i, n in self.world.nodes.items() if n.ready(now))
