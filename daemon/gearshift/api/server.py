"""The HTTP surface (aiohttp), 127.0.0.1:9310 by default.

Read-only: ``/healthz`` (the loop is alive), ``/readyz`` (facts are fresh), ``/metrics``,
``/v1/status``, ``/v1/plan`` (a dry run with reasons and candidates), ``/v1/events``,
and ``/`` (a small status page). Mutating calls (pause/resume a pool, capacity requests)
need ``Authorization: Bearer TOKEN`` with the token from ``http.token_file``: 401 when
the header is missing, 403 when the token is wrong (compared in constant time); without
a configured token they are refused (403) rather than open. Request bodies are limited
to ``http.max_body`` bytes (413), must arrive within ``http.read_timeout`` (408) and, as
JSON, nest at most ``jsonlimits.MAX_DEPTH`` deep (400). A pause or resume is journaled
before it is answered, so it outlives a restart or a failover (503 when the journal
cannot record it). ``/v1/openapi.json`` describes all of it (api/openapi.py); the
status ``/v1/status`` answers is read from the reconciler by api/status.py.

Open to anyone who can connect, the server protects itself (api/guard.py): at most
``http.max_connections`` connections, each closed when it sends no complete request
within ``http.read_timeout``. ``/v1/plan`` runs the whole planner, so its answers come from
one plan shared by every request that arrives while it is computed and reused for
``http.plan_cache`` seconds while no reconcile, reload or pause has happened since: a
burst of requests costs one plan, not one each.
"""

from __future__ import annotations

import asyncio
import hmac
import importlib.resources
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST

from gearshift import jsonlimits
from gearshift.api.guard import AcceptErrorLog, GuardedSite, connection_limit
from gearshift.api.models_status import (
    CapacityRequestCreatedModel,
    DecisionModel,
    ErrorModel,
    HealthModel,
    PoolPausedModel,
    ReadyModel,
    StatusExtrasModel,
    StatusModel,
    UnplacedGearsAcceptedModel,
)
from gearshift.api.openapi import EVENTS_DEFAULT, EVENTS_MAX, openapi_document
from gearshift.api.status import status_model
from gearshift.api_models import EventModel, EventsModel, action_model, iso_time
from gearshift.errors import Fenced, JournalError
from gearshift.explain import plan_to_dict
from gearshift.metrics import Metrics
from gearshift.model import CapacityRequest
from gearshift.observe.requests import parse_capacity_request
from gearshift.observe.unplaced import parse_unplaced, record_unplaced
from gearshift.plan import Plan
from gearshift.reconcile.reconciler import Reconciler


def _iso(at: float | None) -> str | None:
    return None if at is None else iso_time(at)


log = structlog.get_logger(component="gearshift.api")


class _OneLine(logging.Handler):
    """aiohttp's own server log, as one structured line without the request's text.

    aiohttp logs a malformed request (a NUL in a header, say) with a traceback and the
    offending header line, which may carry a bearer token: only the error class goes out.
    """

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):  # the client's fault: no traceback
            log.warning("bad HTTP request refused", error=type(error).__name__,
                        status=error.code)
        else:  # our fault (a handler raised): keep the traceback
            log.error("HTTP request failed", what=record.getMessage(),
                      exc_info=record.exc_info or False)


_server_log = logging.getLogger("gearshift.http")
_server_log.propagate = False
_server_log.setLevel(logging.WARNING)
if not _server_log.handlers:
    _server_log.addHandler(_OneLine())


def _fail(cls: type[web.HTTPError], message: str, **kwargs: Any) -> web.HTTPError:
    """An HTTP error whose body is JSON ``{"error": message}``, like every other answer."""
    return cls(text=json.dumps(ErrorModel(error=message).model_dump()),
               content_type="application/json", **kwargs)


class ApiServer:
    def __init__(self, reconciler: Reconciler, metrics: Metrics, *, token: str | None,
                 max_body: int = 65536, leader: Callable[[], bool] = lambda: True,
                 stale_loop_after: float = 300.0,
                 extra_status: Callable[[], StatusExtrasModel] | None = None,
                 max_connections: int = 256, read_timeout: float = 10.0,
                 plan_cache: float = 2.0) -> None:
        self.reconciler = reconciler
        self.metrics = metrics
        self.token = token
        self.max_body = max_body
        self.leader = leader
        self.extra_status = extra_status  # leadership, operations in flight, recoveries
        self.stale_loop_after = stale_loop_after
        self.max_connections = max_connections
        self.read_timeout = read_timeout
        self.plan_cache = plan_cache
        self.site: GuardedSite | None = None
        self._accept_errors: AcceptErrorLog | None = None
        # /v1/plan: the plan being computed (shared by every request meanwhile) and the
        # last one with what it was computed from (policies, last reconcile, paused pools)
        self._plan_task: asyncio.Task[dict[str, Any]] | None = None
        self._plan: tuple[tuple[Any, ...], float, dict[str, Any]] | None = None
        self.app = web.Application(client_max_size=max_body, middlewares=[self._bounded])
        self.app.add_routes([
            web.get("/", self.page),
            web.get("/healthz", self.healthz),
            web.get("/readyz", self.readyz),
            web.get("/metrics", self.metrics_view),
            web.get("/v1/openapi.json", self.openapi),
            web.get("/v1/status", self.status),
            web.get("/v1/plan", self.plan),
            web.get("/v1/events", self.events),
            web.post("/v1/pools/{name}/pause", self.pause),
            web.post("/v1/pools/{name}/resume", self.resume),
            web.post("/v1/capacity-requests", self.capacity_request),
            web.post("/v1/unplaced-gears", self.unplaced_gears),
        ])
        self.runner: web.AppRunner | None = None
        # The latest actions with their reasons and candidates, for the status page.
        self.decisions: deque[DecisionModel] = deque(maxlen=50)
        if reconciler.last_plan is not None:
            self._remember(reconciler.last_plan)
        reconciler.on_reconciled.append(self._remember)

    def _remember(self, plan: Plan) -> None:
        for action in plan.actions:
            self.decisions.append(DecisionModel(at=iso_time(plan.at),
                                                action=action_model(action)))

    async def start(self, host: str, port: int) -> None:
        # keepalive_timeout: an idle kept-alive connection, or one whose next request's
        # headers do not arrive in time, is closed after read_timeout
        self.runner = web.AppRunner(self.app, access_log=None, logger=_server_log,
                                    keepalive_timeout=self.read_timeout)
        await self.runner.setup()
        limit = connection_limit(self.max_connections)
        if limit < self.max_connections:
            log.warning("http.max_connections lowered to fit the open-files limit "
                        "(raise LimitNOFILE)", configured=self.max_connections, used=limit)
        self._accept_errors = AcceptErrorLog(asyncio.get_running_loop(), metrics=self.metrics)
        self._accept_errors.install()
        self.site = GuardedSite(self.runner, host, port, limit=limit,
                                first_request=self.read_timeout, metrics=self.metrics)
        await self.site.start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        if self._accept_errors is not None:
            self._accept_errors.uninstall()
        if self._plan_task is not None:
            self._plan_task.cancel()

    @web.middleware
    async def _bounded(self, request: web.Request,
                       handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                       ) -> web.StreamResponse:
        """Headers are in (the connection's deadline is met); a body must follow in time."""
        if self.site is not None:
            self.site.guard.served(request)
        if request.can_read_body:
            try:
                async with asyncio.timeout(self.read_timeout):
                    await request.read()  # kept by aiohttp for the handler
            except TimeoutError:
                raise _fail(web.HTTPRequestTimeout, f"the body did not arrive within "
                                                    f"{self.read_timeout:g}s") from None
        return await handler(request)

    # -- auth -------------------------------------------------------------------------
    def _authorize(self, request: web.Request) -> None:
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise _fail(web.HTTPUnauthorized, "bearer token required",
                        headers={"WWW-Authenticate": 'Bearer realm="gearshift"'})
        given = credentials.strip().encode("utf-8", "replace")
        # Compare in constant time; without a configured token nothing is accepted.
        expected = (self.token or "").encode("utf-8")
        if not hmac.compare_digest(given, expected) or self.token is None:
            raise _fail(web.HTTPForbidden, "token not accepted")
        if not self.leader():
            # A follower's reconciler does not act: accepting would tell a lie.
            raise _fail(web.HTTPConflict, "this instance is a follower: ask the leader "
                                          "(see leadership in /v1/status)")

    # -- views ------------------------------------------------------------------------
    async def healthz(self, request: web.Request) -> web.Response:
        """Alive: the loop beat (or finished a reconcile) within ``stale_loop_after``."""
        beat, success = self.reconciler.last_heartbeat, self.reconciler.last_success
        proofs = [t for t in (beat, success) if t is not None]
        now = self.reconciler.clock.now()
        alive = bool(proofs) and now - max(proofs) <= self.stale_loop_after
        body = HealthModel(alive=alive, last_heartbeat=_iso(beat), last_reconcile=_iso(success))
        return web.json_response(body.model_dump(mode="json"), status=200 if alive else 503)

    async def readyz(self, request: web.Request) -> web.Response:
        fresh = self.reconciler.fleet.source_up
        ready = fresh and self.reconciler.last_success is not None
        body = ReadyModel(ready=ready, facts_fresh=fresh,
                          last_reconcile=_iso(self.reconciler.last_success))
        return web.json_response(body.model_dump(mode="json"), status=200 if ready else 503)

    async def openapi(self, request: web.Request) -> web.Response:
        pools = [p.name for p in self.reconciler.policies.current.pools]
        return web.json_response(openapi_document(pools=pools, max_body=self.max_body))

    async def metrics_view(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.exposition(),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    def status_model(self) -> StatusModel:
        extras = self.extra_status() if self.extra_status is not None else None
        return status_model(self.reconciler, leader=self.leader(),
                            decisions=list(reversed(self.decisions))[:20], extras=extras)

    def status_body(self) -> dict[str, Any]:
        """``/v1/status`` as sent."""
        return self.status_model().to_json()

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(self.status_body())

    async def plan(self, request: web.Request) -> web.Response:
        try:
            body = await self.shared_plan()
        except JournalError as exc:  # the store is down or locked: say so, not a bare 500
            log.warning("dry run failed: the journal cannot be read", error=str(exc))
            raise _fail(web.HTTPServiceUnavailable, str(exc)) from exc
        return web.json_response(body)

    async def shared_plan(self) -> dict[str, Any]:
        """A dry run's plan, shared by concurrent requests and reused for ``plan_cache`` s."""
        # what a plan is computed from, besides facts and the journal (which plan_cache
        # bounds): the policies in force, the last reconcile's plan, the paused pools
        basis = (self.reconciler.policies.current, self.reconciler.last_plan,
                 frozenset(self.reconciler.paused))
        if self._plan is not None:
            (policies, last, paused), at, body = self._plan
            if (policies is basis[0] and last is basis[1] and paused == basis[2]
                    and time.monotonic() - at < self.plan_cache):
                return body
        if self._plan_task is None or self._plan_task.done():
            self._plan_task = asyncio.ensure_future(self._dry_run(basis))
        # shielded: a client hanging up must not cancel the plan the others wait for
        return await asyncio.shield(self._plan_task)

    async def _dry_run(self, basis: tuple[Any, ...]) -> dict[str, Any]:
        self.metrics.plan_dry_runs.inc()
        body = plan_to_dict(await self.reconciler.dry_run())
        self._plan = (basis, time.monotonic(), body)
        return body

    async def events(self, request: web.Request) -> web.Response:
        text = request.query.get("limit", str(EVENTS_DEFAULT))
        if not (text.isascii() and text.isdigit() and 1 <= int(text) <= EVENTS_MAX):
            raise _fail(web.HTTPBadRequest, f"limit: must be an integer from 1 to {EVENTS_MAX}")
        newest = list(reversed(self.reconciler.executor.events))[:int(text)]
        events = EventsModel(events=[EventModel.from_event(e) for e in newest])
        return web.json_response(events.model_dump(mode="json"))

    async def _pool(self, request: web.Request) -> str:
        self._authorize(request)
        name = request.match_info["name"]
        if self.reconciler.policies.current.pool(name) is None:
            raise _fail(web.HTTPNotFound, "no such pool")
        return name

    async def pause(self, request: web.Request) -> web.Response:
        name = await self._pool(request)
        await self._journaled(self.reconciler.pause(name))
        return web.json_response(PoolPausedModel(pool=name, paused=True).model_dump())

    async def resume(self, request: web.Request) -> web.Response:
        name = await self._pool(request)
        await self._journaled(self.reconciler.resume(name))
        return web.json_response(PoolPausedModel(pool=name, paused=False).model_dump())

    @staticmethod
    async def _journaled(change: Awaitable[None]) -> None:
        """A pause or resume is journaled (it outlives a restart): say so when it cannot be."""
        try:
            await change
        except Fenced as exc:  # deposed since the check: the new leader must be asked
            raise _fail(web.HTTPConflict, "this instance is no longer the leader: ask the "
                                          "leader (see leadership in /v1/status)") from exc
        except JournalError as exc:
            log.warning("pause or resume refused: the journal cannot record it",
                        error=str(exc))
            raise _fail(web.HTTPServiceUnavailable, str(exc)) from exc

    async def _json_body(self, request: web.Request) -> Any:
        self._authorize(request)
        try:
            return jsonlimits.loads((await request.read()).decode("utf-8"))
        except jsonlimits.TooDeep as exc:
            raise _fail(web.HTTPBadRequest, f"the body must be JSON: {exc}") from exc
        except ValueError as exc:  # includes bodies that are not UTF-8
            raise _fail(web.HTTPBadRequest, "the body must be JSON") from exc

    async def unplaced_gears(self, request: web.Request) -> web.Response:
        """A broker-side hook's report of gears it refused (see ``observe.unplaced``)."""
        data = await self._json_body(request)
        pools = {p.name for p in self.reconciler.policies.current.pools}
        try:
            body = parse_unplaced(data, pools=pools)
        except TypeError as exc:
            raise _fail(web.HTTPBadRequest, str(exc)) from exc
        except ValueError as exc:
            raise _fail(web.HTTPUnprocessableEntity, str(exc)) from exc
        expires_at = record_unplaced(self.reconciler.requests, body,
                                     now=self.reconciler.clock.now())
        if body.gears:
            self.reconciler.wake("unplaced gears reported")
        accepted = UnplacedGearsAcceptedModel(pool=body.pool, gears=body.gears,
                                              source=body.source,
                                              expires_at=iso_time(expires_at))
        return web.json_response(accepted.model_dump(mode="json"))

    async def capacity_request(self, request: web.Request) -> web.Response:
        data = await self._json_body(request)
        pools = {p.name for p in self.reconciler.policies.current.pools}
        try:
            pool, gears, ttl, reason = parse_capacity_request(data, pools=pools)
        except TypeError as exc:
            raise _fail(web.HTTPBadRequest, str(exc)) from exc
        except ValueError as exc:
            raise _fail(web.HTTPUnprocessableEntity, str(exc)) from exc
        request_id = uuid.uuid4().hex
        now = self.reconciler.clock.now()
        self.reconciler.requests.add(CapacityRequest(
            request_id=request_id, pool=pool, gears=gears, expires_at=now + ttl,
            reason=reason))
        self.reconciler.wake("capacity request")
        created = CapacityRequestCreatedModel(id=request_id, pool=pool, gears=gears,
                                              expires_at=iso_time(now + ttl))
        return web.json_response(created.model_dump(mode="json"), status=201)

    async def page(self, request: web.Request) -> web.Response:
        html = importlib.resources.files("gearshift.api").joinpath("status.html").read_text()
        return web.Response(text=html, content_type="text/html")
