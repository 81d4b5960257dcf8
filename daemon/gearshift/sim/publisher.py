"""Simulated node agents: publish every ready node's facts over real MQTT, as agents do.

For ``gearshift demo`` and the integration tests: the world moves in real time; every
node publishes retained JSON facts (QoS 1) when they change and every ``heartbeat``
seconds, and ``online`` on its status topic, so the daemon ingests them through exactly
the path a real deployment uses. Given a keyring, each node signs its facts with its own
node key, as an agent with a ``key_file`` does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import aiomqtt
import structlog

from gearshift.clock import Clock
from gearshift.settings import MqttSettings
from gearshift.sim.world import SimWorld
from gearshift.wire import topics
from gearshift.wire.facts import facts_to_message
from gearshift.wire.mqtt import client_for
from gearshift.wire.signing import Keyring, seal

log = structlog.get_logger(component="gearshift.sim.publisher")


class SimPublisher:
    def __init__(self, world: SimWorld, settings: MqttSettings, *, clock: Clock,
                 demand: Callable[[float], dict[str, int]] | None = None,
                 period: float = 0.5, heartbeat: float = 5.0,
                 keyring: Keyring | None = None) -> None:
        self.world = world
        self.keyring = keyring
        self.settings = settings
        self.clock = clock
        self.demand = demand
        self.period = period
        self.heartbeat = heartbeat
        self.prefix = settings.prefix.rstrip("/")
        self.published: dict[str, float] = {}
        self.messages = 0
        self.max_nodes: dict[str, int] = {}

    def step(self) -> list[tuple[str, bytes]]:
        """Advance the world to now; the messages due (topic, payload)."""
        now = self.clock.now()
        if self.demand is not None:
            for pool, gears in self.demand(now).items():
                self.world.set_demand(pool, gears)
        self.world.advance(now)
        for pool in {n.pool for n in self.world.nodes.values()}:
            count = len(self.world.pool_nodes(pool))
            self.max_nodes[pool] = max(self.max_nodes.get(pool, 0), count)
        due = []
        for node in self.world.ready_nodes():
            last = self.published.get(node.identity)
            if node.dirty or last is None or now - last >= self.heartbeat:
                node.dirty = False
                if last is None:
                    due.append((topics.node(self.prefix, node.identity, "status"), b"online"))
                message = facts_to_message(node.facts(now), now=now)
                topic = topics.node(self.prefix, node.identity, "facts")
                payload = json.dumps(message).encode()
                if self.keyring is not None:
                    kid, key = self.keyring.node_key(node.identity)
                    payload = seal(payload, key=key, kid=kid, purpose="facts", topic=topic,
                                   ts=now)
                due.append((topic, payload))
                self.published[node.identity] = now
        for gone in set(self.published) - set(self.world.nodes):
            del self.published[gone]
        return due

    async def run(self, stop: asyncio.Event) -> None:
        async with client_for(self.settings, identifier="gearshift-sim-agents") as client:
            while not stop.is_set():
                for topic, payload in self.step():
                    await client.publish(topic, payload, qos=1, retain=True)
                    self.messages += 1
                try:
                    async with asyncio.timeout(self.period):
                        await stop.wait()
                except TimeoutError:
                    pass

    async def publish_once(self, client: aiomqtt.Client) -> int:
        """One step, published through ``client`` (tests drive time themselves)."""
        due = self.step()
        for topic, payload in due:
            await client.publish(topic, payload, qos=1, retain=True)
        return len(due)
