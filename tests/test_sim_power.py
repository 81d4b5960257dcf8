"""Stopped machines in the simulator: resume_time, and a stopped machine's disk in the cost.

The simulated providers obey the same stop/start contract as the real ones (the contract
suite runs those against their simulators); here: a stopped node publishes nothing and
takes no gears, a started one is ready after ``resume_time`` plus up to ``resume_jitter``,
and ``simulate`` charges stopped node-seconds at ``stopped_cost_per_hour``.
"""

from __future__ import annotations

import asyncio
import copy
import random
from pathlib import Path

import pytest
import yaml
from aiohttp.test_utils import TestServer

from builders import PROVIDERS, policy_set, pool
from conftest import ROOT
from gearshift.act.providers.base import CreateRequest
from gearshift.act.providers.simulated import SimulatedWorldProvider
from gearshift.clock import ManualClock
from gearshift.errors import NotFound, PermanentError
from gearshift.model import PowerState
from gearshift.policy.loader import load_policy_set
from gearshift.policy.schema import PolicySet
from gearshift.settings import MqttSettings
from gearshift.sim.providers import SimulatedProvider
from gearshift.sim.runner import SimOptions, Simulation
from gearshift.sim.server import WorldServer
from gearshift.sim.trace import read_trace
from gearshift.sim.world import SimWorld

FLASH = ROOT / "policies" / "examples" / "flash-crowd"
T0 = 1_800_000_000.0


def rig(**simulation: object) -> tuple[SimulatedProvider, SimWorld, ManualClock, PolicySet]:
    providers = copy.deepcopy(PROVIDERS)
    providers["providers"][0]["simulation"] = simulation  # rack-a: boot_time 8m
    policies = policy_set(pool(), providers=providers)
    assert policies.providers is not None
    clock = ManualClock(start=T0)
    world = SimWorld(start=T0)
    provider = SimulatedProvider(policies.providers.providers[0], world=world, clock=clock,
                                 rng=random.Random(3))
    return provider, world, clock, policies


def at(world: SimWorld, clock: ManualClock, now: float) -> None:
    clock.set(now)
    world.advance(now)


async def test_a_stopped_node_takes_no_gears_and_resumes_after_resume_time() -> None:
    provider, world, clock, policies = rig(resume_time="1m", resume_jitter="30s")
    assert policies.providers is not None
    blueprint = policies.providers.blueprint("small-bm")
    assert blueprint is not None
    machine = await provider.create(CreateRequest(key="k1", name="n1", pool="small",
                                                  blueprint=blueprint))
    assert [m.power for m in await provider.list_owned()] == [PowerState.STARTING]
    world.set_demand("small", 30)
    at(world, clock, T0 + 480)  # booted (8 min)
    assert [m.power for m in await provider.list_owned()] == [PowerState.RUNNING]
    assert world.nodes["n1"].active == 30 and world.unmet["small"] == 0

    await provider.stop(machine.machine_id)
    await provider.stop(machine.machine_id)  # already stopped: fine
    at(world, clock, T0 + 490)
    assert [m.power for m in await provider.list_owned()] == [PowerState.STOPPED]
    assert world.ready_nodes() == [] and world.unmet["small"] == 30  # its gears went down
    assert (world.nodes["n1"].active, world.nodes["n1"].idle) == (0, 30)  # still on its disk

    at(world, clock, T0 + 490 + 3600)
    assert world.node_seconds["rack-a"] == pytest.approx(480)  # running until stopped
    assert world.stopped_node_seconds["rack-a"] == pytest.approx(3610)

    await provider.start(machine.machine_id)
    await provider.start(machine.machine_id)  # already started: fine, no second resume
    resumed_at = clock.now()
    ready_at = world.nodes["n1"].ready_at
    assert resumed_at + 60 <= ready_at <= resumed_at + 90  # resume_time + up to the jitter
    assert [m.power for m in await provider.list_owned()] == [PowerState.STARTING]
    at(world, clock, ready_at)
    assert [m.power for m in await provider.list_owned()] == [PowerState.RUNNING]
    assert world.unmet["small"] == 0 and world.nodes["n1"].dirty  # facts again


async def test_without_resume_time_a_resume_takes_a_boot() -> None:
    provider, world, clock, policies = rig(boot_time="5m")
    assert policies.providers is not None
    blueprint = policies.providers.blueprint("small-bm")
    assert blueprint is not None
    machine = await provider.create(CreateRequest(key="k1", name="n1", pool="small",
                                                  blueprint=blueprint))
    at(world, clock, T0 + 300)
    await provider.stop(machine.machine_id)
    await provider.start(machine.machine_id)
    assert world.nodes["n1"].ready_at == T0 + 300 + 300  # the simulation's boot_time


@pytest.mark.parametrize("op", ["stop", "start"])
async def test_stop_or_start_of_an_unknown_or_foreign_machine_is_refused(op: str) -> None:
    provider, world, _, policies = rig()
    assert policies.providers is not None
    blueprint = policies.providers.blueprint("small-bm")
    assert blueprint is not None
    with pytest.raises(NotFound, match=f"{op} nope"):
        await getattr(provider, op)("nope")
    machine = await provider.create(CreateRequest(key="k1", name="n1", pool="small",
                                                  blueprint=blueprint))
    world.nodes["n1"].tagged = False
    with pytest.raises(PermanentError):
        await getattr(provider, op)(machine.machine_id)
    assert world.nodes["n1"].powered


def test_simulate_charges_stopped_machines_at_their_rate(tmp_path: Path) -> None:
    data = yaml.safe_load((FLASH / "providers.yaml").read_text())
    # rack-a; dearer than any real disk, so its share shows at the report's 2 decimals (and
    # a stopped machine may cost at most what a running one does)
    data["providers"][0].update(cost_per_hour=0.5, stopped_cost_per_hour=0.5)
    providers = tmp_path / "providers.yaml"
    providers.write_text(yaml.safe_dump(data))
    policies = load_policy_set([FLASH / "pools", providers])
    trace = read_trace(FLASH / "trace.csv")
    sim = Simulation(policies, trace, SimOptions(seed=1, duration=3600))
    advance = sim.world.advance

    def stop_one_seed_node(now: float) -> None:  # nothing in the daemon stops machines yet
        node = sim.world.nodes.get("small-seed-0")
        if node is not None and node.powered and now >= sim.options.start + 600:
            sim.world.power_off(node.identity)
        advance(now)

    sim.world.advance = stop_one_seed_node  # type: ignore[method-assign]
    report = asyncio.run(sim.run()).report
    stopped = report["stopped_node_seconds"]
    assert stopped["rack-a"] > 0 and stopped["vsphere-dc1"] == stopped["ec2-east"] == 0
    rates = {"rack-a": (0.5, 0.5), "vsphere-dc1": (0.06, 0.0), "ec2-east": (0.19, 0.0)}
    expected = {name: report["node_seconds"][name] / 3600 * running
                + stopped[name] / 3600 * parked for name, (running, parked) in rates.items()}
    assert report["cost_by_provider"] == {n: round(c, 2) for n, c in expected.items()}
    assert report["cost"] == round(sum(expected.values()), 2)
    running_only = report["node_seconds"]["rack-a"] / 3600 * 0.5
    assert report["cost_by_provider"]["rack-a"] >= round(running_only, 2) + 0.1  # disk costs


def test_a_report_without_stopped_machines_has_no_stopped_figures() -> None:
    policies = load_policy_set([FLASH / "pools", FLASH / "providers.yaml"])
    report = asyncio.run(Simulation(policies, read_trace(FLASH / "trace.csv"),
                                    SimOptions(seed=1, duration=1800)).run()).report
    assert "stopped_node_seconds" not in report


async def test_the_world_servers_simulated_kind_stops_and_starts_over_http() -> None:
    """``kind: simulated`` (an HTTP client of the world server) keeps the same contract."""
    providers = copy.deepcopy(PROVIDERS)
    providers["providers"][0]["simulation"] = {"boot_time": "0s", "resume_time": "0s"}
    policies = policy_set(pool(), providers=providers)
    assert policies.providers is not None
    blueprint = policies.providers.blueprint("small-bm")
    assert blueprint is not None
    world = WorldServer(policies, mqtt=MqttSettings())  # nothing published: no broker needed
    async with TestServer(world.app) as server:
        provider = SimulatedWorldProvider("rack-a", url=str(server.make_url("/")))
        try:
            machine = await provider.create(CreateRequest(key="k1", name="n1", pool="small",
                                                          blueprint=blueprint))
            assert [m.power for m in await provider.list_owned()] == [PowerState.RUNNING]
            await provider.stop(machine.machine_id)
            await provider.stop(machine.machine_id)
            assert [m.power for m in await provider.list_owned()] == [PowerState.STOPPED]
            assert not world.world.nodes["n1"].powered
            await provider.start(machine.machine_id)
            assert [m.power for m in await provider.list_owned()] == [PowerState.RUNNING]
            with pytest.raises(NotFound):
                await provider.stop("nope")
            assert world.score.calls[("rack-a", "stop", "ok")] == 2
            assert world.score.calls[("rack-a", "stop", "not_found")] == 1
        finally:
            await provider.close()
