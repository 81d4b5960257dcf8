"""A flood of refused messages costs bounded memory and hides nothing that matters.

Every refused facts message is remembered by identity (the topic's node segment) so that
/v1/status can say why a node counts for nothing. The identities are the sender's choice:
a client with publish rights can invent a new one per message. Here 1 500 unsigned facts
under ``trust.facts: require_signed``, each for a fresh identity of the longest length
accepted, go through a real mosquitto while one genuine node keeps its signed facts: the
table keeps the newest 1 000 (observe.fleet.MAX_REFUSED), each identity within the bound,
details cut; the status shows the newest 200 newest first; every refusal is counted; the
genuine node is untouched, and no flooded identity becomes a node.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from gearshift.metrics import Metrics
from gearshift.observe.fleet import MAX_REFUSED, FleetModel
from gearshift.observe.mqtt import MAX_IDENTITY, MqttFactSource
from gearshift.reconcile.trust import SHOWN, untrusted
from gearshift.settings import MqttSettings, TrustSettings
from gearshift.wire.mqtt import client_for
from gearshift.wire.signing import Keyring, new_master_line, seal, write_private
from rigs import facts_payload, running, wait_until

FLOOD = 1_500


def fake(i: int) -> str:
    """The ``i``-th invented identity, as long as an identity may be."""
    stem = f"forged{i:05d}."
    return stem + "x" * (MAX_IDENTITY - len(stem))


async def test_a_flood_of_invented_identities_is_bounded_and_changes_nothing(
        mosquitto: tuple[str, int], tmp_path: Path) -> None:
    host, port = mosquitto
    settings = MqttSettings(host=host, port=port, prefix=f"gs-flood/{uuid.uuid4().hex[:8]}")
    ring = tmp_path / "keyring"
    write_private(ring, new_master_line("k1") + "\n")
    keyring = Keyring.load(ring)
    metrics = Metrics()
    fleet = FleetModel(stale_after=600)
    source = MqttFactSource(settings, fleet, metrics=metrics, keyring=keyring,
                            trust=TrustSettings(facts="require_signed", keyring_file=ring))
    genuine = f"{settings.prefix}/nodes/node1/facts"
    kid, key = keyring.node_key("node1")
    now = time.time()
    async with running(source), client_for(settings) as legit, \
            client_for(settings) as attacker:
        await legit.publish(genuine, seal(facts_payload("node1", active=30, ts=now, seq=1),
                                          key=key, kid=kid, purpose="facts", topic=genuine,
                                          ts=now), qos=1)
        await wait_until(lambda: fleet.facts("node1") is not None, what="node1's facts")
        for i in range(FLOOD):
            identity = fake(i)
            await attacker.publish(f"{settings.prefix}/nodes/{identity}/facts",
                                   facts_payload(identity, active=0, ts=now, seq=1), qos=1)
        await wait_until(lambda: fake(FLOOD - 1) in fleet.refusals, 30, what="the flood")

    assert len(fleet.refusals) == MAX_REFUSED
    assert fake(0) not in fleet.refusals  # the oldest went first
    assert fake(FLOOD - MAX_REFUSED) in fleet.refusals
    assert all(len(i) <= MAX_IDENTITY and len(r.detail) <= 200
               for i, r in fleet.refusals.items())
    assert {r.reason for r in fleet.refusals.values()} == {"unsigned"}
    bad = {s.labels["reason"]: s.value for family in metrics.bad_messages.collect()
           for s in family.samples if s.name.endswith("_total")}
    assert bad == {"unsigned": FLOOD}
    # Only the genuine node is in the fleet, with its own facts.
    assert len(fleet) == 1
    held = fleet.facts("node1")
    assert held is not None and held.gears.active == 30 and held.signed
    shown = untrusted(fleet, None, now=time.time())["refused"]
    assert len(shown) == SHOWN
    assert [r["identity"] for r in shown[:2]] == [fake(FLOOD - 1), fake(FLOOD - 2)]
