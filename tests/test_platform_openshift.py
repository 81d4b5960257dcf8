"""The OpenShift v2 platform adapter: templates, the broker-host runner, gear moves, and
the agent protocol over a real mosquitto.

The admin tools are stand-ins (tests/fake_openshift.py): real executables that keep a
district's state in a file and answer as the real ones do, so the adapter runs real
processes, with real arguments, timeouts and parallelism.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

import fake_openshift
from builders import ListedMachines, policy_set, pool
from gearshift.act.executor import Executor
from gearshift.act.platform.base import NodeRef
from gearshift.act.platform.commands import CommandTemplate, LocalRunner
from gearshift.act.platform.openshift import DEFAULT_COMMANDS, OpenShiftPlatform, build_openshift
from gearshift.act.providers.base import CreateRequest, Provider, QuotaInfo
from gearshift.act.providers.guard import GuardedProvider
from gearshift.clock import ManualClock
from gearshift.daemon import build_platform
from gearshift.errors import ConfigError, PlatformError
from gearshift.model import (
    Drain,
    FleetSnapshot,
    GearCounts,
    Machine,
    Node,
    NodeFacts,
    NodeState,
    Retire,
    ScaleOut,
)
from gearshift.plan import Plan
from gearshift.records import Phase
from gearshift.settings import MqttSettings, PlatformSettings
from gearshift.store.journal import MemoryJournal
from gearshift.wire.mqtt import response_properties

DISTRICT = "5d1e9f2a0b3c4d5e6f708192"
N1, N2, N3 = "n1.example.com", "n2.example.com", "n3.example.com"


def gear_ids(count: int, prefix: str) -> list[str]:
    return [f"{prefix}{i:030x}"[:32] for i in range(count)]


class Fake:
    """A district of three nodes and the fake admin tools, in a temporary directory."""

    def __init__(self, root: Path, *, gears: int = 12, fail_once: int = 0,
                 move_seconds: float = 0.05) -> None:
        self.root = root
        self.tools = fake_openshift.install(root)
        self.state_file = root / "state.json"
        self.log_file = root / "calls.jsonl"
        self.gears = gear_ids(gears, "a")
        self.state_file.write_text(json.dumps({
            "districts": {DISTRICT: {N1: True, N2: True, N3: True}},
            "gears": {g: N1 for g in self.gears},
            "fail_once": self.gears[:fail_once],
            "move_seconds": move_seconds,
        }))
        self.log_file.write_text("")
        os.environ["FAKE_OPENSHIFT_STATE"] = str(self.state_file)
        os.environ["FAKE_OPENSHIFT_LOG"] = str(self.log_file)

    @property
    def state(self) -> dict[str, Any]:
        return json.loads(self.state_file.read_text())

    def calls(self, program: str) -> list[dict[str, Any]]:
        return [c for c in map(json.loads, self.log_file.read_text().splitlines())
                if c["argv"][0] == program]

    def settings(self, **changes: Any) -> PlatformSettings:
        tools = self.tools
        commands = {
            **{step: text.replace("oo-admin-ctl-district", tools["oo-admin-ctl-district"])
               for step, text in DEFAULT_COMMANDS.items() if "district" in text},
            "move": f"{tools['oo-admin-move']} --gear_uuid {{gears}} --json",
            "list_gears": f"{tools['oo-admin-ctl-gears']} list {{host}}",
        }
        commands.update(changes.pop("commands", {}))
        commands = {step: text for step, text in commands.items() if text is not None}
        data: dict[str, Any] = {"kind": "openshift", "commands": commands,
                                "allowed_programs": list(tools.values()), "timeout": 30,
                                "move_retry_after": 0, **changes}
        return PlatformSettings.model_validate(data)

    def platform(self, **changes: Any) -> OpenShiftPlatform:
        return build_openshift(self.settings(**changes))


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[Fake]:
    yield Fake(tmp_path)
    os.environ.pop("FAKE_OPENSHIFT_STATE", None)
    os.environ.pop("FAKE_OPENSHIFT_LOG", None)


# -- templates --------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("step", "text", "words"),
    [
        ("evacuate", "oo-admin-move --all", "unknown step"),
        ("deactivate", "bash -c 'oo-admin-ctl-district'", "program 'bash' is not in"),
        ("deactivate", "oo-admin-ctl-district -c deactivate-node -i --host={host}",
         "a placeholder must be a whole argument"),
        ("deactivate", "oo-admin-ctl-district -c deactivate-node -i {cmd}",
         "unknown placeholder {cmd}"),
        ("move", "oo-admin-move --gear_uuid '{gears}", "cannot split"),
    ],
)
def test_bad_templates_are_refused_at_start_up(step: str, text: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        CommandTemplate.parse(step, text, allowed_programs=["oo-admin-ctl-district",
                                                            "oo-admin-move"])
    assert words in caught.value.problems[0]


def test_a_placeholder_the_step_cannot_fill_is_refused() -> None:
    settings = PlatformSettings(kind="openshift", commands={
        "deactivate": "oo-admin-ctl-district -c deactivate-node -u {district} -i {gears}"})
    with pytest.raises(ConfigError, match=r"\{gears\} has no value in this step"):
        build_openshift(settings)


def test_default_templates_parse_and_render_whole_arguments() -> None:
    template = CommandTemplate.parse("deactivate", DEFAULT_COMMANDS["deactivate"],
                                     allowed_programs=["oo-admin-ctl-district"])
    assert template.render({"district": DISTRICT, "host": N1}) == [
        "oo-admin-ctl-district", "-c", "deactivate-node", "-u", DISTRICT, "-i", N1]


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"district": "d1; rm -rf /", "host": N1}, "not a valid district"),
        ({"district": "-u", "host": N1}, "not a valid district"),
        ({"district": DISTRICT, "host": "--help"}, "not a valid host"),
        ({"district": DISTRICT, "host": "n1 n2"}, "not a valid host"),
        ({"district": DISTRICT}, "no value for {host}"),
    ],
)
def test_values_that_could_become_options_or_commands_are_refused(values: dict,
                                                                  words: str) -> None:
    template = CommandTemplate.parse("deactivate", DEFAULT_COMMANDS["deactivate"],
                                     allowed_programs=["oo-admin-ctl-district"])
    with pytest.raises(PlatformError, match=words):
        template.render(values)


# -- district steps on the broker host --------------------------------------------------

async def test_district_steps_run_real_commands_and_are_idempotent(fake: Fake) -> None:
    platform = fake.platform()
    node = NodeRef(N2, DISTRICT)
    await platform.deactivate(node)
    assert fake.state["districts"][DISTRICT][N2] is False
    await platform.deactivate(node)  # "is already deactivated": a resumed drain repeats it
    assert fake.calls("oo-admin-ctl-district")[0]["argv"] == [
        "oo-admin-ctl-district", "-c", "deactivate-node", "-u", DISTRICT, "-i", N2]
    await platform.activate(node)
    await platform.activate(node)
    assert fake.state["districts"][DISTRICT][N2] is True
    # The tool says "ERROR OUTPUT:" and exits 0: that is a failure.
    with pytest.raises(PlatformError, match="must be deactivated before it can be removed"):
        await platform.remove(node)
    with pytest.raises(PlatformError, match="still has apps on it"):
        await platform.deactivate(NodeRef(N1, DISTRICT))
        await platform.remove(NodeRef(N1, DISTRICT))
    await platform.deactivate(node)
    await platform.remove(node)
    await platform.remove(node)  # "doesn't belong to district": already removed
    assert N2 not in fake.state["districts"][DISTRICT]
    with pytest.raises(PlatformError, match="in no district"):
        await platform.deactivate(NodeRef(N3, None))


async def test_remove_and_add_are_idempotent_across_districts(fake: Fake) -> None:
    platform = fake.platform()
    await platform.remove(NodeRef(N3, None))  # in no district: nothing to remove it from
    await platform.remove(NodeRef(N3, "NONE"))
    assert fake.calls("oo-admin-ctl-district") == []
    new = "n4.example.com"
    await platform.add(NodeRef(new, DISTRICT))
    await platform.add(NodeRef(new, DISTRICT))  # "already belongs to": a repeated add
    assert fake.state["districts"][DISTRICT][new] is True
    assert len(fake.calls("oo-admin-ctl-district")) == 2


async def test_listing_gears_has_its_own_short_timeout(fake: Fake, tmp_path: Path) -> None:
    slow = tmp_path / "slow-list"
    slow.write_text("#!/bin/sh\nexec sleep 30\n")
    slow.chmod(0o755)
    platform = fake.platform(list_timeout=0.5, allowed_programs=[str(slow), *fake.tools.values()],
                             commands={"list_gears": f"{slow} {{host}}"})
    assert platform.settings.timeout == 30  # moves and district steps keep the long one
    with pytest.raises(PlatformError, match=r"timed out after 0\.5s; killed"):
        await platform.move_gears(NodeRef(N1, DISTRICT), limit=5)


async def test_a_new_node_joins_its_blueprints_district_before_it_counts_as_up(
        fake: Fake) -> None:
    platform = fake.platform()
    clock = ManualClock()
    journal = MemoryJournal()
    new = "n4.example.com"

    class Machines(Provider):
        async def create(self, request: CreateRequest) -> Machine:
            return Machine("rack-a", "m-n4", request.name, pool="small", key=request.key)

        async def list_owned(self) -> list[Machine]:
            return []

        async def destroy(self, machine_id: str) -> None:
            raise AssertionError("nothing is destroyed here")

        async def stop(self, machine_id: str) -> None:
            raise AssertionError("nothing is stopped here")

        async def start(self, machine_id: str) -> None:
            raise AssertionError("nothing is started here")

        async def quota(self) -> QuotaInfo:
            return QuotaInfo(10, 3)

    providers = {"apiVersion": "gearshift/v1", "kind": "Providers",
                 "providers": [{"name": "rack-a", "kind": "simulated",
                                "quota": {"max_nodes": 10}}],
                 "blueprints": [{"name": "small-bm", "provider": "rack-a",
                                 "node_profile": "small", "district": DISTRICT}]}
    policies = policy_set(pool(), providers=providers)
    executor = Executor(providers={"rack-a": GuardedProvider(Machines("rack-a"), clock=clock)},
                        platform=platform, journal=journal, clock=clock, new_id=lambda: "op4")
    scale_out = ScaleOut(pool="small", provider="rack-a", blueprint="small-bm", count=1,
                         reason="test")
    await executor.execute(Plan(clock.now(), (scale_out,), {}, state=None),  # type: ignore[arg-type]
                           FleetSnapshot(taken_at=clock.now(), nodes=()), policies)
    await journal.advance("op4", phase=Phase.CREATED, at=clock.now(), identity=new)

    def seen(district: str) -> FleetSnapshot:
        facts = NodeFacts(identity=new, node_profile="small", max_active_gears=60,
                          gears=GearCounts(total=0, active=0), district_uuid=district,
                          district_active=district != "NONE")
        return FleetSnapshot(taken_at=clock.now(), nodes=(Node(
            identity=new, state=NodeState.ACTIVE if district != "NONE" else NodeState.DRAINING,
            facts=facts, last_seen=clock.now()),))

    # First facts: in no district. It is added, and stays booting until facts show it.
    await executor.progress(seen("NONE"), lambda identity: True, policies=policies)
    assert fake.state["districts"][DISTRICT][new] is True
    op = await journal.get("op4")
    assert op is not None and op.phase == "created"
    await executor.progress(seen(DISTRICT), lambda identity: True, policies=policies)
    op = await journal.get("op4")
    assert op is not None and op.phase == "registered"
    assert [c["argv"][2] for c in fake.calls("oo-admin-ctl-district")] == ["add-node"]


async def test_a_command_past_its_timeout_is_killed(fake: Fake, tmp_path: Path) -> None:
    slow = tmp_path / "slow-district"
    pid_file = tmp_path / "slow.pid"
    slow.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 30\n")
    slow.chmod(0o755)
    platform = fake.platform(timeout=0.5, allowed_programs=[str(slow), *fake.tools.values()],
                             commands={"deactivate": f"{slow} {{district}} {{host}}"})
    with pytest.raises(PlatformError, match=r"timed out after 0\.5s; killed"):
        await platform.deactivate(NodeRef(N1, DISTRICT))
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_commands_do_not_see_gearshifts_own_environment(fake: Fake,
                                                              tmp_path: Path) -> None:
    spy = tmp_path / "env-spy"
    out = tmp_path / "env.txt"
    spy.write_text(f"#!/bin/sh\nenv > {out}\necho Success!\n")
    spy.chmod(0o755)
    os.environ["GEARSHIFT_MQTT__PASSWORD"] = "s3cret"
    try:
        platform = fake.platform(allowed_programs=[str(spy)], commands={
            step: f"{spy} {{district}} {{host}}" for step in ("deactivate", "activate",
                                                               "remove", "add")} | {
            "move": f"{spy} {{gears}}", "list_gears": f"{spy} {{host}}",
            "list_nodes": str(spy)})
        await platform.deactivate(NodeRef(N1, DISTRICT))
    finally:
        del os.environ["GEARSHIFT_MQTT__PASSWORD"]
    assert "s3cret" not in out.read_text() and "FAKE_OPENSHIFT_STATE" in out.read_text()


# -- gear moves -------------------------------------------------------------------------

async def test_moves_run_in_bounded_parallel_batches_until_the_node_is_empty(
        tmp_path: Path) -> None:
    fake = Fake(tmp_path, gears=12, fail_once=2, move_seconds=0.05)
    platform = fake.platform(gears_per_move=3, move_parallel=2)
    node = NodeRef(N1, DISTRICT)
    assert await platform.list_gears(node) == fake.gears  # the noise line is ignored
    first = await platform.move_gears(node, limit=10)
    assert (first.started, first.remaining) == (10, 2)
    again = await platform.move_gears(node, limit=10)  # 10 in flight: nothing more
    assert again.started == 0
    await platform.wait_moves(N1)
    reports = [first, again]
    for _ in range(10):
        report = await platform.move_gears(node, limit=10)
        reports.append(report)
        await platform.wait_moves(N1)
        if not await platform.list_gears(node):
            break
    assert await platform.list_gears(node) == []
    assert sum(r.failed for r in reports) == 2  # the two failed once, then moved
    moves = fake.calls("oo-admin-move")
    assert all(len(c["argv"][2].split(",")) <= 3 for c in moves)
    assert sorted(g for c in moves for g in c["argv"][2].split(",")).count(fake.gears[0]) == 2
    # Never more than 2 oo-admin-move processes at once for the node.
    edges = sorted([(c["started"], 1) for c in moves] + [(c["ended"], -1) for c in moves])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    assert 1 < peak <= 2
    assert set(fake.state["gears"].values()) == {N2, N3}


async def test_a_failed_gear_waits_before_it_is_tried_again(tmp_path: Path) -> None:
    fake = Fake(tmp_path, gears=3, fail_once=3)
    platform = fake.platform(move_retry_after=3600)
    node = NodeRef(N1, DISTRICT)
    await platform.move_gears(node, limit=10)
    await platform.wait_moves(N1)
    report = await platform.move_gears(node, limit=10)
    assert (report.started, report.failed) == (0, 3)


async def test_a_drain_end_to_end_through_the_executor(tmp_path: Path) -> None:
    """deactivate -> moves in batches -> empty -> remove from district -> destroy."""
    fake = Fake(tmp_path, gears=8, fail_once=1)
    platform = fake.platform(gears_per_move=2)
    machines = ListedMachines("rack-a")

    clock = ManualClock()
    journal = MemoryJournal()
    executor = Executor(providers={"rack-a": GuardedProvider(machines, clock=clock)},
                        platform=platform, journal=journal, clock=clock)
    policies = policy_set(pool())

    def snapshot() -> FleetSnapshot:
        state = fake.state
        nodes = []
        for name, active in state["districts"][DISTRICT].items():
            count = sum(1 for node in state["gears"].values() if node == name)
            facts = NodeFacts(identity=name, node_profile="small", max_active_gears=60,
                              gears=GearCounts(total=count, active=count),
                              district_uuid=DISTRICT, district_active=active)
            nodes.append(Node(identity=name, state=NodeState.ACTIVE if active
                              else NodeState.DRAINING, facts=facts, last_seen=clock.now(),
                              machine=Machine("rack-a", f"m-{name[:2]}", name, pool="small")))
        return FleetSnapshot(taken_at=clock.now(), nodes=tuple(nodes))

    drain = Drain(pool="small", identity=N1, reason="test")
    report = await executor.execute(Plan(clock.now(), (drain,), {}, state=None),  # type: ignore[arg-type]
                                    snapshot(), policies)
    assert [e.outcome for e in report.events] == ["ok"]
    assert fake.state["districts"][DISTRICT][N1] is False
    for _ in range(10):
        await executor.progress(snapshot(), lambda identity: True)
        await platform.wait_moves()
        if not any(node == N1 for node in fake.state["gears"].values()):
            break
    assert N1 not in fake.state["gears"].values()
    retire = Retire(pool="small", identity=N1, provider="rack-a", machine_id="m-n1",
                    reason="test")
    report = await executor.execute(Plan(clock.now(), (retire,), {}, state=None),  # type: ignore[arg-type]
                                    snapshot(), policies)
    assert [e.outcome for e in report.events] == ["ok"]
    assert N1 not in fake.state["districts"][DISTRICT] and machines.destroyed == ["m-n1"]
    assert await journal.open_operations() == []
    await platform.close()


# -- the agent protocol over a real mosquitto --------------------------------------------

class Responder:
    """A tiny node agent: answers commands on nodes/{identity}/command with a LocalRunner."""

    def __init__(self, host: str, port: int, prefix: str, runner: LocalRunner,
                 identities: tuple[str, ...]) -> None:
        self.host, self.port, self.prefix = host, port, prefix
        self.runner = runner
        self.identities = identities
        self.requests: list[tuple[str, dict[str, Any], Any]] = []
        self.delay: dict[str, float] = {}  # command -> seconds before replying
        self.override: dict[str, dict[str, Any]] = {}  # command -> canned reply
        self.ready = asyncio.Event()

    async def run(self) -> None:
        async with aiomqtt.Client(self.host, self.port,
                                  protocol=aiomqtt.ProtocolVersion.V5,
                                  identifier=f"agent-{uuid.uuid4().hex[:6]}") as client:
            for identity in self.identities:
                await client.subscribe(f"{self.prefix}/nodes/{identity}/command", qos=1)
            self.ready.set()
            async with asyncio.TaskGroup() as group:
                async for message in client.messages:
                    group.create_task(self.answer(client, message))

    async def answer(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        request = json.loads(message.payload)
        self.requests.append((str(message.topic), request, message.properties))
        command = request["command"]
        await asyncio.sleep(self.delay.get(command, 0))
        if command in self.override:
            reply = {"request_id": request["request_id"], "command": command,
                     **self.override[command]}
        else:
            result = await self.runner.run(command, request["args"], node="")
            reply = {"request_id": request["request_id"], "command": command,
                     "ok": result.ok, "exit_code": result.exit_code, "stdout": result.stdout,
                     "stderr": result.stderr, "error": result.error}
        properties = message.properties
        await client.publish(properties.ResponseTopic, json.dumps(reply).encode(),  # type: ignore[union-attr]
                             qos=1, properties=response_properties(
                                 properties.ResponseTopic,  # type: ignore[union-attr]
                                 properties.CorrelationData))  # type: ignore[union-attr]


@pytest.fixture
async def agents(fake: Fake, mosquitto: tuple[str, int]) -> AsyncIterator[
        tuple[OpenShiftPlatform, Responder]]:
    host, port = mosquitto
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    local = fake.platform().runner
    assert isinstance(local, LocalRunner)
    responder = Responder(host, port, prefix, local, ("broker1", N1, N2))
    task = asyncio.create_task(responder.run())
    await asyncio.wait_for(responder.ready.wait(), 5)
    mqtt = MqttSettings(host=host, port=port, prefix=prefix)
    platform = build_openshift(PlatformSettings(kind="openshift", via="agent",
                                                agent_identity="broker1", timeout=5,
                                                move_retry_after=0), mqtt=mqtt)
    yield platform, responder
    await platform.close()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_agent_requests_follow_the_protocol(fake: Fake, agents: Any) -> None:
    platform, responder = agents
    await platform.deactivate(NodeRef(N1, DISTRICT))
    assert fake.state["districts"][DISTRICT][N1] is False
    topic, request, properties = responder.requests[0]
    assert topic.endswith("/nodes/broker1/command")  # district steps: the broker's agent
    assert request["command"] == "deactivate"
    assert request["args"] == {"district": DISTRICT, "host": N1}
    assert properties.CorrelationData == request["request_id"].encode()
    assert properties.ResponseTopic.startswith(topic.split("/")[0] + "/daemon/")
    gears = await platform.list_gears(NodeRef(N1, DISTRICT))
    assert gears == fake.gears
    assert responder.requests[-1][0].endswith(f"/nodes/{N1}/command")  # the node's own agent


async def test_agent_drain_moves_gears_through_the_broker_agent(fake: Fake, agents: Any) -> None:
    platform, responder = agents
    node = NodeRef(N1, DISTRICT)
    await platform.deactivate(node)
    for _ in range(10):
        await platform.move_gears(node, limit=10)
        await platform.wait_moves(N1)
        if not await platform.list_gears(node):
            break
    assert N1 not in fake.state["gears"].values()
    moves = [r for t, r, _ in responder.requests if r["command"] == "move"]
    assert moves and all(t.endswith("/nodes/broker1/command") for t, r, _ in responder.requests
                         if r["command"] == "move")
    assert all(len(m["args"]["gears"].split(",")) <= 5 for m in moves)


async def test_replies_are_matched_by_correlation_data(fake: Fake, agents: Any) -> None:
    platform, responder = agents
    responder.delay["deactivate"] = 0.5  # the first request is answered last
    first = asyncio.create_task(platform.deactivate(NodeRef(N1, DISTRICT)))
    await asyncio.sleep(0.1)
    gears = await platform.list_gears(NodeRef(N1, DISTRICT))
    assert not first.done() and gears == fake.gears
    await first
    assert fake.state["districts"][DISTRICT][N1] is False


async def test_an_agents_failure_is_a_platform_error(agents: Any) -> None:
    platform, responder = agents
    responder.override["activate"] = {"ok": False, "exit_code": None, "stdout": "",
                                      "stderr": "", "error": "command not allowed"}
    with pytest.raises(PlatformError, match="agent broker1: command not allowed"):
        await platform.activate(NodeRef(N1, DISTRICT))
    responder.override["remove"] = {"ok": "yes"}
    with pytest.raises(PlatformError, match="malformed reply"):
        await platform.remove(NodeRef(N1, DISTRICT))


async def test_an_agent_that_never_answers_times_out(fake: Fake,
                                                     mosquitto: tuple[str, int]) -> None:
    host, port = mosquitto
    mqtt = MqttSettings(host=host, port=port, prefix=f"silent-{uuid.uuid4().hex[:8]}")
    platform = build_openshift(PlatformSettings(kind="openshift", via="agent",
                                                agent_identity="broker1", timeout=0.5), mqtt=mqtt)
    with pytest.raises(PlatformError, match=r"agent broker1 did not answer deactivate within 0\.5s"):
        await platform.deactivate(NodeRef(N1, DISTRICT))
    await platform.close()


async def test_an_unreachable_broker_is_a_platform_error() -> None:
    from gearshift.sim.broker import free_port

    mqtt = MqttSettings(host="127.0.0.1", port=free_port(), prefix="x")
    platform = build_openshift(PlatformSettings(kind="openshift", via="agent",
                                                agent_identity="broker1", timeout=2), mqtt=mqtt)
    with pytest.raises(PlatformError, match="cannot reach the MQTT broker"):
        await platform.deactivate(NodeRef(N1, DISTRICT))
    await platform.close()


@pytest.mark.parametrize(
    ("settings", "mqtt", "words"),
    [
        ({"via": "agent"}, {}, "agent_identity: required"),
        ({"via": "agent", "agent_identity": "a/b/#"}, {}, "not a valid host"),
        ({"via": "agent", "agent_identity": "broker1"}, {"protocol": "3.1.1"}, "needs MQTT 5"),
        ({"commands": {"evacuate": "x"}}, {}, "unknown step(s) evacuate"),
        ({"commands": {"move": "rsync {gears}"}}, {}, "program 'rsync' is not in"),
    ],
)
def test_the_daemon_builds_the_adapter_or_refuses_clearly(settings: dict, mqtt: dict,
                                                          words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_platform(PlatformSettings(kind="openshift", **settings), MqttSettings(**mqtt))
    assert words in caught.value.problems[0]
    built = build_platform(PlatformSettings(kind="openshift"), MqttSettings())
    assert isinstance(built, OpenShiftPlatform)


# -- witnesses: members and gear counts ---------------------------------------------------

async def test_district_members_come_from_the_district_listing(fake: Fake) -> None:
    platform = fake.platform()
    assert await platform.members() == frozenset({N1, N2, N3})
    await platform.deactivate(NodeRef(N3, DISTRICT))  # deactivated is still a member
    assert N3 in (await platform.members() or ())


async def test_the_gear_count_witness_is_the_nodes_gear_listing(fake: Fake) -> None:
    platform = fake.platform()
    count = await platform.gears(NodeRef(N1, DISTRICT))
    assert count is not None and count.total == len(fake.gears) and count.active is None
    assert not count.empty_enough  # it cannot tell idle from active: any gear blocks
    empty = await platform.gears(NodeRef(N2, DISTRICT))
    assert empty is not None and empty.total == 0 and empty.empty_enough


async def test_an_old_allowlist_without_the_listing_program_still_starts(
        fake: Fake, tmp_path: Path) -> None:
    wrapper = tmp_path / "wrapper"  # e.g. sudo: every step runs through one program
    wrapper.write_text("#!/bin/sh\necho Success!\n")
    wrapper.chmod(0o755)
    platform = fake.platform(allowed_programs=[str(wrapper)], commands={
        step: f"{wrapper} x" for step in ("deactivate", "activate", "remove", "add",
                                          "move", "list_gears")} | {"list_nodes": None})
    assert await platform.members() is None  # cannot vouch: every node counts, as before


def test_district_listing_parser_reads_ruby_hashes_and_plain_lines() -> None:
    from gearshift.act.platform.districts import district_members

    listing = ('{"_id"=>"d1", "name"=>"small_district", "servers"=>[{"_id"=>"s", '
               '"name"=>"node1.example.com", "active"=>true}, {"name"=>"node2.example.com", '
               '"active"=>false}], "gear_size"=>"small"}\n'
               '{"_id"=>"d2", "name"=>"empty_district", "servers"=>[]}\n')
    assert district_members(listing) == {"node1.example.com", "node2.example.com"}
    assert district_members("node1\n\nnode2.example.com\n-bad\n") == {"node1",
                                                                      "node2.example.com"}


# -- a hostile listing: whoever can shape the tools' output -------------------------------

def _printing(tmp_path: Path, name: str, code: str) -> Path:
    """A stand-in admin tool: a Python script that prints what ``code`` says."""
    import sys

    script = tmp_path / name
    script.write_text(f"#!{sys.executable}\nimport sys\n{code}\n")
    script.chmod(0o755)
    return script


@pytest.mark.timeout(60)  # a hang guard: the old parser took minutes on this listing
async def test_a_hostile_district_listing_is_read_in_one_pass_within_its_cap(
        fake: Fake, tmp_path: Path) -> None:
    """4 MiB of listing: tens of thousands of unclosed "servers" lists, names outside any
    list, a name too long to be a host, a real member, then (past the 1 MiB kept) one
    more: only the member inside a list and within the first MiB counts."""
    head = ('{"name"=>"outside.example.com"}, "servers"=>[{"name"=>"real.example.com"}], '
            '"servers"=>[{"name"=>"' + "a" * 300 + '"}], ')
    tool = _printing(tmp_path, "listing", (
        f"sys.stdout.write({head!r})\n"
        "sys.stdout.write('\"servers\"=>[' * (3 << 18))\n"
        "sys.stdout.write('{\"name\"=>\"late.example.com\"}]' * 10)"))
    platform = fake.platform(allowed_programs=[*fake.tools.values(), str(tool)],
                             commands={"list_nodes": str(tool)})
    assert await platform.members() == frozenset({"real.example.com"})


def test_the_listing_parser_keeps_nesting_and_unclosed_lists() -> None:
    from gearshift.act.platform.districts import district_members

    cases = {
        '"servers"=>[{"name"=>"a.example.com"}], {"name"=>"b.example.com"}': {"a.example.com"},
        '"servers"=>[[{"name"=>"a"}], {"name"=>"b"}] {"name"=>"c"}': {"a", "b"},
        '"servers"=>[ ] ] "servers"=>[{"name"=>"d"}': {"d"},  # unclosed: to the end
        '] ] "name"=>"e" "servers"=>[]': set(),
        '"servers"=>["servers"=>[{"name"=>"f"}] {"name"=>"g"}]': {"f", "g"},
    }
    for listing, members in cases.items():
        assert district_members(listing) == members, listing


async def test_a_command_that_prints_without_end_is_held_to_its_cap(tmp_path: Path) -> None:
    """64 MiB on stdout and 8 MiB on stderr: the result keeps the first MiB of each, and
    the daemon never holds the rest (communicate() kept every byte until the end)."""
    import tracemalloc

    tool = _printing(tmp_path, "chatty", (
        "chunk = b'x' * (1 << 20)\n"
        "for _ in range(8): sys.stderr.buffer.write(chunk)\n"
        "for _ in range(64): sys.stdout.buffer.write(chunk)"))
    runner = LocalRunner({"list_nodes": CommandTemplate.parse(
        "list_nodes", str(tool), allowed_programs=[str(tool)])}, timeout=60)
    tracemalloc.start()
    try:
        result = await runner.run("list_nodes", {}, node="")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.ok and result.exit_code == 0
    assert (len(result.stdout), len(result.stderr)) == (1 << 20, 1 << 20)
    assert peak < 16 << 20, f"{peak / (1 << 20):.0f} MiB held while reading"
