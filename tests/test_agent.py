"""``gearshift agent``: fact sources, the command allowlist, and the whole agent over a real
mosquitto (facts, last will on kill -9, commands answered on the MQTT 5 response topic with
the correlation data echoed)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import yaml
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from conftest import need
from gearshift.act.platform.agent import AgentRunner
from gearshift.agent.commands import CommandRunner, build_argv
from gearshift.agent.config import AgentConfig, ContainerFacts, load_agent_config
from gearshift.agent.sources import FactSource, count_containers
from gearshift.errors import CommandRefused, ConfigError, FactsUnavailable
from gearshift.model import NodeState
from gearshift.observe.fleet import FleetModel
from gearshift.observe.mqtt import MqttFactSource
from gearshift.settings import MqttSettings
from gearshift.wire.mqtt import client_for
from gearshift.wire.signing import (
    Keyring,
    new_master_line,
    node_key_lines,
    open_envelope,
    seal,
    write_private,
)
from rigs import running, wait_until

FACTER_YAML = """\
# /etc/mcollective/facts.yaml as OpenShift's cron job writes it (some values unquoted)
node_profile: small
max_active_gears: 60
gears_total_count: "30"
gears_idle_count: "8"
gears_stopped_count: "2"
gears_active_count: "20"
gears_started_count: "20"
district_uuid: 513b5050
district_active: true
active_capacity: "33.3"
public_hostname: node1.example.com
kernel: Linux
partitions: {sda1: {size: 1}}
"""

PODMAN_PS = json.dumps([
    {"Id": "a", "State": "running", "Names": ["g1"]},
    {"Id": "b", "State": "running", "Names": ["g2"]},
    {"Id": "c", "State": "exited", "Names": ["g3"]},
    {"Id": "d", "State": "paused", "Names": ["g4"]},
    {"Id": "e", "State": "created", "Names": ["g5"]},
])
DOCKER_PS = "\n".join(json.dumps({"ID": str(i), "State": state}) for i, state in
                      enumerate(["running", "exited", "exited", "restarting", "dead"]))


# -- fact sources ---------------------------------------------------------------------
async def test_openshift_facter_file(tmp_path: Path) -> None:
    path = tmp_path / "facts.yaml"
    path.write_text(FACTER_YAML)
    config = AgentConfig.model_validate({"identity": "node1.example.com",
                                         "facts": {"kind": "openshift", "path": str(path)}})
    facts = await FactSource(config.facts, config.identity).read()
    assert facts.max_active_gears == 60 and facts.gears.active == 20
    assert facts.district_uuid == "513b5050" and facts.district_active
    path.write_text(FACTER_YAML.replace("max_active_gears: 60", "max_active_gears: 0"))
    bad = await FactSource(config.facts, config.identity).read()
    assert bad.bad_reason is not None  # published as is; the daemon marks the node unknown
    path.write_text("node_profile: [")
    with pytest.raises(FactsUnavailable):
        await FactSource(config.facts, config.identity).read()


async def test_a_yaml_facts_file_with_an_unquoted_timestamp(tmp_path: Path) -> None:
    """YAML reads `ts: 2025-01-01T00:00:00Z` as a datetime: it must not kill the agent."""
    path = tmp_path / "facts.yaml"
    path.write_text("schema: gearshift.node.facts/1\nts: 2025-01-01T00:00:00Z\n"
                    "node_profile: small\nlimits: {max_active_gears: 60}\n"
                    "gears: {total: 3, active: 2}\nwhen: 2025-01-01\n")
    config = AgentConfig.model_validate({"identity": "node1.example.com",
                                         "facts": {"kind": "file", "path": str(path)}})
    facts = await FactSource(config.facts, config.identity).read()
    assert facts.produced_at == 1735689600.0 and facts.gears.active == 2


def test_container_states_from_podman_and_docker_output() -> None:
    assert count_containers(PODMAN_PS) == {"started": 2, "stopped": 2, "idle": 1}
    assert count_containers(DOCKER_PS) == {"started": 1, "stopped": 2, "deploying": 1,
                                           "unknown": 1}
    assert count_containers("") == {}
    with pytest.raises(FactsUnavailable):
        count_containers("<html>")


async def test_container_counts_from_a_stand_in_runtime(tmp_path: Path) -> None:
    """The runtime's output shape, with running containers (which this sandbox cannot
    start): a stand-in binary prints what podman prints."""
    fake = tmp_path / "podman"
    fake.write_text(f"#!/bin/sh\ncat <<'EOF'\n{PODMAN_PS}\nEOF\n")
    fake.chmod(0o755)
    source = FactSource(ContainerFacts(kind="containers", binary=fake, node_profile="small",
                                       max_active_gears=60), "n1")
    facts = await source.read()
    assert (facts.gears.total, facts.gears.active, facts.gears.started, facts.gears.idle,
            facts.gears.stopped) == (5, 2, 2, 1, 2)


@pytest.fixture
def podman_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A podman with its own throw-away storage (vfs), so tests never touch the host's."""
    podman = need("podman")
    conf = tmp_path / "storage.conf"
    conf.write_text(f'[storage]\ndriver = "vfs"\ngraphroot = "{tmp_path / "graph"}"\n'
                    f'runroot = "{tmp_path / "run"}"\n')
    monkeypatch.setenv("CONTAINERS_STORAGE_CONF", str(conf))
    yield podman
    subprocess.run([podman, "rm", "--all", "--force"], capture_output=True, check=False)
    subprocess.run([podman, "rmi", "--all", "--force"], capture_output=True, check=False)


async def test_container_counts_from_a_real_podman(podman_storage: str, tmp_path: Path) -> None:
    podman = podman_storage
    empty = tmp_path / "empty"
    empty.mkdir()
    subprocess.run(["tar", "-C", str(empty), "-cf", str(tmp_path / "empty.tar"), "."],
                   check=True)
    subprocess.run([podman, "import", str(tmp_path / "empty.tar"), "localhost/gs-empty:t"],
                   check=True, capture_output=True)
    for name, labels in (("gear1", ["--label", "gear=yes"]), ("gear2", ["--label", "gear=yes"]),
                         ("other", [])):
        subprocess.run([podman, "create", "--name", name, *labels, "localhost/gs-empty:t",
                        "/nothing"], check=True, capture_output=True)
    config = ContainerFacts(kind="containers", runtime="podman", filters=["label=gear=yes"],
                            node_profile="small", max_active_gears=60, district_uuid="d1")
    facts = await FactSource(config, "n1").read()
    # Created, never started: they hold a UID but no active slot.
    assert (facts.gears.total, facts.gears.active, facts.gears.stopped) == (2, 0, 2)
    assert facts.district_uuid == "d1"


# -- commands -------------------------------------------------------------------------
def test_templates_substitute_whole_arguments() -> None:
    template = "oo-admin-ctl-district -c deactivate-node -n {district} -i {host}"
    argv = build_argv(template, {"district": "513b", "host": "node1.example.com"})
    assert argv == ["oo-admin-ctl-district", "-c", "deactivate-node", "-n", "513b", "-i",
                    "node1.example.com"]
    assert build_argv("tool --node={host}", {"host": "a b"})[1] == "--node=a b"  # one element
    with pytest.raises(CommandRefused, match="missing"):
        build_argv(template, {"district": "513b"})
    with pytest.raises(CommandRefused, match="unexpected"):
        build_argv(template, {"district": "d", "host": "h", "extra": "x"})


@pytest.mark.parametrize("template", ["{program} -x", "echo {host!r}", "echo {host:>10}",
                                      "echo {0}", "echo {a.b}", ""])
def test_bad_templates_are_refused_when_the_config_loads(template: str, tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump({"identity": "n1", "facts": {"kind": "file", "path": "x"},
                                    "commands": {"deactivate": template}}))
    with pytest.raises(ConfigError) as caught:
        load_agent_config(path)
    assert "commands" in caught.value.problems[0]


def request(command: str, request_id: str | None = None, **args: Any) -> bytes:
    return json.dumps({"command": command, "args": args,
                       "request_id": request_id or uuid.uuid4().hex}).encode()


def make_keys(directory: Path, identity: str) -> tuple[Keyring, Path]:
    """A daemon keyring and ``identity``'s node key file (mode 600) in ``directory``."""
    ring = directory / "keyring"
    if not ring.exists():
        write_private(ring, new_master_line("k1") + "\n")
    keyring = Keyring.load(ring)
    node_key = directory / f"{identity}.key"
    if not node_key.exists():
        write_private(node_key, "\n".join(node_key_lines(keyring, identity)) + "\n")
    return keyring, node_key


def signed(command: str, request_id: str, *, keyring: Keyring, identity: str, topic: str,
           target: str | None = None, expires_in: float = 60.0, **args: Any) -> bytes:
    """A command as the daemon sends it: signed with ``identity``'s key, with target and
    expiry."""
    now = time.time()
    body = {"command": command, "args": args, "request_id": request_id,
            "target": target or identity, "expires_at": now + expires_in}
    kid, key = keyring.node_key(identity)
    return seal(json.dumps(body).encode(), key=key, kid=kid, purpose="command", topic=topic,
                ts=now)


def reply_body(message: aiomqtt.Message, keyring: Keyring, identity: str) -> dict[str, Any]:
    """The agent's signed reply, checked as the daemon checks it."""
    opened = open_envelope(message.payload, keys=keyring.node_keys(identity),
                           purpose="reply", topic=message.topic.value)
    result: dict[str, Any] = json.loads(opened.body)
    return result


async def test_the_runner_runs_only_what_is_allowed_and_safely(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEARSHIFT_MQTT__PASSWORD", "do-not-leak")
    runner = CommandRunner({
        "deactivate": "/bin/echo deactivate-node -n {district} -i {host}",
        "fail": "/bin/sh -c 'echo oops >&2; exit 3'",
        "slow": "/bin/sleep {seconds}",
        "chatty": "/usr/bin/seq 1 {count}",
        "env": "/usr/bin/env",
        "missing": "/nonexistent/tool {host}",
    }, timeout=1.0)
    ok = await runner.handle(request("deactivate", "r1", district="513b", host="n1.example.com"))
    assert ok == {"request_id": "r1", "command": "deactivate", "ok": True, "exit_code": 0,
                  "stdout": "deactivate-node -n 513b -i n1.example.com\n", "stderr": "",
                  "error": None}
    refused = await runner.handle(request("rm", "r2", path="/"))
    assert refused is not None and refused["error"] == "not allowed" and not refused["ok"]
    assert refused["request_id"] == "r2" and refused["exit_code"] is None
    for evil in ("x; rm -rf /", "$(reboot)", "-rf", "a b", "`id`", "", "é", "host\n",
                 "x" * 4097):
        result = await runner.handle(request("deactivate", district="d", host=evil))
        assert result is not None and not result["ok"] and "not allowed" in result["error"]
    gears = ",".join(f"{i:032x}" for i in range(20))  # 20 UUIDs for one oo-admin-move
    listed = await runner.handle(request("deactivate", district="d", host=gears))
    assert listed is not None and listed["ok"] and gears in listed["stdout"]
    failed = await runner.handle(request("fail"))
    assert failed is not None and (failed["ok"], failed["exit_code"]) == (False, 3)
    assert failed["stderr"] == "oops\n"
    slow = await runner.handle(request("slow", seconds="30"))
    assert slow is not None and slow["exit_code"] is None and "timed out" in slow["error"]
    chatty = await runner.handle(request("chatty", count="40000"))
    assert chatty is not None and chatty["ok"]
    assert len(chatty["stdout"].encode()) <= 64 * 1024 + 64 and "truncated" in chatty["stdout"]
    env = await runner.handle(request("env"))
    assert env is not None and "do-not-leak" not in env["stdout"] and "PATH=" in env["stdout"]
    missing = await runner.handle(request("missing", host="h"))
    assert missing is not None and "cannot run" in missing["error"]
    garbage = await runner.handle(b"{nope")
    assert garbage is not None and garbage["error"] == "bad request: not JSON"
    runs = runner.runs
    again = await runner.handle(request("deactivate", "r1", district="513b",
                                        host="n1.example.com"))
    assert again == ok and runner.runs == runs  # a duplicate delivery does not run twice


# -- the whole agent over a real broker ------------------------------------------------
def facts_file(path: Path, *, active: int) -> None:
    path.write_text(json.dumps({
        "schema": "gearshift.node.facts/1", "node_profile": "small",
        "district": {"uuid": "513b5050", "active": True},
        "limits": {"max_active_gears": 60}, "gears": {"total": active, "active": active}}))


@pytest.fixture
def agent_config(tmp_path: Path, mosquitto: tuple[str, int]) -> tuple[Path, MqttSettings, Path]:
    host, port = mosquitto
    prefix = f"gs-agent/{uuid.uuid4().hex[:8]}"
    facts = tmp_path / "facts.json"
    facts_file(facts, active=5)
    config = tmp_path / "agent.yaml"
    _, node_key = make_keys(tmp_path, "node1.example.com")
    config.write_text(yaml.safe_dump({
        "identity": "node1.example.com",
        "mqtt": {"host": host, "port": port, "prefix": prefix, "keepalive": 5},
        "interval": 30, "poll": 0.2, "key_file": str(node_key),
        "facts": {"kind": "file", "path": str(facts)},
        "commands": {"deactivate": "/bin/echo deactivate-node -n {district} -i {host}",
                     "activate": "/bin/echo activate-node -n {district} -i {host}"},
        "command_timeout": "10s"}))
    return config, MqttSettings(host=host, port=port, prefix=prefix, catch_up_min=0.05), facts


def start_agent(config: Path, *, log: Any = None) -> subprocess.Popen[bytes]:
    """``gearshift agent`` as its own process (so it can be killed like a real one)."""
    return subprocess.Popen([sys.executable, "-m", "gearshift", "agent", "--config",
                             str(config), "--log-level", "info"],
                            stdout=log, stderr=subprocess.STDOUT if log else None,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


async def ask(client: aiomqtt.Client, topic: str, payload: bytes, *, reply_to: str | None,
              correlation: bytes | None) -> None:
    properties = None
    if reply_to is not None:
        properties = Properties(PacketTypes.PUBLISH)
        properties.ResponseTopic = reply_to
        if correlation is not None:
            properties.CorrelationData = correlation
    await client.publish(topic, payload, qos=1, properties=properties)


async def next_message(client: aiomqtt.Client, topic: str) -> aiomqtt.Message:
    async with asyncio.timeout(10):
        async for message in client.messages:
            if message.topic.value == topic:
                return message
    raise AssertionError("unreachable")


async def test_agent_end_to_end_over_mosquitto(
        agent_config: tuple[Path, MqttSettings, Path], tmp_path: Path) -> None:
    config, settings, facts = agent_config
    prefix, identity = settings.prefix, "node1.example.com"
    log = (tmp_path / "agent.log").open("w+b")
    agent = start_agent(config, log=log)
    fleet = FleetModel(stale_after=60)
    keyring, _ = make_keys(tmp_path, identity)
    try:
        source = MqttFactSource(settings, fleet, keyring=keyring)
        async with running(source), client_for(settings) as client:
            await wait_until(lambda: fleet.is_fresh(identity, time.time()), 20,
                             "the agent's facts")
            first = fleet.facts(identity)
            assert first is not None and first.gears.active == 5 and first.seq is not None
            facts_file(facts, active=50)  # a change is published within a poll
            await wait_until(lambda: fleet.facts(identity).gears.active == 50,  # type: ignore[union-attr]
                             10, "the changed facts")
            assert fleet.facts(identity).seq > first.seq  # type: ignore[union-attr, operator]
            assert first.signed  # the agent signs its facts with its key_file

            replies = f"{prefix}/test-replies/{uuid.uuid4().hex[:6]}"
            command_topic = f"{prefix}/nodes/{identity}/command"
            await client.subscribe(replies, qos=1)
            await client.subscribe(f"{prefix}/nodes/{identity}/reply", qos=1)
            sign: dict[str, Any] = {"keyring": keyring, "identity": identity, "topic": command_topic}
            await ask(client, command_topic,
                      signed("deactivate", "req-1", **sign, district="513b5050", host=identity),
                      reply_to=replies, correlation=b"corr-\x00\x01")
            message = await next_message(client, replies)
            body = reply_body(message, keyring, identity)
            assert body == {"request_id": "req-1", "command": "deactivate", "ok": True,
                            "exit_code": 0, "stdout": f"deactivate-node -n 513b5050 -i "
                                                      f"{identity}\n",
                            "stderr": "", "error": None}
            assert message.properties.CorrelationData == b"corr-\x00\x01"  # type: ignore[union-attr]

            await ask(client, command_topic, signed("reboot", "req-2", **sign),
                      reply_to=replies, correlation=b"c2")
            message = await next_message(client, replies)
            body = reply_body(message, keyring, identity)
            assert (body["ok"], body["error"], body["request_id"]) == (False, "not allowed",
                                                                        "req-2")
            assert message.properties.CorrelationData == b"c2"  # type: ignore[union-attr]

            # No response topic (an MQTT 3.1.1 requester): the reply goes to .../reply.
            await ask(client, command_topic,
                      signed("activate", "req-3", **sign, district="d1", host=identity),
                      reply_to=None, correlation=None)
            message = await next_message(client, f"{prefix}/nodes/{identity}/reply")
            assert reply_body(message, keyring, identity)["request_id"] == "req-3"

            # Forged: unsigned, signed with another node's key, addressed to another node,
            # expired, replayed. Each is refused, said so in the reply, and runs nothing.
            other_keyring = Keyring((("k1", b"x" * 32),))
            forged = {
                "unsigned": request("deactivate", "f1", district="d1", host=identity),
                "wrong key": signed("deactivate", "f2", keyring=other_keyring,
                                    identity=identity, topic=command_topic,
                                    district="d1", host=identity),
                "another node": signed("deactivate", "f3", **sign, target="node2.example.com",
                                       district="d1", host=identity),
                "expired": signed("deactivate", "f4", **sign, expires_in=-5,
                                  district="d1", host=identity),
                "replayed": signed("activate", "req-3", **sign, district="d1", host=identity),
            }
            for what, payload in forged.items():
                await ask(client, command_topic, payload, reply_to=replies,
                          correlation=what.encode())
                message = await next_message(client, replies)
                body = reply_body(message, keyring, identity)
                assert not body["ok"] and body["exit_code"] is None, what
                assert "refused" in body["error"], (what, body["error"])

            agent.send_signal(signal.SIGKILL)  # no goodbye: the broker sends the last will
            agent.wait(10)
            await wait_until(lambda: not fleet.is_fresh(identity, time.time()), 20,
                             "the last will")
            node = fleet.snapshot(time.time()).nodes[0]
            assert node.state is NodeState.UNKNOWN and "offline" in (node.why_unknown or "")
            await client.publish(f"{prefix}/nodes/{identity}/facts", b"", qos=1, retain=True)
            await client.publish(f"{prefix}/nodes/{identity}/status", b"", qos=1, retain=True)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(5)
    log.seek(0)
    text = log.read().decode(errors="replace")
    assert "command not allowed: refused" in text and "reboot" in text
    assert "agent connected" in text
    assert text.count('"event": "command refused"') == 5  # each forged one, with why
    for words in ("unsigned command refused", "bad_signature", "not this node", "expired",
                  "replayed request_id"):
        assert words in text, words


async def test_a_clean_stop_says_offline_itself(
        agent_config: tuple[Path, MqttSettings, Path]) -> None:
    config, settings, _ = agent_config
    identity = "node1.example.com"
    agent = start_agent(config)
    fleet = FleetModel(stale_after=60)
    keyring, _ = make_keys(config.parent, identity)
    try:
        async with running(MqttFactSource(settings, fleet, keyring=keyring)):
            await wait_until(lambda: fleet.is_fresh(identity, time.time()), 20, "facts")
            agent.send_signal(signal.SIGTERM)
            assert agent.wait(10) == 0
            await wait_until(lambda: not fleet.is_fresh(identity, time.time()), 10, "offline")
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(5)


def test_agent_once_prints_the_message(agent_config: tuple[Path, MqttSettings, Path]) -> None:
    config, _, _ = agent_config
    result = subprocess.run([sys.executable, "-m", "gearshift", "agent", "--config",
                             str(config), "--once"], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    message = json.loads(result.stdout)
    assert message["schema"] == "gearshift.node.facts/1"
    assert message["identity"] == "node1.example.com" and message["gears"]["active"] == 5


async def test_agent_over_activemq_mqtt_3_1_1(activemq_peer: Any, tmp_path: Path) -> None:
    """ActiveMQ 5.x speaks MQTT 3.1.1: no response topic, so replies go to .../reply."""
    broker = activemq_peer
    if broker.process is None or broker.process.poll() is not None:
        broker.start()
    settings = broker.settings()
    identity = "node7.example.com"
    facts = tmp_path / "facts.yaml"
    facts.write_text(FACTER_YAML)
    config = tmp_path / "agent.yaml"
    keyring, node_key = make_keys(tmp_path, identity)
    config.write_text(yaml.safe_dump({
        "identity": identity,
        "mqtt": {"host": broker.host, "port": broker.port, "prefix": settings.prefix,
                 "protocol": "3.1.1", "keepalive": 5}, "key_file": str(node_key),
        "interval": 30, "poll": 0.2, "facts": {"kind": "openshift", "path": str(facts)},
        "commands": {"activate": "/bin/echo activate-node -n {district} -i {host}"}}))
    agent = start_agent(config)
    fleet = FleetModel(stale_after=60)
    try:
        async with running(MqttFactSource(settings, fleet, keyring=keyring)), \
                client_for(settings) as client:
            await wait_until(lambda: fleet.is_fresh(identity, time.time()), 30, "facts")
            assert fleet.facts(identity).gears.active == 20  # type: ignore[union-attr]
            await client.subscribe(f"{settings.prefix}/nodes/{identity}/reply", qos=1)
            topic = f"{settings.prefix}/nodes/{identity}/command"
            await client.publish(topic, signed("activate", "amq-1", keyring=keyring,
                                               identity=identity, topic=topic,
                                               district="513b5050", host=identity), qos=1)
            message = await next_message(client, f"{settings.prefix}/nodes/{identity}/reply")
            body = reply_body(message, keyring, identity)
            assert (body["request_id"], body["ok"]) == ("amq-1", True)
            assert body["stdout"] == f"activate-node -n 513b5050 -i {identity}\n"
            # Forged over ActiveMQ too: unsigned, and addressed to another node.
            for forged in (request("activate", "amq-2", district="d1", host=identity),
                           signed("activate", "amq-3", keyring=keyring, identity=identity,
                                  topic=topic, target="node8.example.com",
                                  district="d1", host=identity)):
                await client.publish(topic, forged, qos=1)
                message = await next_message(client,
                                             f"{settings.prefix}/nodes/{identity}/reply")
                body = reply_body(message, keyring, identity)
                assert not body["ok"] and "refused" in body["error"]
                assert body["exit_code"] is None
            agent.send_signal(signal.SIGKILL)
            agent.wait(10)
            await wait_until(lambda: not fleet.is_fresh(identity, time.time()), 30,
                             "the last will")
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(5)


async def test_the_daemons_platform_client_drives_a_real_agent(
        agent_config: tuple[Path, MqttSettings, Path]) -> None:
    """The other half of the protocol: act.platform.agent.AgentRunner, as the daemon uses
    it, against this agent as a separate process."""
    config, settings, _ = agent_config
    identity = "node1.example.com"
    agent = start_agent(config)
    keyring, _ = make_keys(config.parent, identity)
    runner = AgentRunner(settings, broker_identity=identity, timeout=20, keyring=keyring)
    fleet = FleetModel(stale_after=60)
    try:
        async with running(MqttFactSource(settings, fleet, keyring=keyring)):
            await wait_until(lambda: fleet.is_fresh(identity, time.time()), 20, "the agent")
            done = await runner.run("deactivate", {"district": "513b5050", "host": identity},
                                    node=identity)
            assert (done.ok, done.exit_code, done.error) == (True, 0, None)
            assert done.stdout == f"deactivate-node -n 513b5050 -i {identity}\n"
            refused = await runner.run("remove", {"district": "513b5050", "host": identity},
                                       node=identity)
            assert not refused.ok and refused.exit_code is None
            assert refused.error == f"agent {identity}: not allowed"
    finally:
        await runner.close()
        agent.kill()
        agent.wait(5)
