"""Recovery, the provisioning timeout and the retire checks, on a simulated world with fake time.

Each test sets up the state a crash leaves behind (an operation journaled in some phase,
the world one step ahead of or behind it), runs recovery or one executor step, and
checks what the world and the journal say afterwards.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
from collections.abc import Callable
from dataclasses import replace

import pytest

from builders import policy_set, pool
from conftest import need
from gearshift.act.executor import Executor, ExecutorSettings
from gearshift.act.platform.base import MoveReport, NodeRef
from gearshift.act.providers.base import CreateRequest
from gearshift.act.providers.guard import GuardedProvider, GuardSettings
from gearshift.clock import InstantClock, ManualClock
from gearshift.errors import Fenced, JournalError, PlatformError, TransientError
from gearshift.metrics import Metrics
from gearshift.model import Action, Drain, FleetSnapshot, Machine, Retire, ScaleOut
from gearshift.observe.fleet import FleetModel
from gearshift.plan import Plan, PlannerState
from gearshift.policy.holder import PolicyHolder
from gearshift.policy.schema import PolicySet
from gearshift.reconcile.leader import Leadership, lead
from gearshift.reconcile.reconciler import Reconciler, plan_in_flight
from gearshift.reconcile.recovery import Recovery, RecoverySettings
from gearshift.records import Operation, Phase, drains_in_flight
from gearshift.sim.nodes import SimNode
from gearshift.sim.providers import SimulatedPlatform, SimulatedProvider
from gearshift.sim.world import SimWorld
from gearshift.store.journal import MemoryJournal
from worldrig import metric

SIM_PROVIDERS = {
    "apiVersion": "gearshift/v1", "kind": "Providers",
    "providers": [{"name": "rack-a", "kind": "simulated", "quota": {"max_nodes": 10},
                   "boot_time": "60s"}],
    "blueprints": [{"name": "small-bm", "provider": "rack-a", "node_profile": "small",
                    "max_active_gears": 20}],
}


class Rig:
    def __init__(self) -> None:
        self.clock = ManualClock()
        self.world = SimWorld(seed=3, start=self.clock.now(), move_time=5)
        self.policies: PolicySet = policy_set(pool(placement=[
            {"provider": "rack-a", "blueprint": "small-bm"}]), providers=SIM_PROVIDERS)
        assert self.policies.providers is not None
        self.spec = self.policies.providers.providers[0]
        self.blueprint = self.policies.providers.blueprints[0]
        self.raw = SimulatedProvider(self.spec, world=self.world, clock=self.clock,
                                     rng=random.Random(1))
        self.metrics = Metrics()
        self.provider = GuardedProvider(self.raw, clock=self.clock, metrics=self.metrics,
                                        settings=GuardSettings(retry_deadline=0),
                                        boot_time=60)
        self.platform = SimulatedPlatform(self.world)
        self.journal = MemoryJournal()
        self.fleet = FleetModel(stale_after=30)
        self.forgotten: list[str] = []
        self.recovery = Recovery(
            journal=self.journal, providers={"rack-a": self.provider}, platform=self.platform,
            fleet=self.fleet, policies=PolicyHolder.fixed(self.policies), clock=self.clock,
            metrics=self.metrics, settings=RecoverySettings(orphan_grace=300, listing_lag=0),
            holder="test", forget=self._forget)
        self.executor = Executor(providers={"rack-a": self.provider}, platform=self.platform,
                                 journal=self.journal, clock=self.clock, metrics=self.metrics,
                                 settings=ExecutorSettings(provisioning_timeout_factor=3,
                                                           min_provisioning_timeout=30),
                                 on_retired=self._forget)

    async def _forget(self, identity: str) -> None:
        self.forgotten.append(identity)
        self.fleet.forget(identity)

    def publish(self) -> None:
        now = self.clock.now()
        self.world.advance(now)
        for node in self.world.ready_nodes():
            self.fleet.ingest(node.facts(now), received_at=now)

    def create_op(self, op_id: str, phase: str = "requested", **extra: object) -> Operation:
        now = self.clock.now()
        return Operation(op_id=op_id, kind="create", pool="small", identity=f"node-{op_id}",
                         phase=Phase.REQUESTED, started_at=now, updated_at=now, provider="rack-a",
                         blueprint="small-bm", max_active_gears=20, **extra)  # type: ignore[arg-type]

    async def make_machine(self, op_id: str) -> Machine:
        """The provider made the machine for ``op_id`` (the daemon may not have heard)."""
        return await self.raw.create(CreateRequest(key=op_id, name=f"node-{op_id}",
                                                   pool="small", blueprint=self.blueprint))

    async def running_node(self, name: str, *, active: int) -> Machine:
        machine = await self.raw.create(CreateRequest(key=f"k-{name}", name=name, pool="small",
                                                      blueprint=self.blueprint))
        node = self.world.nodes[name]
        node.ready_at = self.clock.now()
        node.active = active
        await self.journal.adopt(machine)
        return machine


def plan(*actions: Action) -> Plan:
    return Plan(at=0.0, actions=actions, pools={}, state=PlannerState())


def machines_for_key(world: SimWorld, key: str) -> int:
    return world.creates_by_key[key]


async def test_a_create_cut_off_before_the_provider_answered_is_asked_again_with_its_key(
        ) -> None:
    rig = Rig()
    await rig.journal.begin(rig.create_op("a"))  # journaled; the daemon died before calling
    await rig.journal.begin(rig.create_op("b"))
    await rig.make_machine("b")  # the provider made it; the daemon died before the answer
    result = await rig.recovery.run()
    assert result.actions == {"create_reissued": 1, "create_adopted": 1}
    assert machines_for_key(rig.world, "a") == 1 and machines_for_key(rig.world, "b") == 1
    assert rig.world.violations.duplicate_creates == 0
    ops = {o.op_id: o for o in await rig.journal.open_operations()}
    assert ops["a"].phase == ops["b"].phase == "created"
    assert set(await rig.journal.machines()) == {"node-a", "node-b"}
    # Running recovery again changes nothing.
    again = await rig.recovery.run()
    assert again.actions == {"create_resumed": 2}
    assert len(rig.world.nodes) == 2


async def test_a_create_whose_machine_was_destroyed_is_closed_never_made_again() -> None:
    rig = Rig()
    await rig.journal.begin(rig.create_op("gone"))
    machine = await rig.make_machine("gone")
    await rig.journal.adopt(machine)
    await rig.journal.advance("gone", phase=Phase.CREATED, at=rig.clock.now(),
                              machine_id=machine.machine_id)
    rig.world.destroy("node-gone")  # e.g. the provisioning timeout destroyed it, then a crash
    result = await rig.recovery.run()
    assert result.actions == {"create_closed": 1}
    op = await rig.journal.get("gone")
    assert op is not None and op.phase == "failed"
    assert not rig.world.nodes and machines_for_key(rig.world, "gone") == 1
    assert await rig.journal.machines() == {}
    assert rig.forgotten == ["node-gone"]


async def test_drains_resume_deactivated_cancellations_finish_and_gone_machines_close() -> None:
    rig = Rig()
    for name in ("moving", "cancelling", "retiring"):
        await rig.running_node(name, active=0)
    rig.publish()
    now = rig.clock.now()
    for name, phase in (("moving", "moving"), ("cancelling", "cancelling"),
                        ("retiring", "retiring")):
        op = Operation(op_id=f"d-{name}", kind="drain", pool="small", identity=name,
                       phase=Phase.DEACTIVATING, started_at=now, updated_at=now, provider="rack-a",
                       machine_id=rig.world.nodes[name].machine_id, deadline=now + 600)
        await rig.journal.begin(op)
        if phase != "deactivating":
            path = {"moving": ["moving"], "cancelling": ["moving", "cancelling"],
                    "retiring": ["moving", "removing", "retiring"]}[phase]
            for step in path:
                await rig.journal.advance(op.op_id, phase=Phase(step), at=now)
    # What the crash left: "moving" is back in service (a cancel whose journal write was
    # lost reactivated it), "cancelling" is still out of service, and "retiring"'s
    # machine was destroyed just before the crash.
    rig.world.nodes["cancelling"].district_active = False
    rig.world.destroy("retiring")
    await rig.clock.advance(5)
    result = await rig.recovery.run()
    assert result.actions == {"drain_resumed": 1, "drain_cancelled": 1, "drain_finished": 1}
    assert rig.world.nodes["moving"].district_active is False  # deactivated again
    moving = await rig.journal.get("d-moving")
    assert moving is not None and moving.updated_at == rig.clock.now()  # retire needs newer facts
    assert rig.world.nodes["cancelling"].district_active is True
    cancelled = await rig.journal.get("d-cancelling")
    retired = await rig.journal.get("d-retiring")
    assert cancelled is not None and cancelled.phase == "cancelled"
    assert retired is not None and retired.phase == "retired"
    assert "retiring" not in await rig.journal.machines()
    assert rig.forgotten == ["retiring"]


async def test_orphans_healthy_are_adopted_silent_old_ones_retired_others_left_alone() -> None:
    rig = Rig()
    healthy = await rig.raw.create(CreateRequest(key="o1", name="healthy", pool="small",
                                                 blueprint=rig.blueprint))
    silent = await rig.raw.create(CreateRequest(key="o2", name="silent", pool="small",
                                                blueprint=rig.blueprint))
    await rig.raw.create(CreateRequest(key="o3", name="held", pool="small",
                                       blueprint=rig.blueprint))
    rig.world.nodes["healthy"].ready_at = rig.clock.now()
    rig.world.nodes["silent"].ready_at = rig.clock.now() + 10_000  # never comes up
    held = rig.world.nodes["held"]
    held.ready_at, held.active = 1e18, 4  # published once, holding gears, then went silent
    rig.fleet.ingest(held.facts(rig.clock.now()), received_at=rig.clock.now())
    rig.world.add_node(SimNode(identity="theirs", pool="small", profile="small",
                               max_active_gears=20, provider="rack-a", machine_id="x-1",
                               key="x-1", created_at=0, ready_at=0, tagged=False))
    rig.publish()
    await rig.clock.advance(160)
    rig.world.nodes["healthy"].dirty = True
    rig.publish()
    first = await rig.recovery.run()
    assert first.actions == {"orphan_adopted": 1, "orphan_waiting": 1, "orphan_held": 1}
    assert set(await rig.journal.machines()) == {"healthy"}
    await rig.clock.advance(300)
    rig.world.nodes["healthy"].dirty = True
    rig.publish()
    second = await rig.recovery.run(reason="sweep")
    assert second.actions == {"orphan_retired": 1, "orphan_held": 1}
    assert "silent" not in rig.world.nodes and "held" in rig.world.nodes
    assert "theirs" in rig.world.nodes and rig.world.nodes["theirs"].district_active
    retire = [o for o in await rig.journal.history() if o.identity == "silent"]
    assert [o.phase for o in retire] == ["retired"]
    assert silent.machine_id not in {m.machine_id for m in (await rig.journal.machines()).values()}
    assert healthy.name in await rig.journal.machines()
    assert metric(rig.metrics.exposition().decode(),
                  "gearshift_recovery_actions_total") == 5
    assert len(await rig.journal.recoveries()) == 2


class NoCreatedAt(SimulatedProvider):
    """A provider whose listing does not say when it made a machine."""

    async def list_owned(self) -> list[Machine]:
        return [replace(m, created_at=None) for m in await super().list_owned()]


async def test_an_orphans_grace_is_not_restarted_by_a_daemon_restarting_in_a_loop() -> None:
    rig = Rig()
    raw = NoCreatedAt(rig.spec, world=rig.world, clock=rig.clock, rng=random.Random(1))
    provider = GuardedProvider(raw, clock=rig.clock, settings=GuardSettings(retry_deadline=0))
    await raw.create(CreateRequest(key="o1", name="silent", pool="small",
                                   blueprint=rig.blueprint))
    rig.world.nodes["silent"].ready_at = 1e18  # never comes up, never publishes
    await raw.create(CreateRequest(key="o2", name="late", pool="small",
                                   blueprint=rig.blueprint))
    rig.world.nodes["late"].ready_at = rig.clock.now() + 150  # comes up, slowly
    outcomes = []
    for _ in range(4):  # the daemon restarts every 100s; the grace is 300s
        rig.publish()
        recovery = Recovery(journal=rig.journal, providers={"rack-a": provider},
                            platform=rig.platform, fleet=rig.fleet,
                            policies=PolicyHolder.fixed(rig.policies), clock=rig.clock,
                            settings=RecoverySettings(orphan_grace=300, listing_lag=0))
        outcomes.append(dict((await recovery.run()).actions))
        await rig.clock.advance(100)
    assert outcomes == [{"orphan_waiting": 2}, {"orphan_waiting": 2},
                        {"orphan_waiting": 1, "orphan_adopted": 1}, {"orphan_retired": 1}]
    assert "silent" not in rig.world.nodes and "late" in await rig.journal.machines()
    (first,) = (await rig.journal.first_seen()).values()
    assert first == rig.clock.now() - 400  # when the first of those daemons saw it
    await recovery.run(reason="sweep")  # no longer listed: its sighting is forgotten
    assert await rig.journal.first_seen() == {}


async def test_a_failed_listing_leaves_that_providers_operations_for_the_next_sweep() -> None:
    rig = Rig()
    await rig.journal.begin(rig.create_op("later"))

    async def broken() -> list[Machine]:
        raise TransientError("rack-a", "503")

    rig.raw.list_owned = broken  # type: ignore[method-assign]
    result = await rig.recovery.run()
    assert result.incomplete and result.failed_listings == {"rack-a"}
    assert (await rig.journal.open_operations())[0].phase == "requested"
    assert not rig.world.nodes
    assert await rig.recovery.maybe_sweep() is None  # incomplete: retried, but not at once
    await rig.clock.advance(10)
    again = await rig.recovery.maybe_sweep()
    assert again is not None and again.incomplete  # still down: the next wait doubles
    await rig.clock.advance(10)
    assert await rig.recovery.maybe_sweep() is None
    del rig.raw.list_owned  # the provider answers again
    await rig.clock.advance(10)
    assert await rig.recovery.maybe_sweep() is not None
    assert (await rig.journal.open_operations())[0].phase == "created"
    assert await rig.recovery.maybe_sweep() is None  # complete: next one after sweep_every
    text = rig.metrics.exposition().decode()
    assert 'gearshift_recoveries_total{outcome="incomplete",reason="start"} 1.0' in text
    assert 'gearshift_recoveries_total{outcome="incomplete",reason="sweep"} 1.0' in text


# -- the provisioning timeout -------------------------------------------------------------
async def progress(rig: Rig, snapshot: FleetSnapshot, is_fresh: Callable[[str], bool]) -> None:
    """What a reconcile does with operations in flight: the executor moves them on, then
    the planner gives up nodes that never came up and destroys again what failed to go,
    and the executor does that."""
    await rig.executor.progress(snapshot, is_fresh)
    now = rig.clock.now()
    in_flight = plan_in_flight(await rig.journal.open_operations(), snapshot, now=now,
                               providers=rig.executor.providers,
                               settings=rig.executor.settings)
    await rig.executor.execute(Plan(at=now, actions=in_flight.actions, pools={},
                                    state=PlannerState()), snapshot, rig.policies)


async def timed_out_create(rig: Rig) -> None:
    await rig.journal.begin(rig.create_op("slow"))
    machine = await rig.make_machine("slow")
    await rig.journal.adopt(machine)
    await rig.journal.advance("slow", phase=Phase.CREATED, at=rig.clock.now(),
                              machine_id=machine.machine_id)
    rig.world.nodes["node-slow"].ready_at = 1e18  # never publishes
    await rig.clock.advance(181)  # boot_time 60s x 3


async def test_a_node_silent_past_time_to_ready_times_factor_is_retired_and_backs_off() -> None:
    rig = Rig()
    await timed_out_create(rig)
    snapshot = rig.fleet.snapshot(rig.clock.now())
    await progress(rig, snapshot, lambda i: rig.fleet.is_fresh(i, rig.clock.now()))
    op = await rig.journal.get("slow")
    assert op is not None and op.phase == "failed" and op.error == "provisioning timeout"
    assert "node-slow" not in rig.world.nodes and await rig.journal.machines() == {}
    status = rig.provider.status()
    assert not status.available and "published no facts within 180s" in (
        status.why_unavailable or "")


async def test_no_provisioning_timeout_while_facts_are_stale() -> None:
    rig = Rig()
    await timed_out_create(rig)
    rig.fleet.source_up = False  # the broker is gone: silence proves nothing
    snapshot = rig.fleet.snapshot(rig.clock.now())
    await progress(rig, snapshot, lambda i: False)
    op = await rig.journal.get("slow")
    assert op is not None and op.phase == "created"
    assert "node-slow" in rig.world.nodes and rig.provider.status().available


async def test_the_timeout_never_retires_a_node_that_reports_active_gears() -> None:
    rig = Rig()
    await timed_out_create(rig)
    node = rig.world.nodes["node-slow"]
    node.ready_at, node.active = rig.clock.now() - 200, 3
    rig.fleet.ingest(node.facts(rig.clock.now() - 200), received_at=rig.clock.now() - 200)
    snapshot = rig.fleet.snapshot(rig.clock.now())  # its facts are stale: not registered
    await progress(rig, snapshot, lambda i: rig.fleet.is_fresh(i, rig.clock.now()))
    assert "node-slow" in rig.world.nodes
    assert rig.world.violations.retired_with_active_gears == 0


async def test_an_abandoning_create_resumed_after_a_crash_finishes_destroying() -> None:
    rig = Rig()
    await timed_out_create(rig)
    await rig.journal.advance("slow", phase=Phase.ABANDONING, at=rig.clock.now())  # then: crash
    snapshot = rig.fleet.snapshot(rig.clock.now())
    await progress(rig, snapshot, lambda i: False)
    op = await rig.journal.get("slow")
    assert op is not None and op.phase == "failed"
    assert "node-slow" not in rig.world.nodes


# -- retire checks ------------------------------------------------------------------------
async def test_a_retire_waits_for_facts_newer_than_the_deactivation() -> None:
    rig = Rig()
    machine = await rig.running_node("victim", active=0)
    await rig.running_node("other", active=0)
    rig.publish()  # facts: victim empty, in service
    await rig.clock.advance(1)
    policies = rig.policies
    snapshot = rig.fleet.snapshot(rig.clock.now(), machines=await rig.journal.machines())
    report = await rig.executor.execute(plan(Drain(pool="small", identity="victim", reason="t")),
                                        snapshot, policies)
    assert [e.outcome for e in report.events] == ["ok"]
    # Between the facts above and the deactivation, the broker placed gears on it.
    rig.world.nodes["victim"].active = 2
    retire = Retire(pool="small", identity="victim", provider="rack-a",
                    machine_id=machine.machine_id, reason="drained")
    ops = await rig.journal.open_operations()
    stale = rig.fleet.snapshot(rig.clock.now(), machines=await rig.journal.machines(),
                               drains=drains_in_flight(ops))
    report = await rig.executor.execute(plan(retire), stale, policies)
    assert report.events[0].outcome == "refused"
    assert "predate the deactivation" in (report.events[0].error or "")
    assert "victim" in rig.world.nodes
    await rig.clock.advance(1)
    victim = rig.world.nodes["victim"]
    rig.fleet.ingest(victim.facts(rig.clock.now()), received_at=rig.clock.now())  # 2 active
    fresh = rig.fleet.snapshot(rig.clock.now(), machines=await rig.journal.machines(),
                               drains=drains_in_flight(ops))
    report = await rig.executor.execute(plan(retire), fresh, policies)
    assert report.events[0].outcome == "refused" and "victim" in rig.world.nodes
    assert "active gears present" in (report.events[0].error or "")
    # Once newer facts show it empty, the same retire goes through.
    victim.active = 0
    await rig.clock.advance(1)
    rig.fleet.ingest(victim.facts(rig.clock.now()), received_at=rig.clock.now())
    empty = rig.fleet.snapshot(rig.clock.now(), machines=await rig.journal.machines(),
                               drains=drains_in_flight(ops))
    report = await rig.executor.execute(plan(retire), empty, policies)
    assert report.events[0].outcome == "ok" and "victim" not in rig.world.nodes
    assert rig.world.violations.retired_with_active_gears == 0
    done = [o for o in await rig.journal.history() if o.identity == "victim"]
    assert [o.phase for o in done] == ["retired"]


# -- leadership --------------------------------------------------------------------------
async def test_a_follower_cannot_write_and_a_leader_steps_down_when_fenced() -> None:
    journal = MemoryJournal()
    metrics = Metrics()
    leadership = Leadership(journal, holder="me", ttl=10, metrics=metrics)
    with pytest.raises(Fenced):
        await journal.begin(Operation(op_id="x", kind="create", pool="p", identity="n",
                                      phase=Phase.REQUESTED, started_at=0, updated_at=0))
    assert metric(metrics.exposition().decode(), "gearshift_leader") == 0
    assert await leadership.try_acquire()
    assert leadership.is_leader and leadership.elected.is_set()
    assert metric(metrics.exposition().decode(), "gearshift_leader") == 1
    await journal.begin(Operation(op_id="x", kind="create", pool="p", identity="n",
                                  phase=Phase.REQUESTED, started_at=0, updated_at=0))
    await journal.release_lease("me", leadership.token or 0)
    assert await journal.acquire_lease("someone-else", 10) is not None
    with pytest.raises(Fenced):
        await journal.advance("x", phase=Phase.CREATED, at=1)
    assert not leadership.is_leader and leadership.deposed.is_set()
    assert metric(metrics.exposition().decode(), "gearshift_leader") == 0
    assert metric(metrics.exposition().decode(), "gearshift_journal_fenced_writes_total") == 2


async def test_a_leader_that_stalled_longer_than_its_lease_steps_down_before_acting() -> None:
    journal = MemoryJournal()
    leadership = Leadership(journal, holder="me", ttl=0.05)
    assert await leadership.try_acquire()
    await asyncio.sleep(0.1)  # a pause (GC, frozen VM) longer than the lease
    await leadership.renew_once()
    assert not leadership.is_leader
    with pytest.raises(Fenced):
        await journal.adopt(Machine(provider="p", machine_id="m", name="n"))


async def test_operation_recovery_and_leader_metrics_pass_promtool() -> None:
    promtool = need("promtool")
    rig = Rig()
    leadership = Leadership(rig.journal, holder="me", metrics=rig.metrics)
    assert await leadership.try_acquire()
    await rig.journal.begin(rig.create_op("a"))
    await rig.clock.advance(42)
    await rig.recovery.run()
    await rig.executor.record_operations(rig.clock.now())
    text = rig.metrics.exposition().decode()
    assert "gearshift_leader 1.0" in text
    assert 'gearshift_operations_in_flight{kind="create"} 1.0' in text
    assert 'gearshift_operations_in_flight_by_phase{kind="create",phase="created"} 1.0' in text
    assert 'gearshift_oldest_operation_age_by_kind_seconds{kind="create"} 42.0' in text
    assert "gearshift_oldest_operation_age_seconds 42.0" in text
    assert 'gearshift_recoveries_total{outcome="complete",reason="start"} 1.0' in text
    assert 'gearshift_recovery_actions_total{action="create_reissued"} 1.0' in text
    assert rig.executor.in_flight["create"]["count"] == 1
    result = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                            capture_output=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# -- retires and drains that fail half-way -------------------------------------------------
class FlakyDestroy(SimulatedProvider):
    """Destroys fail ``failures`` times (the call never reached the machine), then work."""

    failures = 1

    async def destroy(self, machine_id: str) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise TransientError(self.name, "destroy: connection reset")
        await super().destroy(machine_id)


class CountingPlatform(SimulatedPlatform):
    """The simulated PaaS, counting every step; ``lose_deactivate`` makes a deactivation
    land but its answer get lost; ``crash_on`` makes a step raise a bug."""

    def __init__(self, world: SimWorld) -> None:
        super().__init__(world)
        self.calls: list[tuple[str, str]] = []
        self.lose_deactivate = False
        self.crash_on: str | None = None

    def _note(self, step: str, node: NodeRef) -> None:
        self.calls.append((step, node.identity))
        if self.crash_on == node.identity:
            raise RuntimeError("a bug in a platform adapter")

    async def deactivate(self, node: NodeRef) -> None:
        self._note("deactivate", node)
        await super().deactivate(node)
        if self.lose_deactivate:
            raise PlatformError(f"deactivate {node.identity}: no answer")

    async def activate(self, node: NodeRef) -> None:
        self._note("activate", node)
        await super().activate(node)

    async def move_gears(self, node: NodeRef, *, limit: int) -> MoveReport:
        self._note("move", node)
        return await super().move_gears(node, limit=limit)

    async def remove(self, node: NodeRef) -> None:
        self._note("remove", node)


def flaky_rig(*, failures: int = 1) -> tuple[Rig, CountingPlatform]:
    rig = Rig()
    rig.raw = FlakyDestroy(rig.spec, world=rig.world, clock=rig.clock, rng=random.Random(1))
    rig.raw.failures = failures
    rig.provider = GuardedProvider(rig.raw, clock=rig.clock, metrics=rig.metrics,
                                   settings=GuardSettings(retry_deadline=0), boot_time=60)
    platform = CountingPlatform(rig.world)
    rig.platform = platform
    rig.executor = Executor(providers={"rack-a": rig.provider}, platform=platform,
                            journal=rig.journal, clock=rig.clock, metrics=rig.metrics,
                            on_retired=rig._forget)
    rig.recovery.providers = {"rack-a": rig.provider}
    rig.recovery.platform = platform
    return rig, platform


async def drained_node(rig: Rig, name: str) -> tuple[Machine, Retire]:
    """``name`` deactivated by a drain, empty, with facts newer than the deactivation."""
    machine = await rig.running_node(name, active=0)
    rig.publish()
    snapshot = rig.fleet.snapshot(rig.clock.now(), machines=await rig.journal.machines())
    report = await rig.executor.execute(plan(Drain(pool="small", identity=name, reason="t")),
                                        snapshot, rig.policies)
    assert [e.outcome for e in report.events] == ["ok"]
    await rig.clock.advance(1)
    rig.publish()
    return machine, Retire(pool="small", identity=name, provider="rack-a",
                           machine_id=machine.machine_id, reason="drained")


async def fresh_snapshot(rig: Rig) -> FleetSnapshot:
    ops = await rig.journal.open_operations()
    return rig.fleet.snapshot(rig.clock.now(), machines=await rig.journal.machines(),
                              drains=drains_in_flight(ops))


async def test_a_retire_whose_destroy_failed_resumes_at_the_destroy() -> None:
    rig, platform = flaky_rig(failures=1)
    _, retire = await drained_node(rig, "victim")
    report = await rig.executor.execute(plan(retire), await fresh_snapshot(rig), rig.policies)
    assert [(e.outcome, e.error) for e in report.events] == [("failed", "TransientError")]
    op = next(o for o in await rig.journal.open_operations() if o.identity == "victim")
    assert op.phase == "retiring" and "victim" in rig.world.nodes
    # The planner asks again: the retire goes on from the destroy (no second remove, and
    # no "cannot go from retiring to removing").
    report = await rig.executor.execute(plan(retire), await fresh_snapshot(rig), rig.policies)
    assert [e.outcome for e in report.events] == ["ok"]
    assert "victim" not in rig.world.nodes
    assert [c for c in platform.calls if c[0] == "remove"] == [("remove", "victim")]
    assert [o.phase for o in await rig.journal.history() if o.identity == "victim"] == [
        "retired"]


async def test_a_retiring_machine_is_destroyed_again_without_waiting_for_its_facts() -> None:
    rig, _ = flaky_rig(failures=1)
    _, retire = await drained_node(rig, "victim")
    await rig.executor.execute(plan(retire), await fresh_snapshot(rig), rig.policies)
    rig.world.nodes["victim"].ready_at = 1e18  # half torn down: it publishes nothing more
    await rig.clock.advance(60)  # its facts are stale now
    snapshot = await fresh_snapshot(rig)
    assert {n.identity: n.state.value for n in snapshot.nodes}["victim"] == "unknown"
    await progress(rig, snapshot, lambda i: False)
    assert "victim" not in rig.world.nodes and rig.forgotten == ["victim"]
    assert await rig.journal.open_operations() == []


async def test_recovery_destroys_a_retiring_machine_of_ours_again() -> None:
    rig, _ = flaky_rig(failures=1)
    _, retire = await drained_node(rig, "victim")
    await rig.executor.execute(plan(retire), await fresh_snapshot(rig), rig.policies)
    result = await rig.recovery.run()  # after a restart
    assert result.actions["drain_finished"] == 1
    assert "victim" not in rig.world.nodes
    assert await rig.journal.open_operations() == []


async def test_a_retire_is_refused_while_newer_facts_still_show_the_node_in_service() -> None:
    rig, _ = flaky_rig(failures=0)
    _, retire = await drained_node(rig, "victim")
    # Someone (or a lost command) put it back in service after the deactivation.
    rig.world.nodes["victim"].district_active = True
    await rig.clock.advance(1)
    rig.publish()
    report = await rig.executor.execute(plan(retire), await fresh_snapshot(rig), rig.policies)
    assert report.events[0].outcome == "refused"
    assert "still show the node active" in (report.events[0].error or "")
    assert "victim" in rig.world.nodes


async def test_a_deactivation_whose_answer_was_lost_is_undone_before_the_drain_closes() -> None:
    rig, platform = flaky_rig(failures=0)
    await rig.running_node("victim", active=0)
    rig.publish()
    platform.lose_deactivate = True
    snapshot = rig.fleet.snapshot(rig.clock.now(), machines=await rig.journal.machines())
    report = await rig.executor.execute(plan(Drain(pool="small", identity="victim", reason="t")),
                                        snapshot, rig.policies)
    assert [e.outcome for e in report.events] == ["failed"]
    assert rig.world.nodes["victim"].district_active is False  # it did land
    op = next(o for o in await rig.journal.open_operations() if o.identity == "victim")
    assert op.phase == "cancelling"
    await progress(rig, await fresh_snapshot(rig), lambda i: True)
    assert rig.world.nodes["victim"].district_active is True
    assert [o.phase for o in await rig.journal.history() if o.identity == "victim"] == [
        "cancelled"]


async def test_one_action_crashing_does_not_stop_the_others() -> None:
    rig, platform = flaky_rig(failures=0)
    await rig.running_node("bad", active=0)
    await rig.running_node("good", active=0)
    rig.publish()
    platform.crash_on = "bad"
    snapshot = rig.fleet.snapshot(rig.clock.now(), machines=await rig.journal.machines())
    report = await rig.executor.execute(
        plan(Drain(pool="small", identity="bad", reason="t"),
             Drain(pool="small", identity="good", reason="t")), snapshot, rig.policies)
    assert [(e.target, e.outcome, e.error) for e in report.events] == [
        ("bad", "failed", "RuntimeError"), ("good", "ok", None)]
    assert rig.world.nodes["good"].district_active is False


async def test_no_gear_moves_are_asked_of_a_node_whose_facts_are_stale() -> None:
    rig, platform = flaky_rig(failures=0)
    await rig.running_node("victim", active=4)
    rig.publish()
    snapshot = rig.fleet.snapshot(rig.clock.now(), machines=await rig.journal.machines())
    await rig.executor.execute(plan(Drain(pool="small", identity="victim", reason="t")),
                               snapshot, rig.policies)
    await rig.clock.advance(1)
    rig.publish()
    await progress(rig, await fresh_snapshot(rig), lambda i: True)
    assert platform.calls.count(("move", "victim")) == 1
    rig.world.nodes["victim"].ready_at = 1e18  # its agent went silent
    await rig.clock.advance(60)
    await progress(rig, await fresh_snapshot(rig), lambda i: False)
    assert platform.calls.count(("move", "victim")) == 1


class LostAnswer(SimulatedProvider):
    """Makes the machine, then the answer is lost (a timeout)."""

    async def create(self, request: CreateRequest) -> Machine:
        await super().create(request)
        raise TransientError(self.name, "create timed out after 120s")


async def test_a_create_whose_answer_was_lost_stays_requested_and_is_never_made_twice() -> None:
    rig = Rig()
    raw = LostAnswer(rig.spec, world=rig.world, clock=rig.clock, rng=random.Random(1))
    guarded = GuardedProvider(raw, clock=rig.clock, settings=GuardSettings(retry_deadline=0),
                              boot_time=60)
    rig.executor = Executor(providers={"rack-a": guarded}, platform=rig.platform,
                            journal=rig.journal, clock=rig.clock, new_id=lambda: "op1")
    report = await rig.executor.execute(
        plan(ScaleOut(pool="small", provider="rack-a", blueprint="small-bm", count=1,
                      reason="t")), rig.fleet.snapshot(rig.clock.now()), rig.policies)
    assert [(e.outcome, e.error) for e in report.events] == [("failed", "transient")]
    op = await rig.journal.get("op1")
    assert op is not None and op.phase == "requested"  # counted as booting, not forgotten
    result = await rig.recovery.run()  # asks with the same key: the machine made is found
    assert result.actions == {"create_adopted": 1}
    assert machines_for_key(rig.world, "op1") == 1 and len(rig.world.nodes) == 1


async def test_a_leader_whose_recovery_cannot_use_the_journal_steps_down_and_tries_again(
        ) -> None:
    rig = Rig()
    leadership = Leadership(rig.journal, holder="me", ttl=10, renew=0.05, poll=0.01)
    reconciler = Reconciler(fleet=rig.fleet, policies=PolicyHolder.fixed(rig.policies),
                            executor=rig.executor, journal=rig.journal,
                            providers={"rack-a": rig.provider}, clock=InstantClock(),
                            interval=1.0)
    stop = asyncio.Event()
    seen: list[bool] = []

    class BrokenOnce:
        async def run(self, *, reason: str) -> None:
            seen.append(leadership.is_leader)
            if len(seen) == 1:
                raise JournalError("SQLite journal j.db: begin failed: database is locked")
            stop.set()

    async def caught_up() -> None:
        return None

    lease = asyncio.create_task(leadership.run(stop))
    await asyncio.wait_for(lead(reconciler=reconciler, leadership=leadership,
                                recovery=BrokenOnce(), caught_up=caught_up,  # type: ignore[arg-type]
                                stop=stop), timeout=10)
    await asyncio.wait_for(lease, timeout=10)
    assert seen == [True, True]  # it led each time it recovered
    assert leadership.terms == 2  # it stepped down after the failure, then was elected again
