"""Warm pools in the executor and recovery (``act.warm``), on the simulated world with fake
time: park, resume, destroy a parked machine, the checks on each, and the steps a restart
finishes (a stop or a start cut off, a removal of a silent node)."""

from __future__ import annotations

from gearshift.model import CancelDrain, Drain, FleetSnapshot, NodeState, Park, Resume, RetireParked
from gearshift.records import Phase, drains_in_flight, parked_machines, pending_nodes
from test_recovery import Rig, drained_node, plan


async def snapshot_of(rig: Rig) -> FleetSnapshot:
    ops = await rig.journal.open_operations()
    return rig.fleet.snapshot(rig.clock.now(), machines=await rig.journal.machines(),
                              drains=drains_in_flight(ops), parked=parked_machines(ops),
                              pending=pending_nodes(ops))


async def phase_of(rig: Rig, identity: str) -> str:
    ops = [o for o in await rig.journal.history() if o.identity == identity and o.kind == "drain"]
    return ops[0].phase.value


async def parked_node(rig: Rig, name: str) -> Park:
    machine, _ = await drained_node(rig, name)
    park = Park(pool="small", identity=name, provider="rack-a", machine_id=machine.machine_id,
                reason="drained")
    report = await rig.executor.execute(plan(park), await snapshot_of(rig), rig.policies)
    assert [e.outcome for e in report.events] == ["ok"], report.events
    return park


async def test_a_drained_node_is_parked_stopped_and_kept_out_of_service() -> None:
    rig = Rig()
    await parked_node(rig, "n1")
    node = rig.world.nodes["n1"]
    assert not node.powered and not node.district_active  # stopped, still deactivated
    assert await phase_of(rig, "n1") == "parked"
    op = next(o for o in await rig.journal.open_operations() if o.identity == "n1")
    assert op.blueprint == "small-bm" and op.max_active_gears == 20  # what a resume needs
    # Silent from now on: parked, not unknown, and no capacity.
    await rig.clock.advance(120)
    rig.publish()
    snapshot = await snapshot_of(rig)
    assert snapshot.by_id["n1"].state is NodeState.PARKED
    assert [p.identity for p in snapshot.parked] == ["n1"] and not snapshot.drains


async def test_a_park_is_refused_on_facts_older_than_the_deactivation() -> None:
    rig = Rig()
    machine = await rig.running_node("n1", active=0)
    rig.publish()
    await rig.executor.execute(plan(Drain(pool="small", identity="n1", reason="t")),
                               await snapshot_of(rig), rig.policies)
    park = Park(pool="small", identity="n1", provider="rack-a", machine_id=machine.machine_id,
                reason="drained")
    report = await rig.executor.execute(plan(park), await snapshot_of(rig), rig.policies)
    # (facts from the instant of the deactivation still show it in service)
    assert report.events[0].outcome == "refused"
    assert rig.world.nodes["n1"].powered


async def test_a_parked_machine_resumes_counts_as_booting_and_is_reactivated_on_new_facts(
        ) -> None:
    rig = Rig()
    park = await parked_node(rig, "n1")
    await rig.clock.advance(600)
    resume = Resume(pool="small", identity="n1", provider="rack-a",
                    machine_id=park.machine_id, reason="demand")
    report = await rig.executor.execute(plan(resume), await snapshot_of(rig), rig.policies)
    assert [e.outcome for e in report.events] == ["ok"]
    assert await phase_of(rig, "n1") == "resuming"
    snapshot = await snapshot_of(rig)
    assert [p.identity for p in snapshot.pending] == ["n1"]  # capacity on its way
    await rig.clock.advance(61)  # the world's resume time is the boot time (60 s) here
    rig.publish()
    snapshot = await snapshot_of(rig)
    assert not snapshot.pending and snapshot.by_id["n1"].state is NodeState.DRAINING
    report = await rig.executor.execute(
        plan(CancelDrain(pool="small", identity="n1", reason="resumed")), snapshot,
        rig.policies)
    assert [e.outcome for e in report.events] == ["ok"]
    assert rig.world.nodes["n1"].district_active and await phase_of(rig, "n1") == "cancelled"
    assert rig.provider.resume_time == 61  # measured: the planner's lead for this provider


async def test_a_parked_machine_is_destroyed_after_removal_from_its_district() -> None:
    rig = Rig()
    park = await parked_node(rig, "n1")
    gone = RetireParked(pool="small", identity="n1", provider="rack-a",
                        machine_id=park.machine_id, reason="idle")
    report = await rig.executor.execute(plan(gone), await snapshot_of(rig), rig.policies)
    assert [e.outcome for e in report.events] == ["ok"]
    assert "n1" not in rig.world.nodes and rig.forgotten == ["n1"]
    assert await phase_of(rig, "n1") == "retired"


async def test_a_parked_machine_started_behind_our_back_with_gears_is_not_destroyed() -> None:
    rig = Rig()
    park = await parked_node(rig, "n1")
    await rig.clock.advance(10)
    node = rig.world.nodes["n1"]
    rig.world.power_on("n1", ready_at=rig.clock.now())
    node.district_active, node.active = True, 5  # someone put it back to work
    rig.publish()
    gone = RetireParked(pool="small", identity="n1", provider="rack-a",
                        machine_id=park.machine_id, reason="idle")
    report = await rig.executor.execute(plan(gone), await snapshot_of(rig), rig.policies)
    assert report.events[0].outcome == "refused"
    assert "n1" in rig.world.nodes


async def test_a_resume_or_a_park_not_a_parked_machine_is_refused() -> None:
    rig = Rig()
    machine = await rig.running_node("n1", active=3)
    rig.publish()
    for action in (Resume(pool="small", identity="n1", provider="rack-a",
                          machine_id=machine.machine_id, reason="x"),
                   Park(pool="small", identity="n1", provider="rack-a",
                        machine_id=machine.machine_id, reason="x")):
        report = await rig.executor.execute(plan(action), await snapshot_of(rig), rig.policies)
        assert report.events[0].outcome == "refused"
    assert rig.world.nodes["n1"].powered


async def test_recovery_finishes_a_stop_and_a_start_a_restart_cut_off() -> None:
    rig = Rig()
    await drained_node(rig, "a")
    await drained_node(rig, "b")
    ops = {o.identity: o for o in await rig.journal.open_operations()}
    # killed after journaling "parking", before the stop reached the provider
    await rig.journal.advance(ops["a"].op_id, phase=Phase.PARKING, at=rig.clock.now())
    # ... and after journaling "resuming" (a parked machine), before the start
    await rig.journal.advance(ops["b"].op_id, phase=Phase.PARKING, at=rig.clock.now())
    rig.world.power_off("b")
    await rig.journal.advance(ops["b"].op_id, phase=Phase.PARKED, at=rig.clock.now())
    await rig.journal.advance(ops["b"].op_id, phase=Phase.RESUMING, at=rig.clock.now())
    result = await rig.recovery.run()
    assert result.actions["parked"] == 1 and result.actions["resumed"] == 1
    assert not rig.world.nodes["a"].powered and await phase_of(rig, "a") == "parked"
    assert rig.world.nodes["b"].powered and await phase_of(rig, "b") == "resuming"
    # Both idempotent: a second recovery changes nothing.
    await rig.recovery.run()
    assert not rig.world.nodes["a"].powered and rig.world.nodes["b"].powered


async def test_recovery_finishes_the_removal_of_a_silent_parked_machine() -> None:
    rig = Rig()
    park = await parked_node(rig, "n1")
    op = next(o for o in await rig.journal.open_operations() if o.identity == "n1")
    await rig.journal.advance(op.op_id, phase=Phase.REMOVING, at=rig.clock.now())  # then killed
    await rig.clock.advance(120)  # silent: no fresh facts will come
    result = await rig.recovery.run()
    assert result.actions["drain_finished"] == 1
    assert park.identity not in rig.world.nodes and await phase_of(rig, "n1") == "retired"
