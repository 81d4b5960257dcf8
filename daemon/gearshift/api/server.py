"""The HTTP surface (aiohttp), 127.0.0.1:9310 by default.

Read-only: ``/healthz`` (the loop is alive), ``/readyz`` (facts are fresh), ``/metrics``,
``/v1/status``, ``/v1/plan`` (a dry run with reasons and candidates), ``/v1/events``,
and ``/`` (a small status page). Mutating calls (pause/resume a pool, capacity requests)
need ``Authorization: Bearer TOKEN`` with the token from ``http.token_file``: 401 when
the header is missing, 403 when the token is wrong (compared in constant time); without
a configured token they are refused (403) rather than open.
"""

from __future__ import annotations

import hmac
import importlib.resources
import uuid
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from gearshift.durations import parse_duration
from gearshift.explain import plan_to_dict
from gearshift.metrics import Metrics
from gearshift.model import CapacityRequest
from gearshift.reconcile.reconciler import Reconciler


def _iso(at: float | None) -> str | None:
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class ApiServer:
    def __init__(self, reconciler: Reconciler, metrics: Metrics, *, token: str | None,
                 max_body: int = 65536, leader: Callable[[], bool] = lambda: True,
                 stale_loop_after: float = 300.0,
                 extra_status: Callable[[], dict[str, Any]] | None = None) -> None:
        self.reconciler = reconciler
        self.metrics = metrics
        self.token = token
        self.leader = leader
        self.extra_status = extra_status  # leadership, operations in flight, recoveries
        self.stale_loop_after = stale_loop_after
        self.app = web.Application(client_max_size=max_body)
        self.app.add_routes([
            web.get("/", self.page),
            web.get("/healthz", self.healthz),
            web.get("/readyz", self.readyz),
            web.get("/metrics", self.metrics_view),
            web.get("/v1/status", self.status),
            web.get("/v1/plan", self.plan),
            web.get("/v1/events", self.events),
            web.post("/v1/pools/{name}/pause", self.pause),
            web.post("/v1/pools/{name}/resume", self.resume),
            web.post("/v1/capacity-requests", self.capacity_request),
        ])
        self.runner: web.AppRunner | None = None

    async def start(self, host: str, port: int) -> None:
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, host, port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    # -- auth -------------------------------------------------------------------------
    def _authorize(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            raise web.HTTPUnauthorized(
                text='{"error": "bearer token required"}', content_type="application/json",
                headers={"WWW-Authenticate": 'Bearer realm="gearshift"'})
        given = header.removeprefix("Bearer ").strip().encode()
        if self.token is None or not hmac.compare_digest(given, self.token.encode()):
            raise web.HTTPForbidden(text='{"error": "token not accepted"}',
                                    content_type="application/json")

    # -- views ------------------------------------------------------------------------
    async def healthz(self, request: web.Request) -> web.Response:
        last = self.reconciler.last_success
        now = self.reconciler.clock.now()
        alive = last is not None and now - last <= max(self.stale_loop_after,
                                                       3 * self.reconciler.interval)
        body = {"alive": alive, "last_reconcile": _iso(last)}
        return web.json_response(body, status=200 if alive else 503)

    async def readyz(self, request: web.Request) -> web.Response:
        ready = self.reconciler.fleet.source_up and self.reconciler.last_success is not None
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def metrics_view(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.exposition(),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    def status_body(self) -> dict[str, Any]:
        evaluations = self.reconciler.last_pools
        policies = self.reconciler.policies.current
        pools: dict[str, Any] = {}
        for policy in policies.pools:
            e = evaluations.get(policy.name)
            pools[policy.name] = {
                "nodes": {"active": e.active if e else 0, "booting": e.booting if e else 0,
                          "draining": e.draining if e else 0, "unknown": e.unknown if e else 0},
                "active_density": e.active_density if e else None,
                "desired_nodes": e.desired_nodes if e else policy.size.min,
                "degraded": e.degraded if e else True,
                "paused": policy.name in self.reconciler.paused,
                "min": policy.size.min, "max": policy.size.max,
                "band": {"scale_up_above": policy.density.scale_up_above,
                         "target": policy.density.target,
                         "scale_down_below": policy.density.scale_down_below},
                "summary": e.summary if e else "not evaluated yet",
            }
        snapshot = self.reconciler.last_snapshot
        by_provider: dict[str, int] = {}
        if snapshot is not None:
            for node in snapshot.nodes:
                if node.machine is not None:
                    by_provider[node.machine.provider] = by_provider.get(node.machine.provider,
                                                                         0) + 1
        providers = {name: {**asdict(p.status()), "nodes": by_provider.get(name, 0)}
                     for name, p in self.reconciler.providers.items()}
        return {
            "pools": pools,
            "leader": self.leader(),
            "facts_fresh": self.reconciler.fleet.source_up,
            "last_reconcile": _iso(self.reconciler.last_success),
            "providers": providers,
            "policy_errors": list(self.reconciler.policies.problems),
            **(self.extra_status() if self.extra_status is not None else {}),
        }

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(self.status_body())

    async def plan(self, request: web.Request) -> web.Response:
        plan = await self.reconciler.dry_run()
        return web.json_response(plan_to_dict(plan))

    async def events(self, request: web.Request) -> web.Response:
        events = [{**asdict(e), "at": _iso(e.at)} for e in self.reconciler.executor.events]
        return web.json_response({"events": list(reversed(events))[:200]})

    async def _pool(self, request: web.Request) -> str:
        self._authorize(request)
        name = request.match_info["name"]
        if self.reconciler.policies.current.pool(name) is None:
            raise web.HTTPNotFound(text='{"error": "no such pool"}',
                                   content_type="application/json")
        return name

    async def pause(self, request: web.Request) -> web.Response:
        name = await self._pool(request)
        self.reconciler.paused.add(name)
        return web.json_response({"pool": name, "paused": True})

    async def resume(self, request: web.Request) -> web.Response:
        name = await self._pool(request)
        self.reconciler.paused.discard(name)
        self.reconciler.wake("pool resumed")
        return web.json_response({"pool": name, "paused": False})

    async def capacity_request(self, request: web.Request) -> web.Response:
        self._authorize(request)
        try:
            data = await request.json()
        except ValueError as exc:
            raise web.HTTPBadRequest(text='{"error": "body must be JSON"}',
                                     content_type="application/json") from exc
        if not isinstance(data, dict):
            raise web.HTTPBadRequest(text='{"error": "body must be a JSON object"}',
                                     content_type="application/json")
        pool, gears = data.get("pool"), data.get("gears")
        if not isinstance(pool, str) or self.reconciler.policies.current.pool(pool) is None:
            raise web.HTTPUnprocessableEntity(text='{"error": "unknown pool"}',
                                              content_type="application/json")
        if not isinstance(gears, int) or isinstance(gears, bool) or not 0 < gears <= 100000:
            raise web.HTTPUnprocessableEntity(text='{"error": "gears must be 1..100000"}',
                                              content_type="application/json")
        try:
            ttl = parse_duration(str(data.get("ttl", "30m")))
        except ValueError as exc:
            raise web.HTTPUnprocessableEntity(text='{"error": "bad ttl"}',
                                              content_type="application/json") from exc
        request_id = uuid.uuid4().hex
        now = self.reconciler.clock.now()
        self.reconciler.requests.add(CapacityRequest(
            request_id=request_id, pool=pool, gears=gears, expires_at=now + ttl,
            reason=str(data.get("reason", ""))[:200]))
        self.reconciler.wake("capacity request")
        return web.json_response({"id": request_id, "pool": pool, "gears": gears,
                                  "expires_at": _iso(now + ttl)}, status=201)

    async def page(self, request: web.Request) -> web.Response:
        html = importlib.resources.files("gearshift.api").joinpath("status.html").read_text()
        return web.Response(text=html, content_type="text/html")
