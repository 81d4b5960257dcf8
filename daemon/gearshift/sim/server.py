"""A simulated world that outlives the daemon: providers and PaaS over HTTP, facts over MQTT.

``python -m gearshift.sim.server --providers FILE --port N --mqtt-port M`` runs one
``SimWorld`` in real time in its own process. ``gearshift run`` drives it with
``kind: simulated`` providers and ``platform: {kind: simulated}``, both given the
server's ``url``; node agents are simulated by publishing every ready node's facts to
the broker (``SimPublisher``), reconnecting when the broker goes away.

It is the referee of the crash, fault and HA tests, so it keeps the score itself, no
matter how often the daemon dies:

* creates are idempotent by key; a key asked for again after its machine was destroyed
  is a *duplicate create* (a resurrected operation), as is a second machine for a key;
* destroying a node that holds active gears is counted;
* any call that touches a machine without gearshift's tag is counted;
* every provider call is counted (by provider, operation and outcome) with its time,
  so a test can bound the total and the busiest window (no retry storms).

Faults, set at any time with ``POST /v1/admin/faults``: ``failure_rate`` (HTTP 503
before doing anything), ``hang_rate`` and ``hang_seconds`` (the call is carried out,
then the answer is held back longer than the client waits: the answer is lost),
``slow_seconds`` (every provider call takes this long), ``platform_failure_rate`` and
``platform_slow_seconds`` (every PaaS step takes this long).
``POST /v1/admin/demand`` sets demanded active gears per pool; ``POST
/v1/admin/foreign`` adds a machine that is not ours; ``GET /v1/report`` is the score.
What is counted and how the report is made of it lives in ``referee.py``; this module
serves HTTP and decides when something counts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import time
from pathlib import Path
from typing import Any

import aiomqtt
import structlog
from aiohttp import web

from gearshift.act.platform.base import NodeRef
from gearshift.act.providers.base import OWNER_TAG, CreateRequest
from gearshift.clock import SystemClock
from gearshift.errors import (
    CapacityUnavailable,
    NotFound,
    PermanentError,
    QuotaExceeded,
    TransientError,
)
from gearshift.logs import configure
from gearshift.model import Machine
from gearshift.policy.loader import load_policy_set
from gearshift.policy.schema import PolicySet
from gearshift.settings import MqttSettings
from gearshift.sim import referee
from gearshift.sim.nodes import SimNode
from gearshift.sim.providers import SimulatedPlatform, SimulatedProvider
from gearshift.sim.publisher import SimPublisher
from gearshift.sim.world import SimWorld
from gearshift.wire.signing import Keyring

log = structlog.get_logger(component="gearshift.sim.server")


def _machine_json(machine: Machine) -> dict[str, Any]:
    return {"machine_id": machine.machine_id, "name": machine.name, "pool": machine.pool,
            "blueprint": machine.blueprint, "created_at": machine.created_at,
            "key": machine.key, "power": machine.power.value}


class WorldServer:
    def __init__(self, policies: PolicySet, *, mqtt: MqttSettings, seed: int = 0,
                 move_time: float = 1.0, period: float = 0.2, heartbeat: float = 2.0,
                 keyring: Keyring | None = None) -> None:
        if policies.providers is None:
            raise ValueError("the world server needs a Providers file")
        self.policies = policies
        self.clock = SystemClock()
        self.rng = random.Random(seed)
        self.world = SimWorld(seed=seed, start=self.clock.now(), move_time=move_time)
        self.providers = {spec.name: SimulatedProvider(spec, world=self.world, clock=self.clock,
                                                       rng=random.Random(seed + 1))
                          for spec in policies.providers.providers}
        self.platform = SimulatedPlatform(self.world)
        self.publisher = SimPublisher(self.world, mqtt, clock=self.clock, period=period,
                                      heartbeat=heartbeat, keyring=keyring)
        self.mqtt = mqtt
        self.faults = referee.Faults()
        self.score = referee.Score()
        self.started = time.time()
        self.app = web.Application()
        self.app.add_routes([
            web.get("/v1/providers/{provider}/machines", self.list_machines),
            web.post("/v1/providers/{provider}/machines", self.create),
            web.delete("/v1/providers/{provider}/machines/{machine_id}", self.destroy),
            web.post("/v1/providers/{provider}/machines/{machine_id}/{power:stop|start}",
                     self.power),
            web.get("/v1/providers/{provider}/quota", self.quota),
            web.post("/v1/platform/nodes/{identity}/{step}", self.platform_step),
            web.get("/v1/platform/nodes", self.platform_members),
            web.get("/v1/platform/nodes/{identity}/gears", self.platform_gears),
            web.post("/v1/admin/demand", self.set_demand),
            web.post("/v1/admin/faults", self.set_faults),
            web.post("/v1/admin/foreign", self.add_foreign),
            web.get("/v1/report", self.report),
        ])

    # -- provider calls ---------------------------------------------------------------
    def _provider(self, request: web.Request) -> SimulatedProvider:
        provider = self.providers.get(request.match_info["provider"])
        if provider is None:
            raise web.HTTPBadRequest(text="unknown provider")
        return provider

    def _count(self, provider: str, op: str, outcome: str) -> None:
        self.score.count(provider, op, outcome, at=time.time())

    async def _faulty(self, provider: str, op: str) -> bool:
        """Apply faults before a call: raise a 503, or say whether to hang after it."""
        if self.faults.slow_seconds:
            await asyncio.sleep(self.faults.slow_seconds)
        roll = self.rng.random()
        if roll < self.faults.failure_rate:
            self._count(provider, op, "injected_503")
            raise web.HTTPServiceUnavailable(text="injected failure")
        return roll < self.faults.failure_rate + self.faults.hang_rate

    async def _hang(self, provider: str, op: str) -> None:
        self._count(provider, op, "injected_hang")
        await asyncio.sleep(self.faults.hang_seconds)

    async def list_machines(self, request: web.Request) -> web.Response:
        provider = self._provider(request)
        hang = await self._faulty(provider.name, "list")
        if hang:
            await self._hang(provider.name, "list")
        self._count(provider.name, "list", "ok")
        machines = await provider.list_owned()
        return web.json_response({"machines": [_machine_json(m) for m in machines]})

    async def create(self, request: web.Request) -> web.Response:
        provider = self._provider(request)
        body = await request.json()
        key, name, pool = str(body["key"]), str(body["name"]), str(body["pool"])
        tags = body.get("tags") or {}
        assert self.policies.providers is not None
        blueprint = self.policies.providers.blueprint(str(body["blueprint"]))
        if blueprint is None:
            raise web.HTTPBadRequest(text="unknown blueprint")
        hang = await self._faulty(provider.name, "create")
        if key in self.score.destroyed_keys and self.world.keys.get(key) not in self.world.nodes:
            # The machine made for this key was destroyed; asking again resurrects an
            # operation that should have been closed. Record it and refuse.
            self.score.resurrected_keys.append(key)
            self.world.violations.duplicate_creates += 1
            self._count(provider.name, "create", "resurrection")
            raise web.HTTPGone(text="this key's machine was destroyed")
        try:
            machine = await provider.create(CreateRequest(key=key, name=name, pool=pool,
                                                          blueprint=blueprint))
        except QuotaExceeded as exc:
            self._count(provider.name, "create", "quota")
            raise web.HTTPConflict(text=exc.message) from None
        except CapacityUnavailable as exc:
            self._count(provider.name, "create", "capacity")
            raise web.HTTPInsufficientStorage(text=exc.message) from None
        except TransientError as exc:
            self._count(provider.name, "create", "transient")
            raise web.HTTPServiceUnavailable(text=exc.message) from None
        node = self.world.nodes[machine.name]
        node.tagged = tags.get(OWNER_TAG) == "gearshift"
        if hang:
            await self._hang(provider.name, "create")
        self._count(provider.name, "create", "ok")
        return web.json_response(_machine_json(machine), status=201)

    async def destroy(self, request: web.Request) -> web.Response:
        provider = self._provider(request)
        machine_id = request.match_info["machine_id"]
        hang = await self._faulty(provider.name, "destroy")
        node = next((n for n in self.world.nodes.values()
                     if n.machine_id == machine_id and n.provider == provider.name), None)
        if node is None:
            self._count(provider.name, "destroy", "not_found")
            raise web.HTTPNotFound(text="no such machine")
        if not node.tagged:
            self.score.foreign_touched += 1
        self.score.retired.append({"identity": node.identity, "active": node.active,
                                   "total": node.total, "district_active": node.district_active,
                                   "at": time.time()})
        self.score.destroyed_keys.add(node.key)
        self.world.destroy(node.identity)
        if hang:
            await self._hang(provider.name, "destroy")
        self._count(provider.name, "destroy", "ok")
        return web.Response(status=204)

    async def power(self, request: web.Request) -> web.Response:
        """Stop or start a machine (its disk kept); 404 for an unknown one."""
        provider = self._provider(request)
        machine_id, op = request.match_info["machine_id"], request.match_info["power"]
        hang = await self._faulty(provider.name, op)
        try:
            await (provider.stop if op == "stop" else provider.start)(machine_id)
        except NotFound as exc:
            self._count(provider.name, op, "not_found")
            raise web.HTTPNotFound(text=exc.message) from None
        except PermanentError as exc:
            self.score.foreign_touched += 1
            self._count(provider.name, op, "permanent")
            raise web.HTTPForbidden(text=exc.message) from None
        if hang:
            await self._hang(provider.name, op)
        self._count(provider.name, op, "ok")
        return web.Response(status=204)

    async def quota(self, request: web.Request) -> web.Response:
        provider = self._provider(request)
        hang = await self._faulty(provider.name, "quota")
        if hang:
            await self._hang(provider.name, "quota")
        info = await provider.quota()
        self._count(provider.name, "quota", "ok")
        return web.json_response({"max_nodes": info.max_nodes, "used": info.used})

    # -- platform calls ---------------------------------------------------------------
    async def platform_step(self, request: web.Request) -> web.Response:
        identity, step = request.match_info["identity"], request.match_info["step"]
        self.score.platform_calls[step] += 1
        if self.faults.platform_slow_seconds:
            await asyncio.sleep(self.faults.platform_slow_seconds)
        if self.rng.random() < self.faults.platform_failure_rate:
            raise web.HTTPServiceUnavailable(text="injected platform failure")
        node = self.world.nodes.get(identity)
        if node is not None and not node.tagged:
            self.score.foreign_touched += 1
        ref = NodeRef(identity, node.district if node is not None else None)
        if step == "deactivate":
            self.score.deactivations.append((time.time(), identity))
            await self.platform.deactivate(ref)
        elif step == "activate":
            await self.platform.activate(ref)
        elif step == "remove":
            await self.platform.remove(ref)
        elif step == "add":
            await self.platform.add(ref)
        elif step == "move":
            body = await request.json()
            report = await self.platform.move_gears(ref, limit=int(body.get("limit", 10)))
            return web.json_response({"started": report.started, "failed": report.failed,
                                      "remaining": report.remaining})
        else:
            raise web.HTTPNotFound(text="unknown step")
        return web.json_response({"ok": True})

    async def platform_members(self, request: web.Request) -> web.Response:
        self.world.advance(self.clock.now())
        members = await self.platform.members()
        return web.json_response({"members": sorted(members or ())})

    async def platform_gears(self, request: web.Request) -> web.Response:
        self.score.platform_calls["gears"] += 1
        self.world.advance(self.clock.now())
        count = await self.platform.gears(NodeRef(request.match_info["identity"], None))
        assert count is not None
        return web.json_response({"total": count.total, "active": count.active})

    # -- admin ------------------------------------------------------------------------
    async def set_demand(self, request: web.Request) -> web.Response:
        for pool, gears in (await request.json()).items():
            self.world.set_demand(pool, int(gears))
        return web.json_response(dict(self.world.demand))

    async def set_faults(self, request: web.Request) -> web.Response:
        for name, value in (await request.json()).items():
            if not hasattr(self.faults, name):
                raise web.HTTPBadRequest(text=f"unknown fault {name}")
            setattr(self.faults, name, float(value))
        return web.json_response(self.faults.__dict__)

    async def add_foreign(self, request: web.Request) -> web.Response:
        body = await request.json()
        now = self.clock.now()
        node = SimNode(identity=str(body["identity"]), pool=str(body["pool"]),
                       profile=str(body.get("profile", body["pool"])),
                       max_active_gears=int(body.get("max_active_gears", 20)),
                       provider=str(body.get("provider", "elsewhere")),
                       machine_id=f"foreign-{body['identity']}", key=f"foreign-{body['identity']}",
                       created_at=now, ready_at=now, tagged=False)
        self.world.add_node(node)
        return web.json_response({"identity": node.identity}, status=201)

    async def report(self, request: web.Request) -> web.Response:
        return web.json_response(referee.report(self.score, self.world, now=time.time()))

    # -- running ----------------------------------------------------------------------
    async def publish(self, stop: asyncio.Event) -> None:
        """Node agents: publish facts; when the broker goes, retry until it is back."""
        while not stop.is_set():
            try:
                await self.publisher.run(stop)
            except aiomqtt.MqttError as exc:
                log.warning("broker lost; agents reconnect", error=str(exc))
                self.publisher.published.clear()  # publish everything again once back
                for _ in range(max(1, round(0.5 / self.publisher.period))):
                    self.publisher.step()  # the world goes on while agents cannot publish
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.publisher.period):
                            await stop.wait()
                    if stop.is_set():
                        break

    async def run(self, host: str, port: int, stop: asyncio.Event) -> None:
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        log.info("world server up", url=f"http://{host}:{port}")
        try:
            await self.publish(stop)
        finally:
            await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gearshift.sim.server",
                                     description="Serve a simulated world (providers, PaaS, "
                                                 "node facts) to gearshift run.")
    parser.add_argument("--providers", type=Path, required=True, help="a kind: Providers file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mqtt-host", default="127.0.0.1")
    parser.add_argument("--mqtt-port", type=int, required=True)
    parser.add_argument("--mqtt-prefix", default="gearshift/v1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--move-time", type=float, default=1.0, help="seconds per gear move")
    parser.add_argument("--period", type=float, default=0.2, help="agents publish this often")
    parser.add_argument("--heartbeat", type=float, default=2.0,
                        help="agents republish unchanged facts this often")
    parser.add_argument("--keyring", type=Path, default=None,
                        help="sign every node's facts with its key from this keyring "
                             "(the daemon's trust.keyring_file)")
    args = parser.parse_args(argv)
    configure(level="warning", fmt="console")
    policies = load_policy_set([args.providers])
    server = WorldServer(policies, mqtt=MqttSettings(host=args.mqtt_host, port=args.mqtt_port,
                                                     prefix=args.mqtt_prefix),
                         seed=args.seed, move_time=args.move_time, period=args.period,
                         heartbeat=args.heartbeat,
                         keyring=Keyring.load(args.keyring) if args.keyring else None)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await server.run(args.host, args.port, stop)

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
