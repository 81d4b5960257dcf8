"""Keep the HTTP API answering when clients connect and never finish: bounded connections.

aiohttp closes an idle keep-alive connection after ``keepalive_timeout``, but has no
connection limit, and (before 3.14) no deadline for a connection that never completes its
first request. 1 100 connections that never finished their headers exhausted the daemon's
file descriptors (systemd's soft limit is 1024): ``/healthz`` timed out, policy reloads
failed with OSError, and asyncio logged a traceback for every refused ``accept()``.

``ConnectionGuard`` wraps the server's protocol factory:

- at most ``limit`` connections are open; a new one past it closes the oldest (an attacker
  holding connections open loses them to anyone who connects after, and a probe that sends
  its request at once is answered before it is the oldest);
- a connection that has not completed a request (headers) within ``first_request`` seconds
  is closed. Later requests on a kept-alive connection are bounded by aiohttp's own
  ``keepalive_timeout``, request bodies by the server's read timeout.

``AcceptErrorLog`` replaces asyncio's per-failure traceback for ``accept()`` running out of
descriptors by one line a minute with a count.
"""

from __future__ import annotations

import asyncio
import resource
import time
from typing import Any

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from gearshift.metrics import Metrics

log = structlog.get_logger(component="gearshift.api")

RESERVED_FDS = 128
"""Descriptors kept for everything but HTTP (broker, journal, providers, policy files)."""


def connection_limit(configured: int) -> int:
    """``configured``, lowered to half of what the process may open beyond the reserve."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(8, min(configured, (soft - RESERVED_FDS) // 2))


class ConnectionGuard:
    """A protocol factory for ``loop.create_server`` around aiohttp's ``web.Server``."""

    def __init__(self, server: web.Server, *, limit: int, first_request: float,
                 metrics: Metrics) -> None:
        self.server = server
        self.limit = limit
        self.first_request = first_request
        self.metrics = metrics
        # connections still waiting for their first request, with their deadline's timer
        self._waiting: dict[RequestHandler, asyncio.TimerHandle] = {}

    def __call__(self) -> RequestHandler:
        open_now = [h for h in self.server.connections if h.transport is not None]
        for oldest in open_now[:max(0, len(open_now) - self.limit + 1)]:
            self._forget(oldest)
            oldest.force_close()
            self.metrics.http_connections_closed.labels("over_limit").inc()
        handler = self.server()
        loop = asyncio.get_running_loop()
        self._waiting[handler] = loop.call_later(self.first_request, self._expire, handler)
        return handler

    def served(self, request: web.BaseRequest) -> None:
        """A request's headers arrived on this connection: its first deadline is met."""
        self._forget(request.protocol)

    def _forget(self, handler: RequestHandler) -> None:
        timer = self._waiting.pop(handler, None)
        if timer is not None:
            timer.cancel()

    def _expire(self, handler: RequestHandler) -> None:
        if self._waiting.pop(handler, None) is None or handler.transport is None:
            return
        handler.force_close()
        self.metrics.http_connections_closed.labels("no_request").inc()


class GuardedSite(web.BaseSite):
    """``web.TCPSite`` whose connections go through a ``ConnectionGuard``."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, limit: int,
                 first_request: float, metrics: Metrics, backlog: int = 128) -> None:
        super().__init__(runner, backlog=backlog)
        server = runner.server
        assert server is not None  # BaseSite refuses a runner that is not set up
        self.guard = ConnectionGuard(server, limit=limit, first_request=first_request,
                                     metrics=metrics)
        self._host = host
        self._port = port

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        self._server = await asyncio.get_running_loop().create_server(
            self.guard, self._host, self._port, backlog=self._backlog, reuse_address=True)


class AcceptErrorLog:
    """A loop exception handler: ``accept()`` failures logged once per ``every`` seconds.

    asyncio reports every failed ``accept()`` (EMFILE, ENFILE, ENOBUFS, ENOMEM) with a
    traceback, many times a second while the condition lasts; anything else goes to the
    handler that was there before (or asyncio's default).
    """

    MESSAGE = "socket.accept() out of system resource"

    def __init__(self, loop: asyncio.AbstractEventLoop, *, metrics: Metrics,
                 every: float = 60.0) -> None:
        self.loop = loop
        self.metrics = metrics
        self.every = every
        self.previous = loop.get_exception_handler()
        self.suppressed = 0
        self._last: float | None = None

    def install(self) -> None:
        self.loop.set_exception_handler(self)

    def uninstall(self) -> None:
        if self.loop.get_exception_handler() is self:
            self.loop.set_exception_handler(self.previous)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != self.MESSAGE:
            if self.previous is not None:
                self.previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        self.metrics.http_accept_errors.inc()
        now = time.monotonic()
        if self._last is not None and now - self._last < self.every:
            self.suppressed += 1
            return
        error = context.get("exception")
        log.error("cannot accept HTTP connections: out of file descriptors or memory "
                  "(raise LimitNOFILE or lower http.max_connections)",
                  error=f"{type(error).__name__}: {error}" if error else None,
                  suppressed_since_last=self.suppressed)
        self._last = now
        self.suppressed = 0
