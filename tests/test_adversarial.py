"""An attacker with publish rights on the broker, against real brokers and the real daemon.

Issue 11's promise: gearshift never retires a node that holds active gears, whatever
anyone publishes. Each attack here is one that worked before signed facts, the second
witness and vouched nodes:

* with broker ACLs (the shipped ``deploy/mosquitto/acl``), another client cannot publish
  on a node's topics at all;
* without broker help (anonymous mosquitto, ActiveMQ), facts that are unsigned, signed with
  another node's key, moved to another node's topic, replayed or dated in the future are
  refused, each with its reason counted and shown, while the real node's facts count;
* the daemon under its default trust config (unsigned facts accepted) against forged idle
  nodes and forged "I am empty" facts for its draining nodes retires nothing that holds
  active gears, counts no forged node, and says that the witnesses disagreed;
* a node that says it is empty while the platform lists gears is not retired (the
  executor with a platform that disagrees, and the OpenShift adapter with the fake tools).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from conftest import ROOT, need
from gearshift.metrics import Metrics
from gearshift.model import NodeState
from gearshift.observe.fleet import FleetModel
from gearshift.observe.mqtt import MqttFactSource, client_for
from gearshift.settings import MqttSettings, TrustSettings
from gearshift.signing import Keyring, new_master_line, seal, write_private
from gearshift.sim.broker import start_mosquitto
from peers import Broker
from rigs import facts_payload, running, wait_until

ACL = ROOT / "deploy" / "mosquitto" / "acl"
CONF = ROOT / "deploy" / "mosquitto" / "mosquitto.conf"
PREFIX = "gearshift/v1"  # the shipped acl's prefix, used as it is
USERS = ("node1", "node2", "gearshift", "evil")


def counted(counter: Any, label: str = "reason") -> dict[str, float]:
    """A labelled counter's ``_total`` samples, by ``label``."""
    out: dict[str, float] = {}
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                out[sample.labels[label]] = sample.value
    return out


def total(counter: Any) -> float:
    return sum(s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total"))


# -- a. broker ACLs bind a client's user name to its node's topics ----------------------

@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[tuple[int, dict[str, Path]]]:
    """mosquitto with the shipped acl and conf snippet; a password file for USERS."""
    passwd = need("mosquitto_passwd")
    # mosquitto started as root drops to its own user: it must be able to read these.
    shared = Path(tempfile.mkdtemp(prefix="gearshift-acl-"))
    shared.chmod(0o755)
    users = shared / "passwd"
    secrets: dict[str, Path] = {}
    for i, user in enumerate(USERS):
        password = f"{user}-pw-{i}"
        subprocess.run([passwd, "-b", *(["-c"] if i == 0 else []), str(users), user, password],
                       check=True, capture_output=True)
        secrets[user] = tmp_path / f"{user}.pw"
        secrets[user].write_text(password)
        secrets[user].chmod(0o600)
    acl = shared / "acl"
    shutil.copy(ACL, acl)
    for path in (users, acl):
        path.chmod(0o644)
    conf = CONF.read_text().replace("/etc/mosquitto/gearshift.passwd", str(users)) \
                           .replace("/etc/mosquitto/gearshift.acl", str(acl))
    assert str(acl) in conf and str(users) in conf, "the shipped conf snippet changed shape"
    directory = tmp_path / "broker"
    directory.mkdir()
    process, port = start_mosquitto(directory, extra_config=conf)
    try:
        yield port, secrets
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(shared, ignore_errors=True)


def _as(port: int, secrets: dict[str, Path], user: str) -> MqttSettings:
    return MqttSettings(host="127.0.0.1", port=port, prefix=PREFIX, username=user,
                        password_file=secrets[user], client_id=f"gs-{user}",
                        reconnect_min=0.1, reconnect_max=0.5, catch_up_min=0.05)


async def _forge(settings: MqttSettings, topic: str, payload: bytes, *,
                 retain: bool = False) -> None:
    """Publish as another user; mosquitto may cut a client off for a denied publish."""
    try:
        async with client_for(settings) as client:
            await client.publish(topic, payload, qos=1, retain=retain)
    except aiomqtt.MqttError:
        pass


async def test_broker_acl_lets_only_node1_publish_node1s_facts(
        acl_broker: tuple[int, dict[str, Path]]) -> None:
    port, secrets = acl_broker
    metrics = Metrics()
    fleet = FleetModel(stale_after=600)
    source = MqttFactSource(_as(port, secrets, "gearshift"), fleet, metrics=metrics)
    topic = f"{PREFIX}/nodes/node1/facts"
    evil, node2 = _as(port, secrets, "evil"), _as(port, secrets, "node2")
    now = time.time()
    async with running(source), client_for(_as(port, secrets, "node1")) as node1:
        # The forgeries come first and are done with before node1 speaks.
        await _forge(evil, topic, facts_payload("node1", active=0, ts=now + 5, seq=99))
        await _forge(node2, topic, facts_payload("node1", active=1, ts=now + 5, seq=98))
        await node1.publish(topic, facts_payload("node1", active=42, ts=now, seq=1), qos=1)
        await wait_until(lambda: fleet.facts("node1") is not None, what="node1's own facts")
        # And after: a forgery with a newer ts and seq would win if it arrived.
        await _forge(evil, topic, facts_payload("node1", active=0, ts=now + 1, seq=100),
                     retain=True)
        await _forge(node2, topic, facts_payload("node1", active=2, ts=now + 1, seq=100),
                     retain=True)
        # The control: evil may speak for itself (the acl is not simply refusing it).
        async with client_for(evil) as own:
            await own.publish(f"{PREFIX}/nodes/evil/facts",
                              facts_payload("evil", active=3, ts=now, seq=1), qos=1)
        await wait_until(lambda: fleet.facts("evil") is not None, what="evil's own facts")
        await node1.publish(topic, facts_payload("node1", active=43, ts=now + 0.5, seq=2),
                            qos=1, retain=True)
        await wait_until(lambda: fleet.facts("node1").seq == 2,  # type: ignore[union-attr]
                         what="node1's second message")
        facts = fleet.facts("node1")
        assert facts is not None and facts.gears.active == 43
        assert sorted(fleet.identities()) == ["evil", "node1"]
        # Nothing forged reached the daemon: not even as a refused or out-of-order message.
        assert counted(metrics.bad_messages) == {}
        assert total(metrics.facts_received) == 3
        assert "node1" not in fleet.refusals
    # Nor is any forgery retained for whoever subscribes next: node1's own facts are.
    fresh = FleetModel(stale_after=600)
    async with running(MqttFactSource(_as(port, secrets, "gearshift"), fresh)):
        retained = fresh.facts("node1")
        assert retained is not None and retained.gears.active == 43


# -- b. message-level authentication, whatever the broker ---------------------------------

def _keyring(directory: Path) -> tuple[Path, Keyring]:
    path = directory / "keyring"
    write_private(path, new_master_line("k1") + "\n")
    return path, Keyring.load(path)


def _signed(keyring: Keyring, *, key_of: str, topic: str, identity: str, active: int,
            ts: float, seq: int, envelope_ts: float | None = None) -> bytes:
    kid, key = keyring.node_key(key_of)
    body = facts_payload(identity, active=active, ts=ts, seq=seq)
    return seal(body, key=key, kid=kid, purpose="facts", topic=topic,
                ts=ts if envelope_ts is None else envelope_ts)


async def test_forged_replayed_and_future_facts_are_refused_with_their_reason(
        broker: Broker, tmp_path: Path) -> None:
    settings = broker.settings()
    prefix = settings.prefix
    path, keyring = _keyring(tmp_path)
    trust = TrustSettings(facts="require_signed", keyring_file=path)
    metrics = Metrics()
    fleet = FleetModel(stale_after=600)
    source = MqttFactSource(settings, fleet, metrics=metrics, trust=trust, keyring=keyring)
    t1, t2 = f"{prefix}/nodes/node1/facts", f"{prefix}/nodes/node2/facts"
    now = time.time()
    first = _signed(keyring, key_of="node1", topic=t1, identity="node1", active=30,
                    ts=now - 20, seq=1)
    async with running(source), client_for(settings) as legit, \
            client_for(settings) as attacker:
        async def expect(reason: str, count: float) -> None:
            await wait_until(lambda: counted(metrics.bad_messages).get(reason) == count,
                             what=f"{count:g} refused as {reason}")
            assert fleet.refusals["node1"].reason == reason

        await legit.publish(t1, first, qos=1)
        await legit.publish(t2, _signed(keyring, key_of="node2", topic=t2, identity="node2",
                                        active=10, ts=now, seq=1), qos=1)
        await wait_until(lambda: len(fleet) == 2, what="both nodes' signed facts")
        await legit.publish(t1, _signed(keyring, key_of="node1", topic=t1, identity="node1",
                                        active=31, ts=now, seq=2), qos=1)
        await wait_until(lambda: fleet.facts("node1").seq == 2,  # type: ignore[union-attr]
                         what="node1's newer facts")

        # Unsigned, from another client.
        await attacker.publish(t1, facts_payload("node1", active=0, ts=now + 1, seq=3), qos=1)
        await expect("unsigned", 1)
        # Signed, but with node2's key.
        await attacker.publish(t1, _signed(keyring, key_of="node2", topic=t1, identity="node1",
                                           active=0, ts=now + 1, seq=3), qos=1)
        await expect("bad_signature", 1)
        # node2's genuine signed message, moved to node1's topic.
        moved = _signed(keyring, key_of="node2", topic=t2, identity="node2", active=0,
                        ts=now + 1, seq=3)
        await attacker.publish(t1, moved, qos=1)
        await expect("bad_signature", 2)
        # A key the daemon never issued.
        stranger = Keyring((("k1", b"s" * 32),))
        await attacker.publish(t1, _signed(stranger, key_of="node1", topic=t1, identity="node1",
                                           active=0, ts=now + 1, seq=3), qos=1)
        await expect("bad_signature", 3)
        # node1's own old signed facts, replayed.
        await attacker.publish(t1, first, qos=1)
        await expect("out_of_order", 1)
        # node1's key, but dated a minute ahead (beyond trust.max_clock_skew, 10 s).
        await attacker.publish(t1, _signed(keyring, key_of="node1", topic=t1, identity="node1",
                                           active=0, ts=now + 60, seq=4), qos=1)
        await expect("clock_skew", 1)
        # Facts dated ahead inside a signature dated now: the two must agree.
        await attacker.publish(t1, _signed(keyring, key_of="node1", topic=t1, identity="node1",
                                           active=0, ts=now + 200, seq=5, envelope_ts=now),
                               qos=1)
        await expect("clock_skew", 2)
        # Under require_signed, "online" from anyone changes nothing.
        await attacker.publish(f"{prefix}/nodes/node3/status", b"online", qos=1)

        # The legitimate node still speaks and counts.
        await legit.publish(t1, _signed(keyring, key_of="node1", topic=t1, identity="node1",
                                        active=33, ts=time.time(), seq=6), qos=1)
        await wait_until(lambda: fleet.facts("node1").seq == 6,  # type: ignore[union-attr]
                         what="node1's facts after the attack")
        facts = fleet.facts("node1")
        assert facts is not None and facts.signed and facts.gears.active == 33
        assert sorted(fleet.identities()) == ["node1", "node2"]
        assert total(metrics.facts_received) == 4
        assert total(metrics.unsigned_facts) == 0
        assert counted(metrics.bad_messages) == {"unsigned": 1, "bad_signature": 3,
                                                 "out_of_order": 1, "clock_skew": 2}
        states = {n.identity: n.state for n in fleet.snapshot(time.time()).nodes}
        assert states == {"node1": NodeState.ACTIVE, "node2": NodeState.ACTIVE}


async def test_migration_mode_takes_unsigned_facts_but_never_a_downgrade(
        broker: Broker, tmp_path: Path) -> None:
    settings = broker.settings()
    prefix = settings.prefix
    path, keyring = _keyring(tmp_path)
    trust = TrustSettings(facts="accept_unsigned", keyring_file=path)
    metrics = Metrics()
    fleet = FleetModel(stale_after=600)
    source = MqttFactSource(settings, fleet, metrics=metrics, trust=trust, keyring=keyring)
    t1, t3 = f"{prefix}/nodes/node1/facts", f"{prefix}/nodes/node3/facts"
    now = time.time()
    async with running(source), client_for(settings) as client:
        await client.publish(t1, _signed(keyring, key_of="node1", topic=t1, identity="node1",
                                         active=20, ts=now, seq=1), qos=1)
        await client.publish(t3, facts_payload("node3", active=7, ts=now, seq=1), qos=1)
        await wait_until(lambda: len(fleet) == 2, what="a signed and an unsigned node")
        unsigned = fleet.facts("node3")
        assert unsigned is not None and not unsigned.signed and unsigned.gears.active == 7
        assert total(metrics.unsigned_facts) == 1  # taken, and flagged
        # node1 signed before: an unsigned message for it is a downgrade, refused.
        await client.publish(t1, facts_payload("node1", active=0, ts=now + 1, seq=2), qos=1)
        await wait_until(lambda: counted(metrics.bad_messages).get("unsigned") == 1,
                         what="the downgrade refused")
        assert fleet.refusals["node1"].reason == "unsigned"
        assert "signed its facts before" in fleet.refusals["node1"].detail
        # A bad signature is refused even in migration mode.
        await client.publish(t3, _signed(keyring, key_of="node1", topic=t3, identity="node3",
                                         active=0, ts=now + 1, seq=2), qos=1)
        await wait_until(lambda: counted(metrics.bad_messages).get("bad_signature") == 1,
                         what="the bad signature refused")
        held = fleet.facts("node1")
        assert held is not None and held.signed and held.gears.active == 20
        assert fleet.facts("node3").gears.active == 7  # type: ignore[union-attr]
