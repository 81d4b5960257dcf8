"""The trust pieces on their own: signatures, the agent's command gate, bounded facts, and
the fleet's memory of who counts (vouched, disputed, forgotten, refused)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gearshift.agent.gate import CommandGate
from gearshift.errors import BadMessage, CommandRefused
from gearshift.model import GearCounts, Machine, NodeFacts, NodeState
from gearshift.observe.fleet import FleetModel
from gearshift.observe.mqtt import MqttFactSource
from gearshift.settings import MqttSettings, TrustSettings
from gearshift.wire.facts import facts_to_message, parse_facts
from gearshift.wire.signing import (
    Keyring,
    NodeKeys,
    SignatureError,
    new_master_line,
    node_key_lines,
    open_envelope,
    seal,
    write_private,
)

NOW = 1_800_000_000.0
PREFIX = "gearshift/v1"


def keyring(tmp_path: Path, *kids: str) -> Keyring:
    path = tmp_path / "keyring"
    write_private(path, "".join(new_master_line(kid) + "\n" for kid in kids or ("k1",)))
    return Keyring.load(path)


def facts_payload(identity: str, *, active: int = 5, ts: float = NOW, **gears: int) -> bytes:
    facts = NodeFacts(identity=identity, node_profile="small", max_active_gears=60,
                      gears=GearCounts(total=active + 10, active=active, idle=10, **gears))
    return json.dumps(facts_to_message(facts, now=ts)).encode()


def signed_facts(ring: Keyring, identity: str, *, topic_identity: str | None = None,
                 ts: float = NOW, active: int = 5) -> bytes:
    kid, key = ring.node_key(identity)
    topic = f"{PREFIX}/nodes/{topic_identity or identity}/facts"
    return seal(facts_payload(identity, active=active, ts=ts), key=key, kid=kid,
                purpose="facts", topic=topic, ts=ts)


class Clock:
    def __init__(self) -> None:
        self.t = NOW

    def now(self) -> float:
        return self.t


def source(ring: Keyring | None, **trust: object) -> tuple[MqttFactSource, FleetModel]:
    fleet = FleetModel(stale_after=60, max_nodes=int(trust.pop("max_nodes", 1000)),  # type: ignore[call-overload]
                       max_unvouched=int(trust.pop("max_unvouched", 1000)))  # type: ignore[call-overload]
    src = MqttFactSource(MqttSettings(), fleet, clock=Clock(),  # type: ignore[arg-type]
                         trust=TrustSettings.model_validate(trust), keyring=ring)
    return src, fleet


# -- signatures -------------------------------------------------------------------------

def test_a_signature_binds_key_topic_purpose_time_and_body(tmp_path: Path) -> None:
    ring = keyring(tmp_path)
    kid, key = ring.node_key("n1")
    topic = f"{PREFIX}/nodes/n1/facts"
    payload = seal(b'{"a":1}', key=key, kid=kid, purpose="facts", topic=topic, ts=NOW)
    assert open_envelope(payload, keys=ring.node_keys("n1"), purpose="facts",
                         topic=topic).body == b'{"a":1}'
    envelope = json.loads(payload)
    tampered: list[tuple[dict[str, object], str]] = [
        ({"keys": ring.node_keys("n2")}, "bad_signature"),  # another node's key
        ({"topic": f"{PREFIX}/nodes/n2/facts"}, "bad_signature"),  # moved to another topic
        ({"purpose": "command"}, "bad_signature"),  # replayed as another kind of message
    ]
    for change, reason in tampered:
        args = {"keys": ring.node_keys("n1"), "purpose": "facts", "topic": topic, **change}
        with pytest.raises(SignatureError) as caught:
            open_envelope(payload, **args)  # type: ignore[arg-type]
        assert caught.value.reason == reason
    for field, value in (("body", '{"a":2}'), ("ts", NOW + 1), ("kid", "k9")):
        forged = json.dumps({**envelope, field: value}).encode()
        with pytest.raises(SignatureError) as caught:
            open_envelope(forged, keys=ring.node_keys("n1"), purpose="facts", topic=topic)
        assert caught.value.reason == ("unknown_key" if field == "kid" else "bad_signature")
    with pytest.raises(SignatureError) as caught:
        open_envelope(b'{"schema": "gearshift.signed/1", "kid": "k1"}',
                      keys=ring.node_keys("n1"), purpose="facts", topic=topic)
    assert caught.value.reason == "bad_envelope"


def test_rotation_a_new_master_key_and_the_old_one_both_verify(tmp_path: Path) -> None:
    old = keyring(tmp_path, "k1")
    rotated = Keyring((("k2", b"n" * 32), *old.keys))
    topic = f"{PREFIX}/nodes/n1/facts"
    kid, key = old.node_key("n1")  # a node that has not got its new key yet
    payload = seal(b"{}", key=key, kid=kid, purpose="facts", topic=topic, ts=NOW)
    assert open_envelope(payload, keys=rotated.node_keys("n1"), purpose="facts",
                         topic=topic).kid == "k1"
    assert rotated.node_key("n1")[0] == "k2"  # commands go out with the newest


def test_key_files_are_refused_when_unusable(tmp_path: Path) -> None:
    ring = keyring(tmp_path)
    node = tmp_path / "node.key"
    write_private(node, "\n".join(node_key_lines(ring, "n1")) + "\n")
    assert NodeKeys.load(node).current[1] == ring.node_key("n1")[1]
    os.chmod(node, 0o644)
    with pytest.raises(ValueError, match="readable by every user"):
        NodeKeys.load(node)
    for text, words in (("k1:short\n", "not base64"), ("k1:" + "QUFB" * 4 + "\n", "at least 32"),
                        ("# nothing\n", "holds no key"), ("bad id!:x\n", "KID:BASE64")):
        path = tmp_path / f"k{abs(hash(words))}"
        write_private(path, text)
        with pytest.raises(ValueError, match=words):
            NodeKeys.load(path)


# -- facts through the source -------------------------------------------------------------

def test_require_signed_refuses_unsigned_forged_and_moved_facts(tmp_path: Path) -> None:
    ring = keyring(tmp_path)
    other = Keyring((("k1", b"o" * 32),))
    src, fleet = source(ring, facts="require_signed", keyring_file=tmp_path / "keyring")
    topic = f"{PREFIX}/nodes/n1/facts"
    src.handle(topic, signed_facts(ring, "n1"))
    assert fleet.facts("n1") is not None and fleet.facts("n1").signed  # type: ignore[union-attr]
    cases = {
        "unsigned": facts_payload("n1", active=0),
        "bad_signature": signed_facts(other, "n1", active=0),  # another daemon's keyring
    }
    for reason, payload in cases.items():
        src.handle(topic, payload)
        assert fleet.refusals["n1"].reason == reason
        assert fleet.facts("n1").gears.active == 5  # type: ignore[union-attr]
    # n2's genuine, signed facts replayed on n1's topic: the topic is in the signature
    src.handle(topic, signed_facts(ring, "n2", topic_identity="n2", ts=NOW + 1))
    assert fleet.refusals["n1"].reason == "bad_signature"
    src.handle(topic, signed_facts(ring, "n1", ts=NOW + 60, active=0))  # 60 s ahead
    assert fleet.refusals["n1"].reason == "clock_skew"
    assert fleet.facts("n1").gears.active == 5  # type: ignore[union-attr]
    src.handle(topic, signed_facts(ring, "n1", ts=NOW - 30, active=0))  # an old one replayed
    assert fleet.facts("n1").gears.active == 5  # type: ignore[union-attr]


def test_accept_unsigned_flags_them_and_refuses_a_downgrade(tmp_path: Path) -> None:
    ring = keyring(tmp_path)
    src, fleet = source(ring)
    src.handle(f"{PREFIX}/nodes/n1/facts", facts_payload("n1"))
    assert fleet.facts("n1") is not None and not fleet.facts("n1").signed  # type: ignore[union-attr]
    src.handle(f"{PREFIX}/nodes/n2/facts", signed_facts(ring, "n2"))
    src.handle(f"{PREFIX}/nodes/n2/facts", facts_payload("n2", active=0, ts=NOW + 1))
    assert fleet.refusals["n2"].reason == "unsigned"
    assert fleet.facts("n2").gears.active == 5  # type: ignore[union-attr]


@pytest.mark.parametrize("payload", [
    b'{"schema": "gearshift.node.facts/1", "identity": "n1", "node_profile": "small",'
    b' "limits": {"max_active_gears": 60}, "gears": {"active": 1' + b"0" * 400 + b"}}",
    json.dumps({"node_profile": "small", "max_active_gears": "60",
                "gears_active_count": "1" + "0" * 400}).encode(),
    json.dumps({"node_profile": "small", "max_active_gears": "1e400"}).encode(),
    json.dumps({"node_profile": "small", "max_active_gears": "NaN"}).encode(),
])
def test_huge_numbers_are_bad_messages_not_crashes(payload: bytes) -> None:
    with pytest.raises(BadMessage):
        parse_facts(payload, topic_identity="n1")


def test_counts_above_the_ceiling_make_the_facts_bad_and_say_which() -> None:
    facts = parse_facts(facts_payload("n1", active=50_000), topic_identity="n1",
                        max_gears=10_000)
    assert facts.bad_reason is not None and "gears.total is 50010" in facts.bad_reason
    fleet = FleetModel(stale_after=60)
    fleet.ingest(facts, received_at=NOW)
    node = fleet.snapshot(NOW).nodes[0]
    assert node.state is NodeState.UNKNOWN and "trust.max_gears" in (node.why_unknown or "")


def test_the_node_table_is_bounded(tmp_path: Path) -> None:
    src, fleet = source(None, max_nodes=3)
    for n in range(5):
        src.handle(f"{PREFIX}/nodes/n{n}/facts", facts_payload(f"n{n}"))
    assert len(fleet) == 3 and fleet.refusals["n4"].reason == "fleet_full"
    src.handle(f"{PREFIX}/nodes/n0/facts", facts_payload("n0", active=7, ts=NOW + 1))
    assert fleet.facts("n0").gears.active == 7  # type: ignore[union-attr]  # known: updated


# -- the fleet's memory ---------------------------------------------------------------------

def test_unvouched_nodes_count_for_nothing_ours_and_members_do() -> None:
    fleet = FleetModel(stale_after=60)
    for identity in ("ours", "member", "forged"):
        fleet.ingest(parse_facts(facts_payload(identity), topic_identity=identity),
                     received_at=NOW)
    machines = {"ours": Machine(provider="rack", machine_id="m1", name="ours")}
    states = {n.identity: n.state for n in fleet.snapshot(NOW, machines=machines).nodes}
    assert set(states.values()) == {NodeState.ACTIVE}  # nobody vouches yet: all count
    fleet.set_vouched(frozenset({"member"}))
    states = {n.identity: n.state for n in fleet.snapshot(NOW, machines=machines).nodes}
    assert states == {"ours": NodeState.ACTIVE, "member": NodeState.ACTIVE,
                      "forged": NodeState.UNVOUCHED}


def test_a_disputed_node_is_held_unknown_until_the_hold_ends() -> None:
    fleet = FleetModel(stale_after=600)
    fleet.ingest(parse_facts(facts_payload("n1", active=0), topic_identity="n1"),
                 received_at=NOW)
    fleet.dispute("n1", "the platform says 3 active", until=NOW + 100)
    node = fleet.snapshot(NOW + 1).nodes[0]
    assert node.state is NodeState.UNKNOWN and "3 active" in (node.why_unknown or "")
    assert fleet.snapshot(NOW + 101).nodes[0].state is NodeState.ACTIVE
    assert fleet.disputes(NOW + 101) == {}


def test_nodes_not_ours_are_forgotten_after_silence() -> None:
    fleet = FleetModel(stale_after=60, forget_after=3600)
    for identity in ("ours", "theirs", "recent"):
        fleet.ingest(parse_facts(facts_payload(identity, ts=NOW), topic_identity=identity),
                     received_at=NOW)
    fleet.touch("recent", at=NOW + 3000)
    assert fleet.expire(NOW + 3601, keep={"ours"}) == ["theirs"]
    assert set(fleet.identities()) == {"ours", "recent"}


# -- the agent's command gate ---------------------------------------------------------------

def test_the_gate_admits_only_signed_fresh_addressed_new_commands(tmp_path: Path) -> None:
    ring = keyring(tmp_path)
    node_file = tmp_path / "n1.key"
    write_private(node_file, "\n".join(node_key_lines(ring, "n1")) + "\n")
    topic = f"{PREFIX}/nodes/n1/command"
    clock = Clock()
    gate = CommandGate(identity="n1", command_topic=topic, keys=NodeKeys.load(node_file),
                       clock=clock.now)

    def command(request_id: str, *, target: str = "n1", expires: float = NOW + 60,
                key_of: str = "n1", at_topic: str = topic) -> bytes:
        kid, key = ring.node_key(key_of)
        body = {"command": "activate", "args": {}, "request_id": request_id,
                "target": target, "expires_at": expires}
        return seal(json.dumps(body).encode(), key=key, kid=kid, purpose="command",
                    topic=at_topic, ts=NOW)

    assert json.loads(gate.admit(command("r1")))["request_id"] == "r1"
    refused = {
        "unsigned": b'{"command": "activate", "request_id": "r2"}',
        "bad_signature": command("r3", key_of="n2"),
        "not this node": command("r4", target="n2"),
        "expired": command("r5", expires=NOW - 1),
        "too far ahead": command("r6", expires=NOW + 7200),
        "replayed": command("r1"),
        "another topic": command("r7", at_topic=f"{PREFIX}/nodes/n2/command"),
    }
    for what, payload in refused.items():
        with pytest.raises(CommandRefused):
            gate.admit(payload)
        assert what  # each one refused
    clock.t = NOW + 61  # r1 expired: forgotten, and refused as expired if replayed now
    with pytest.raises(CommandRefused, match="expired"):
        gate.admit(command("r1"))


def test_without_a_key_every_command_is_refused_unless_migrating() -> None:
    strict = CommandGate(identity="n1", command_topic="t", keys=None)
    with pytest.raises(CommandRefused, match="no key_file"):
        strict.admit(b'{"command": "activate"}')
    migrating = CommandGate(identity="n1", command_topic="t", keys=None, allow_unsigned=True)
    assert migrating.admit(b'{"command": "activate"}') == b'{"command": "activate"}'


def test_forged_identities_cannot_grow_the_table_once_the_platform_vouches() -> None:
    src, fleet = source(None, max_unvouched=3)
    fleet.set_vouched(frozenset({"member"}))
    fleet.set_owned(frozenset({"ours"}))
    for n in range(10):
        src.handle(f"{PREFIX}/nodes/forged{n}/facts", facts_payload(f"forged{n}"))
    src.handle(f"{PREFIX}/nodes/member/facts", facts_payload("member"))
    src.handle(f"{PREFIX}/nodes/ours/facts", facts_payload("ours"))
    assert len(fleet) == 5 and {"member", "ours"} <= set(fleet.identities())
    assert fleet.refusals["forged9"].reason == "fleet_full"
    assert "trust.max_unvouched" in fleet.refusals["forged9"].detail
    fleet.forget("forged0")  # forgotten (silence): room for one more
    src.handle(f"{PREFIX}/nodes/late/facts", facts_payload("late"))
    assert "late" in fleet


def test_an_empty_message_cannot_erase_a_signed_node(tmp_path: Path) -> None:
    ring = keyring(tmp_path)
    src, fleet = source(ring, facts="require_signed", keyring_file=tmp_path / "keyring")
    src.handle(f"{PREFIX}/nodes/n1/facts", signed_facts(ring, "n1"))
    src.handle(f"{PREFIX}/nodes/n1/facts", b"")
    assert "n1" in fleet
    lax, lax_fleet = source(None)
    lax.handle(f"{PREFIX}/nodes/n1/facts", facts_payload("n1"))
    lax.handle(f"{PREFIX}/nodes/n1/facts", b"")  # unsigned fleets: cleared means retired
    assert "n1" not in lax_fleet


def test_the_agent_refuses_an_alias_bomb_in_its_config_and_facts(tmp_path: Path) -> None:
    from gearshift.agent.config import load_agent_config
    from gearshift.agent.sources import _read
    from gearshift.errors import ConfigError, FactsUnavailable

    bomb = "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True))
    config = tmp_path / "agent.yaml"
    config.write_text(bomb)
    with pytest.raises(ConfigError) as caught:
        load_agent_config(config)
    assert caught.value.problems[0].startswith(f"{config}:")
    facts = tmp_path / "facts.yaml"
    facts.write_text(bomb)
    with pytest.raises(FactsUnavailable):
        _read(facts)
