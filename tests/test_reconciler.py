"""The reconcile loop with fake time: timer, wake-ups, spillover, crashes, stop."""

from __future__ import annotations

import asyncio
import random
import subprocess
from typing import Any

from builders import PROVIDERS, policy_set, pool
from conftest import need
from gearshift import decide
from gearshift.act.executor import Executor
from gearshift.act.progress import ExecutionReport
from gearshift.act.providers.guard import GuardedProvider, GuardSettings
from gearshift.clock import ManualClock
from gearshift.metrics import Metrics
from gearshift.model import FleetSnapshot
from gearshift.observe.fleet import FleetModel
from gearshift.plan import Plan
from gearshift.policy.holder import PolicyHolder
from gearshift.policy.schema import PolicySet, ProvidersFile
from gearshift.reconcile.reconciler import Reconciler
from gearshift.reconcile.retention import JournalPruner
from gearshift.records import Operation, Phase, RecoveryRecord
from gearshift.settings import Settings
from gearshift.sim.providers import SimulatedPlatform, SimulatedProvider
from gearshift.sim.seed import seed_fleet
from gearshift.sim.world import SimWorld
from gearshift.store.journal import MemoryJournal


class Rig:
    """A reconciler over a simulated world, on a manual clock."""

    def __init__(self, policies: PolicySet, *, demand: int, clock: ManualClock) -> None:
        assert policies.providers is not None
        self.clock = clock
        self.world = SimWorld(seed=1, start=clock.now(), move_time=5)
        self.policies = policies
        self.demand = demand
        self.journal = MemoryJournal()
        self.fleet = FleetModel(stale_after=120)
        self.metrics = Metrics()
        rng = random.Random(1)
        self.providers = {s.name: GuardedProvider(
            SimulatedProvider(s, world=self.world, clock=clock, rng=rng), clock=clock,
            metrics=self.metrics, settings=GuardSettings(retry_deadline=5), boot_time=s.boot_time)
            for s in policies.providers.providers}
        self.executor = Executor(providers=self.providers, platform=SimulatedPlatform(self.world),
                                 journal=self.journal, clock=clock, metrics=self.metrics)
        self.reconciler = Reconciler(fleet=self.fleet, policies=PolicyHolder.fixed(policies),
                                     executor=self.executor, journal=self.journal,
                                     providers=self.providers, clock=clock, interval=30,
                                     metrics=self.metrics)

    async def seed(self) -> None:
        """Start with the pool's min of 2 nodes, then apply the demand."""
        await seed_fleet(self.world, self.journal, self.policies, {"small": 0},
                         start=self.clock.now())
        self.world.set_demand("small", self.demand)
        self.publish()

    def publish(self) -> None:
        self.world.advance(self.clock.now())
        for node in self.world.ready_nodes():
            self.fleet.ingest(node.facts(self.clock.now()), received_at=self.clock.now())


async def test_timer_and_wake_drive_reconciles_without_sleeping() -> None:
    clock = ManualClock()
    rig = Rig(policy_set(pool()), demand=100, clock=clock)
    await rig.seed()
    stop = asyncio.Event()
    task = asyncio.create_task(rig.reconciler.run(stop))
    await clock.advance(0)
    assert rig.reconciler.reconciles == 1
    await clock.advance(29)
    assert rig.reconciler.reconciles == 1
    await clock.advance(1)
    assert rig.reconciler.reconciles == 2
    rig.reconciler.wake("test")
    await clock.advance(0)
    assert rig.reconciler.reconciles == 3
    stop.set()
    await asyncio.wait_for(task, 1)


async def test_a_crashing_reconcile_is_logged_and_the_loop_goes_on() -> None:
    clock = ManualClock()
    rig = Rig(policy_set(pool()), demand=100, clock=clock)
    await rig.seed()
    calls = {"n": 0}
    original = rig.reconciler.reconcile_once

    async def flaky() -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return await original()

    rig.reconciler.reconcile_once = flaky  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(rig.reconciler.run(stop))
    await clock.advance(0)
    await clock.advance(30)
    assert calls["n"] == 2
    assert rig.reconciler.reconciles == 1
    exposition = rig.metrics.exposition().decode()
    assert 'gearshift_reconciles_total{outcome="error"} 1.0' in exposition
    assert 'gearshift_reconciles_total{outcome="ok"} 1.0' in exposition
    stop.set()
    await asyncio.wait_for(task, 1)


async def test_quota_error_spills_to_the_next_provider_in_the_same_reconcile() -> None:
    data = {**PROVIDERS, "providers": [dict(p) for p in PROVIDERS["providers"]]}
    # rack-a's real quota is bigger on paper than in reality: the provider refuses the 3rd.
    data["providers"][0]["simulation"] = {"capacity_errors_after": 0}
    policies = policy_set(pool(), providers=data)
    clock = ManualClock()
    rig = Rig(policies, demand=110, clock=clock)  # 2 seed nodes at 0.92: +2 nodes
    await rig.seed()
    plan = await rig.reconciler.reconcile_once()
    made = {n.provider for n in rig.world.nodes.values() if not n.key.startswith("seed")}
    assert made == {"vsphere-dc1"}
    assert rig.reconciler.reconciles == 1
    kinds = [(a.kind, getattr(a, "provider", "")) for a in plan.actions]
    assert ("scale_out", "rack-a") in kinds and ("scale_out", "vsphere-dc1") in kinds
    status = rig.providers["rack-a"].status()
    assert not status.available and "capacity" in (status.why_unavailable or "")


async def test_one_snapshot_and_one_plan_on_the_way_to_the_create_call(
        monkeypatch: Any) -> None:
    """Nothing in flight: the snapshot that operations were pushed forward on is the one
    planned and acted on, planned once before the create; the plan that shows the fleet
    after the actions (status, metrics) is made when first looked at: the first scrape,
    once, whoever reads it after."""
    clock = ManualClock()
    rig = Rig(policy_set(pool()), demand=110, clock=clock)  # 2 seed nodes at 0.92: +1 node
    await rig.seed()
    events: list[tuple[str, int]] = []
    real_plan = decide.plan
    real_progress, real_execute = rig.executor.progress, rig.executor.execute

    def plan(snapshot: FleetSnapshot, *args: Any, **kwargs: Any) -> Plan:
        events.append(("plan", id(snapshot)))
        return real_plan(snapshot, *args, **kwargs)

    async def progress(snapshot: FleetSnapshot, *args: Any, **kwargs: Any) -> None:
        events.append(("progress", id(snapshot)))
        await real_progress(snapshot, *args, **kwargs)

    async def execute(plan: Plan, snapshot: FleetSnapshot, *args: Any) -> ExecutionReport:
        events.append(("execute", id(snapshot)))
        return await real_execute(plan, snapshot, *args)

    monkeypatch.setattr(decide, "plan", plan)  # the reconciler calls decide.plan
    monkeypatch.setattr(rig.executor, "progress", progress)
    monkeypatch.setattr(rig.executor, "execute", execute)
    made = await rig.reconciler.reconcile_once()
    assert [a.kind for a in made.actions] == ["scale_out"]
    assert [kind for kind, _ in events] == ["progress", "plan", "execute"]
    first = events[0][1]
    assert events[1][1] == first and events[2][1] == first  # one snapshot to the create
    scraped = rig.metrics.exposition().decode()
    assert 'gearshift_pool_nodes{pool="small",state="booting"} 1.0' in scraped
    assert 'gearshift_provider_nodes{provider="rack-a",state="active"} 2.0' in scraped
    assert [kind for kind, _ in events] == ["progress", "plan", "execute", "plan"]
    assert events[3][1] != first  # the fleet after it: a node now booting
    assert rig.reconciler.last_pools["small"].booting == 1
    rig.metrics.exposition()
    assert len(events) == 4  # made once



async def test_a_failing_status_plan_shows_the_pools_as_planned(monkeypatch: Any) -> None:
    """The plan of the fleet after the actions is only for status: when it fails, status
    and metrics show the acting plan's pools, and nothing retries it on every read."""
    clock = ManualClock()
    rig = Rig(policy_set(pool()), demand=110, clock=clock)
    await rig.seed()
    real_plan = decide.plan
    plans: list[int] = []

    def plan(*args: Any, **kwargs: Any) -> Plan:
        plans.append(1)
        if len(plans) > 1:
            raise RuntimeError("a bug in the status plan")
        return real_plan(*args, **kwargs)

    monkeypatch.setattr(decide, "plan", plan)
    made = await rig.reconciler.reconcile_once()
    assert [a.kind for a in made.actions] == ["scale_out"]
    assert rig.reconciler.last_pools == made.pools  # (the one before the create)
    assert 'gearshift_pool_nodes{pool="small",state="active"} 2.0' in \
        rig.metrics.exposition().decode()
    assert len(plans) == 2

async def test_nodes_register_when_their_facts_arrive_and_time_to_ready_is_measured() -> None:
    clock = ManualClock()
    rig = Rig(policy_set(pool()), demand=110, clock=clock)
    await rig.seed()
    await rig.reconciler.reconcile_once()
    assert len(await rig.journal.open_operations()) == 1  # 110 gears want 170 slots: +1
    await clock.advance(8 * 60 + 1)
    rig.publish()
    await rig.reconciler.reconcile_once()
    assert await rig.journal.open_operations() == []
    assert rig.providers["rack-a"].boot_time == 481
    assert 'gearshift_provider_time_to_ready_seconds{provider="rack-a"} 481.0' in \
        rig.metrics.exposition().decode()


def test_providers_fixture_is_valid() -> None:
    assert ProvidersFile.model_validate(PROVIDERS).providers


async def test_a_slow_create_goes_on_in_the_background_without_stalling_the_loop() -> None:
    """A create slower than create_wait leaves the reconcile; its node counts as booting,
    the next reconcile does not order it again, and recovery leaves it to finish."""
    from gearshift.act.executor import ExecutorSettings
    from gearshift.reconcile.recovery import Recovery

    clock = ManualClock()
    rig = Rig(policy_set(pool()), demand=110, clock=clock)
    await rig.seed()
    release = asyncio.Event()
    provider = rig.providers["rack-a"].provider
    real_create = provider.create

    async def slow_create(request):
        await release.wait()
        return await real_create(request)

    provider.create = slow_create  # type: ignore[method-assign]
    rig.executor.settings = ExecutorSettings(create_wait=0.05)
    await asyncio.wait_for(rig.reconciler.reconcile_once(), 5)
    (op,) = await rig.journal.open_operations()
    assert op.phase == "requested" and op.op_id in rig.executor.creating
    second = await asyncio.wait_for(rig.reconciler.reconcile_once(), 5)
    assert not [a for a in second.actions if a.kind == "scale_out"]  # it is counted as booting
    assert rig.reconciler.last_pools["small"].booting == 1

    recovery = Recovery(journal=rig.journal, providers=rig.providers,
                        platform=rig.executor.platform, fleet=rig.fleet,
                        policies=rig.reconciler.policies, clock=clock,
                        creating=lambda: rig.executor.creating)
    result = await recovery.run(reason="sweep")
    assert result.actions["create_in_progress"] == 1
    assert result.actions["create_reissued"] == 0

    release.set()
    for _ in range(50):
        if not rig.executor.creating:
            break
        await asyncio.sleep(0.01)
    (op,) = await rig.journal.open_operations()
    assert op.phase == "created"
    assert len([n for n in rig.world.nodes.values() if not n.key.startswith("seed")]) == 1
    await rig.executor.close()


DAY = 86400.0


async def finished(rig: Rig, op_id: str, *, done_at: float) -> None:
    """A create that registered at ``done_at``."""
    await rig.journal.begin(Operation(op_id=op_id, kind="create", pool="small",
                                      identity=f"n-{op_id}", phase=Phase.REQUESTED,
                                      started_at=done_at - 600, updated_at=done_at - 600))
    await rig.journal.advance(op_id, phase=Phase.CREATED, at=done_at - 300)
    await rig.journal.advance(op_id, phase=Phase.REGISTERED, at=done_at)


async def test_the_leader_prunes_old_finished_operations_between_reconciles_hourly() -> None:
    assert Settings().journal.keep_finished == 30 * DAY
    clock = ManualClock()
    rig = Rig(policy_set(pool()), demand=60, clock=clock)
    await rig.seed()
    now = clock.now()
    await finished(rig, "old", done_at=now - 31 * DAY)
    await finished(rig, "recent", done_at=now - 29.99 * DAY)
    await rig.journal.begin(Operation(op_id="stuck", kind="drain", pool="small", identity="n9",
                                      phase=Phase.DEACTIVATING, started_at=now - 90 * DAY,
                                      updated_at=now - 90 * DAY))
    await rig.journal.record_recovery(RecoveryRecord(at=now - 40 * DAY, holder="h", summary={}))
    pruner = JournalPruner(rig.journal, clock=clock, keep=30 * DAY, metrics=rig.metrics)
    rig.reconciler.before.append(pruner.maybe_prune)
    await rig.reconciler.reconcile_once()
    assert await rig.journal.get("old") is None
    assert {o.op_id for o in await rig.journal.history()} >= {"recent", "stuck"}
    assert await rig.journal.recoveries() == []
    text = rig.metrics.exposition().decode()
    assert 'gearshift_journal_pruned_total{what="operations"} 1.0' in text
    assert 'gearshift_journal_pruned_total{what="recoveries"} 1.0' in text
    result = subprocess.run([need("promtool"), "check", "metrics"], input=text.encode(),
                            capture_output=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    # "recent" is old enough a few minutes later, but the next prune is an hour away.
    await clock.advance(30 * 60)
    await rig.reconciler.reconcile_once()
    assert await rig.journal.get("recent") is not None
    await clock.advance(30 * 60)
    await rig.reconciler.reconcile_once()
    assert await rig.journal.get("recent") is None
    assert await rig.journal.get("stuck") is not None  # not done: never pruned
    assert 'gearshift_journal_pruned_total{what="operations"} 2.0' in \
        rig.metrics.exposition().decode()


async def test_keep_finished_zero_keeps_everything() -> None:
    clock = ManualClock()
    rig = Rig(policy_set(pool()), demand=60, clock=clock)
    await finished(rig, "ancient", done_at=clock.now() - 1000 * DAY)
    pruner = JournalPruner(rig.journal, clock=clock, keep=0)
    assert await pruner.maybe_prune() is None
    assert await rig.journal.get("ancient") is not None
