"""Scenarios in the simulator: placement, spillover, preemption, burst-and-return, drains.

Each runs the real reconciler, planner, executor and guards against simulated providers
and a simulated PaaS (policies/examples/scenarios/*), and checks the report's figures
(unmet gear-seconds, node-seconds per provider, actions, violations) and, through the
executor's events, *when* and *why* things happened.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from conftest import ROOT
from gearshift.act.progress import Event
from gearshift.model import Drain
from gearshift.plan import Plan
from gearshift.policy.loader import load_policy_set
from gearshift.policy.predictive import Predictive
from gearshift.policy.schema import PolicySet
from gearshift.reconcile.reconciler import Reconciler
from gearshift.sim.runner import SimOptions, Simulation
from gearshift.sim.trace import read_trace

SCENARIOS = ROOT / "policies" / "examples" / "scenarios"
ZERO = {"above_max": 0, "below_min": 0, "retired_with_active_gears": 0, "duplicate_creates": 0,
        "leaked_nodes": 0}


class Run:
    """One finished simulation: its report, events (seconds from start) and unmet samples."""

    def __init__(self, name: str, *, edit: Callable[[PolicySet], PolicySet] | None = None,
                 prepare: Callable[[Simulation], None] | None = None,
                 **options: Any) -> None:
        directory = SCENARIOS / name
        policies = load_policy_set([directory / "pools", directory / "providers.yaml"])
        if edit is not None:
            policies = edit(policies)
        # These scenarios pin figures of a PaaS without a broker-side hook (the planner
        # sees only the gears that fit) unless a test turns it on.
        options.setdefault("broker_hook", False)
        self.sim = Simulation(policies, read_trace(directory / "trace.csv"),
                              SimOptions(seed=1, **options))
        self.unmet: list[tuple[float, int]] = []  # (t, unmet gears) after every world step
        world = self.sim.world
        advance = world.advance

        def recording(now: float) -> None:
            advance(now)
            self.unmet.append((now - self.sim.options.start, sum(world.unmet.values())))

        world.advance = recording  # type: ignore[method-assign]
        if prepare is not None:
            prepare(self.sim)
        self.report = asyncio.run(self.sim.run()).report
        self.events = [replace(e, at=e.at - self.sim.options.start)
                       for e in self.sim.executor.events]

    def ok(self, kind: str, *, at: float | None = None) -> list[Event]:
        return [e for e in self.events if e.kind == kind and e.outcome == "ok"
                and (at is None or e.at == at)]

    def failed(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind and e.outcome == "failed"]

    def unmet_between(self, start: float, end: float) -> int:
        """The most gears unmet at any step in [start, end]."""
        return max((u for t, u in self.unmet if start <= t <= end), default=0)


def provider_of(event: Event) -> str:
    """Created nodes are named {pool}-{provider}-{id}."""
    return event.target.split("-", 1)[1].rsplit("-", 1)[0]


def by_provider(events: list[Event]) -> dict[str, int]:
    return dict(Counter(provider_of(e) for e in events))


def edit_pool(policies: PolicySet, name: str, **changes: Any) -> PolicySet:
    pools = tuple(p.model_copy(update=changes) if p.name == name else p for p in policies.pools)
    return replace(policies, pools=pools)


def edit_provider(policies: PolicySet, name: str, **changes: Any) -> PolicySet:
    assert policies.providers is not None
    specs = [p.model_copy(update=changes) if p.name == name else p
             for p in policies.providers.providers]
    return replace(policies, providers=policies.providers.model_copy(update={"providers": specs}))


# -- 1. the primary provider's quota runs out: spill within one reconcile ---------------

def test_quota_exhausted_spills_to_the_next_providers_within_one_reconcile() -> None:
    run = Run("quota-spill")
    report = run.report
    assert report["violations"] == ZERO
    # At t=600 demand jumps from 200 to 700 gears. The pool asks vsphere-a for 4 nodes:
    # its file says 14 free, its real quota has 2. The 2 refused go to vsphere-b (its
    # only free node) and EC2 in the same reconcile: same instant, no timeout waited.
    refused = run.failed("scale_out")
    assert refused and {e.error for e in refused} == {"quota"}
    assert {e.at for e in refused[:2]} == {600}
    assert by_provider(run.ok("scale_out", at=600)) == {"vsphere-a": 2, "vsphere-b": 1,
                                                       "ec2-east": 1}
    spilled = [e for e in run.ok("scale_out", at=600) if provider_of(e) != "vsphere-a"]
    assert all("finishing the growth to 600 slots decided this reconcile" in e.reason
               for e in spilled)
    # Backed off: the next growth (t=780) does not ask vsphere-a again.
    later = run.ok("scale_out", at=780)
    assert later and "vsphere-a" not in by_provider(later)
    assert "vsphere-a skipped: backed off" in later[0].reason
    # Figures: every provider carried nodes; unmet demand is the +500 gears for less than
    # one vSphere boot (3m) plus the EC2 boot for the rest.
    seconds = report["node_seconds"]
    assert seconds["vsphere-a"] > 0 and seconds["vsphere-b"] > 0 and seconds["ec2-east"] > 0
    assert 0 < report["unmet_gear_seconds"] < 500 * 180
    assert report["actions"]["scale_out"] == len(run.ok("scale_out"))


# -- 2. EC2 runs out of capacity: next provider, EC2 backed off, back later --------------

def test_ec2_capacity_error_spills_backs_off_and_recovers() -> None:
    run = Run("ec2-capacity")
    report = run.report
    assert report["violations"] == ZERO
    # t=0..540: consolidation moves the seed nodes from EC2 (preferred, fast, 0.10/h) to
    # vSphere (0.06/h); the t=600 jump reactivates two of them. t=780: EC2 makes 4 nodes,
    # refuses the 5th (capacity) and the rest goes to vSphere in the same reconcile.
    refused = run.failed("scale_out")
    first = min(e.at for e in refused)
    assert first == 780 and {e.error for e in refused} == {"capacity"}
    assert by_provider(run.ok("scale_out", at=first)) == {"ec2-east": 4, "vsphere-dc1": 1}
    # Backed off (5m): the growth at t=900 goes to vSphere without asking EC2.
    during = [e for e in run.events if e.kind == "scale_out" and first < e.at < first + 300]
    assert during and {provider_of(e) for e in during} == {"vsphere-dc1"}
    assert "ec2-east skipped: backed off" in during[0].reason
    # After the back-off, while vSphere is full, EC2 gets one-node probes only: refused
    # until its capacity returns (t=1920), then the first success.
    ec2 = [e for e in run.events if e.kind == "scale_out" and provider_of(e) == "ec2-east"]
    recovered = min(e.at for e in ec2 if e.outcome == "ok" and e.at > 1020)
    probes = [e for e in ec2 if 1020 < e.at <= recovered]
    assert recovered > 1920 and len(probes) >= 2
    assert all(n == 1 for n in Counter(e.at for e in probes).values())
    assert all("a probe, after healthy providers" in e.reason for e in probes)
    # A node made after the error lifts the penalty: the next growth asks EC2 for a batch.
    batch = Counter(e.at for e in ec2 if e.at > recovered)
    assert max(batch.values()) > 1
    assert len([e for e in ec2 if e.outcome == "ok" and e.at > recovered]) >= 4
    seconds = report["node_seconds"]
    assert seconds["ec2-east"] > 0 and seconds["vsphere-dc1"] > 0
    assert report["failed_actions"] == {"scale_out_failed": len(refused)}
    # Unmet demand: the jumps for about one boot each, and the hour when EC2 had no
    # capacity and vSphere no quota left (bounded: at most 240 gears for 1h).
    assert 0 < report["unmet_gear_seconds"] < 240 * 3600


# -- 3. preemption -------------------------------------------------------------------

def test_critical_pool_preempts_the_preemptible_batch_pool_on_the_rack() -> None:
    run = Run("preemption")
    report = run.report
    assert report["violations"] == ZERO  # batch never below its min of 4, nothing leaked
    # Critical (rack only) needs 5 more large nodes; the rack is full of batch nodes.
    assert report["preemptions"] == {"critical": {"batch": 5}}
    drained = [e for e in run.ok("drain") if e.pool == "batch"]
    preempted = [e for e in drained
                 if e.reason.startswith("preempted by pool critical (priority 200 > 10)")]
    assert len(preempted) == 5
    # The rest: once critical shrank (t=7200 on), batch moved its vSphere nodes back to
    # the rack, one make-before-break swap at a time.
    moved = [e for e in drained if e not in preempted]
    assert moved and all("consolidate: its replacement on rack-a is up" in e.reason
                         and provider_of(e) == "vsphere-dc1" and e.at > 7200 for e in moved)
    retired = {e.target for e in run.ok("retire") if e.pool == "batch"}
    assert retired == {e.target for e in drained}
    # Each victim was drained before its quota went to critical: make after break.
    critical_made = sorted(e.at for e in run.ok("scale_out") if e.pool == "critical")
    first_retire = min(e.at for e in run.ok("retire") if e.pool == "batch")
    assert len(critical_made) == 5 and critical_made[0] > first_retire
    assert report["max_nodes"]["critical"] == 7
    # Batch rebuilt on vSphere; none of its gears went unmet.
    assert report["unmet_gear_seconds_by_pool"]["batch"] == 0
    assert report["node_seconds"]["vsphere-dc1"] > 0
    # Critical's unmet demand: its +62 gears while victims drained and its nodes booted.
    assert 0 < report["unmet_gear_seconds_by_pool"]["critical"] < 62 * 1800


def restart_after_the_first_preemption(sim: Simulation) -> None:
    """The daemon restarts once the first victims drain: a new reconciler (the planner's
    memory empty) on the same journal, restored as a newly elected leader restores it."""
    first = sim.reconciler

    async def reconcile_then_restart() -> Plan:
        plan = await Reconciler.reconcile_once(first)
        if any(isinstance(a, Drain) and a.preempted_by for a in plan.actions):
            sim.reconciler = Reconciler(
                fleet=sim.fleet, policies=first.policies, executor=sim.executor,
                journal=sim.journal, providers=sim.providers, clock=sim.clock,
                interval=first.interval)
            await sim.reconciler.restore()
        return plan

    first.reconcile_once = reconcile_then_restart  # type: ignore[method-assign]


def test_a_restart_while_victims_drain_neither_preempts_again_nor_gives_them_back() -> None:
    restarted = Run("preemption", prepare=restart_after_the_first_preemption)
    # It did restart: the reconciler at the end ran only the reconciles after the restart.
    assert 0 < restarted.sim.reconciler.reconciles < restarted.report["reconciles"]
    # Without the drains' cause in the journal, batch took its victims back ("demand
    # returned") and critical preempted them again: 7 preemptions, critical 60s later.
    assert restarted.report["preemptions"] == {"critical": {"batch": 5}}
    assert restarted.ok("cancel_drain") == []
    retires = [e for e in restarted.ok("retire") if e.pool == "batch"
               and "(preempted by pool critical)" in e.reason]
    assert len(retires) == 5
    baseline = Run("preemption")

    def what(run: Run) -> list[tuple[float, str, str, str]]:
        return [(e.at, e.kind, e.target, e.outcome) for e in run.events]

    assert what(restarted) == what(baseline)


def test_preemption_stops_at_the_victims_min() -> None:
    def pinned(policies: PolicySet) -> PolicySet:
        batch = next(p for p in policies.pools if p.name == "batch")
        policies = edit_pool(policies, "batch", size=batch.size.model_copy(update={"min": 6}))
        return edit_provider(policies, "vsphere-dc1",
                             quota=policies.providers.provider("vsphere-dc1").quota  # type: ignore[union-attr]
                             .model_copy(update={"max_nodes": 0}))

    run = Run("preemption", edit=pinned)
    # Batch has 8 rack nodes, no room elsewhere, min 6: only 2 may be taken.
    assert run.report["preemptions"] == {"critical": {"batch": 2}}
    assert run.report["violations"] == ZERO
    assert run.report["max_nodes"]["critical"] == 4
    assert run.report["unmet_gear_seconds_by_pool"]["batch"] == 0


# -- 4. burst, then return ------------------------------------------------------------

def test_flash_crowd_bursts_to_ec2_then_returns_to_the_rack() -> None:
    run = Run("burst-return")
    report = run.report
    assert report["violations"] == ZERO
    # t=600: the rack has 1 free node; the rest of the crowd goes to EC2 (burst).
    burst = [e for e in run.ok("scale_out") if e.at < 1200]
    assert by_provider(burst) == {"rack-a": 1, "ec2-east": 10}
    # t=2400: batch shrinks, the rack frees up; web replaces EC2 nodes on the rack.
    assert report["burst_returns"] == {"web": 6}
    returns = [e for e in run.ok("scale_out") if "burst-and-return" in e.reason]
    return_drains = [e for e in run.ok("drain") if "burst-and-return" in e.reason]
    assert by_provider(returns) == {"rack-a": 6} and len(return_drains) == 6
    # Make before break: every return drain comes after a replacement was ordered and
    # had time to boot (the rack's 5m), and each drained burst node was then retired.
    for drained in return_drains:
        made = [e.at for e in returns if drained.target in e.reason]
        assert made and drained.at - max(made) >= 300, drained
    retired = {e.target for e in run.ok("retire")}
    assert {e.target for e in return_drains} <= retired
    # No unmet demand at all from the first return to the last return drain's retirement.
    start = min(e.at for e in returns)
    end = max(e.at for e in run.ok("retire") if e.target in {d.target for d in return_drains})
    assert run.unmet_between(start, end) == 0
    # The only unmet demand is the crowd itself, before EC2 nodes booted (2m).
    assert 0 < report["unmet_gear_seconds"] < 600 * 120 + 1
    # And it pays: the same scenario without burst-and-return costs more.
    without = Run("burst-return", edit=lambda p: edit_pool(
        p, "web", burst_return=p.pools[0].burst_return.model_copy(update={"enabled": False})))
    assert without.report["burst_returns"] == {}
    assert without.report["unmet_gear_seconds"] == report["unmet_gear_seconds"]
    assert report["node_seconds"]["ec2-east"] < 0.6 * without.report["node_seconds"]["ec2-east"]
    assert report["cost"] < 0.7 * without.report["cost"]


# -- 5. slow, failing gear moves and a drain deadline ---------------------------------

def test_drains_with_slow_failing_moves_respect_their_deadline() -> None:
    run = Run("slow-drain", move_time=120, move_failure_rate=0.3, duration=7200)
    report = run.report
    assert report["violations"] == ZERO  # never a node retired with active gears
    assert report["unmet_gear_seconds"] == 0
    moves = report["gear_moves"]
    assert moves["failed"] > 0.2 * (moves["moved"] + moves["failed"])
    overdue = [e for e in run.ok("cancel_drain") if "passed its deadline (10m)" in e.reason]
    assert overdue and len(overdue) == report["actions"]["cancel_drain"]
    # Every drain ends: retired once empty, or reactivated at its deadline.
    assert report["actions"]["drain"] - report["actions"]["retire"] - len(overdue) <= 2
    assert report["actions"]["retire"] >= 4
    # A timed-out drain is resumed (the strategy picks the half-empty node again) after
    # the cooldown, not replaced at once by fresh drains.
    for cancelled in overdue:
        again = [e for e in run.ok("drain") if e.at > cancelled.at]
        assert not again or min(e.at for e in again) >= cancelled.at + 300
    resumed = {e.target for e in overdue} & {e.target for e in run.ok("retire")}
    assert resumed
    assert report["node_seconds"]["rack-a"] < 10 * 7200  # the pool did shrink


# -- 6. a drain cancelled by a new spike ----------------------------------------------

def test_a_new_spike_cancels_the_drains_instead_of_provisioning() -> None:
    run = Run("drain-cancelled", move_time=120, move_failure_rate=0.1, duration=3600)
    report = run.report
    assert report["violations"] == ZERO
    assert report["unmet_gear_seconds"] == 0
    cancelled = run.ok("cancel_drain", at=1080)
    assert len(cancelled) == 2
    assert all("demand returned: reactivating" in e.reason and "beats provisioning" in e.reason
               for e in cancelled)
    assert report["actions"]["retire"] == 0
    # Two reactivated nodes cover most of the spike; one new node tops it up to target.
    assert report["actions"]["scale_out"] == 1
    assert report["max_nodes"]["small"] == 11


# -- 7. the Monday-morning ramp, met by ordering a boot ahead ------------------------------

DAY = 86400.0


def reactive(policies: PolicySet) -> PolicySet:
    return replace(policies, pools=tuple(p.model_copy(update={"predictive": Predictive()})
                                         for p in policies.pools))


def test_the_monday_ramp_is_met_by_ordering_a_boot_ahead() -> None:
    """Two weeks of history (the warm-up), then the Monday: as shipped (predictive on) the
    8-minute rack nodes are ordered before 08:00 and no demand goes unmet; reactive, the
    ramp waits for them."""
    options: dict[str, Any] = {"warmup": 14 * DAY, "duration": DAY, "broker_hook": True}
    on = Run("monday-ramp", **options)
    off = Run("monday-ramp", edit=reactive, **options)
    assert on.report["violations"] == ZERO and off.report["violations"] == ZERO
    assert off.report["unmet_gear_seconds"] > 5_000  # 10 160 gear-s (seed 1)
    assert on.report["unmet_gear_seconds"] == 0
    assert on.report["cost"] <= off.report["cost"] * 1.15
    ahead = [e for e in on.ok("scale_out") if "forecast p90" in e.reason]
    assert ahead and min(e.at for e in ahead) < 8 * 3600  # ordered before the ramp
    assert not [e for e in off.events if "forecast" in e.reason]


@pytest.mark.parametrize("name", sorted(p.name for p in SCENARIOS.iterdir() if p.is_dir()))
def test_every_scenario_is_deterministic(name: str) -> None:
    assert Run(name, duration=3600.0).report == Run(name, duration=3600.0).report
