"""The HTTP API under hostile clients: half-open connections, slow bodies, deep JSON and
bursts of /v1/plan (issue 11, findings 6 and 7).

The server under test is the real ``ApiServer`` on a real socket (its connection guard
sits below aiohttp's test client), and the daemon itself under a 1024 open-files limit.
"""

from __future__ import annotations

import asyncio
import io
import json
import resource
import socket
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import ClientSession, ClientTimeout

from builders import policy_set, pool
from gearshift.api.guard import AcceptErrorLog, connection_limit
from gearshift.api.server import ApiServer
from gearshift.clock import ManualClock
from gearshift.logs import configure
from gearshift.sim.broker import free_port
from live import start_daemon
from test_reconciler import Rig

TOKEN = "s3cret-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Served:
    def __init__(self, api: ApiServer, rig: Rig, port: int) -> None:
        self.api, self.rig, self.port = api, rig, port
        self.url = f"http://127.0.0.1:{port}"

    def half_open(self, partial: bytes = b"GET /healthz HTTP/1.1\r\nHost: x\r\n") -> socket.socket:
        """A connection that sends part of a request and then nothing."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        sock.sendall(partial)
        return sock

    def closed_by_server(self, sock: socket.socket) -> bool:
        """True once the server has closed ``sock`` (the client waits up to 10 s)."""
        sock.settimeout(10)
        try:
            return sock.recv(65536) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def counter(self, name: str, **labels: str) -> float:
        value = self.api.metrics.registry.get_sample_value(name, labels)
        return value or 0.0


async def serve(**kwargs: Any) -> tuple[ApiServer, Rig, int]:
    clock = ManualClock()
    rig = Rig(policy_set(pool()), demand=110, clock=clock)
    await rig.seed()
    await rig.reconciler.reconcile_once()
    api = ApiServer(rig.reconciler, rig.metrics, token=TOKEN, **kwargs)
    port = free_port()
    await api.start("127.0.0.1", port)
    return api, rig, port


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    api, rig, port = await serve(max_body=65536, read_timeout=0.5, max_connections=8)
    try:
        yield Served(api, rig, port)
    finally:
        await api.stop()


async def healthz(url: str) -> int:
    async with ClientSession(timeout=ClientTimeout(total=10)) as session, \
            session.get(url + "/healthz") as response:
        return response.status


async def test_a_connection_that_never_finishes_its_headers_is_closed(served: Served) -> None:
    sock = served.half_open()
    with sock:
        assert await asyncio.to_thread(served.closed_by_server, sock)
    assert served.counter("gearshift_http_connections_closed_total", reason="no_request") == 1
    # a connection that asks at once is answered, and not counted
    assert await healthz(served.url) == 200
    assert served.counter("gearshift_http_connections_closed_total", reason="no_request") == 1


async def test_a_body_that_never_arrives_is_a_408(served: Served) -> None:
    head = (b"POST /v1/capacity-requests HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            b"\r\nContent-Length: 100\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n\r\n")
    sock = served.half_open(head + b'{"pool": "sm')
    with sock:
        sock.settimeout(10)
        answer = await asyncio.to_thread(sock.recv, 65536)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"the body did not arrive within 0.5s" in answer


@pytest.mark.slow  # ~5 s: holds connections open until the limit closes the oldest
async def test_past_the_connection_limit_the_oldest_connections_are_closed() -> None:
    served = Served(*await serve(read_timeout=5, max_connections=8))
    try:
        with ExitStack() as stack:
            socks = [stack.enter_context(served.half_open()) for _ in range(20)]
            await asyncio.sleep(0.1)  # let the server accept them all
            # the probe is the newest: it is answered while the limit closes the oldest
            assert await healthz(served.url) == 200
            closed = await asyncio.to_thread(lambda: [served.closed_by_server(s)
                                                      for s in socks])
        assert all(closed)  # the first 13 by the limit, the other 7 by the read timeout
        assert served.counter("gearshift_http_connections_closed_total",
                              reason="over_limit") == 20 + 1 - 8
        assert served.counter("gearshift_http_connections_closed_total",
                              reason="no_request") == 7
    finally:
        await served.api.stop()


async def test_deeply_nested_json_is_a_400_not_a_500(served: Served) -> None:
    body = b"[" * 30_000 + b"]" * 30_000  # 60 KB: json.loads alone raises RecursionError
    async with ClientSession(timeout=ClientTimeout(total=10)) as session:
        async with session.post(served.url + "/v1/capacity-requests", data=body,
                                headers={**AUTH, "Content-Type": "application/json"}) as r:
            assert r.status == 400
            assert await r.json() == {
                "error": "the body must be JSON: JSON nested deeper than 32 levels"}
        nested = {"pool": "small", "gears": 1, "reason": [[[[[[[[1]]]]]]]]}
        async with session.post(served.url + "/v1/capacity-requests", json=nested,
                                headers=AUTH) as r:
            assert r.status == 422  # shallow enough to parse: refused for what it says
        async with session.post(served.url + "/v1/capacity-requests", json={
                "pool": "small", "gears": 1}, headers=AUTH) as r:
            assert r.status == 201


async def test_a_burst_of_plan_requests_runs_one_plan(served: Served) -> None:
    reconciler = served.rig.reconciler
    real = reconciler.dry_run
    release = asyncio.Event()
    runs: list[int] = []

    async def slow_dry_run() -> Any:
        runs.append(1)
        await release.wait()
        return await real()

    reconciler.dry_run = slow_dry_run  # type: ignore[method-assign]
    async with ClientSession(timeout=ClientTimeout(total=30)) as session:

        async def plan() -> dict[str, Any]:
            async with session.get(served.url + "/v1/plan") as response:
                assert response.status == 200
                body: dict[str, Any] = await response.json()
                return body

        requests = [asyncio.ensure_future(plan()) for _ in range(50)]
        while served.counter("gearshift_plan_dry_runs_total") < 1:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # the other 49 are waiting on the same plan
        release.set()
        answers = await asyncio.gather(*requests)
        assert runs == [1]
        assert all(a == answers[0] for a in answers)
        assert answers[0]["pools"]["small"]["booting"] == 1
        assert served.counter("gearshift_plan_dry_runs_total") == 1
        await plan()  # within plan_cache, nothing changed: the same plan
        assert runs == [1]
        # a reconcile since: the next request plans again
        await reconciler.reconcile_once()
        await plan()
        assert runs == [1, 1]


async def test_without_a_cache_every_request_plans_but_bursts_still_share() -> None:
    api, rig, port = await serve(plan_cache=0)
    try:
        async with ClientSession(timeout=ClientTimeout(total=30)) as session:
            for _ in range(3):
                async with session.get(f"http://127.0.0.1:{port}/v1/plan") as response:
                    assert response.status == 200
        assert rig.metrics.registry.get_sample_value("gearshift_plan_dry_runs_total") == 3
    finally:
        await api.stop()


def test_the_connection_limit_fits_the_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
        assert connection_limit(256) == 256
        assert connection_limit(4096) == (1024 - 128) // 2
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, hard))
        assert connection_limit(256) == 36
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_accept_errors_are_logged_once_a_minute_with_a_count() -> None:
    stream = io.StringIO()
    configure(level="info", fmt="json", stream=stream)
    loop = asyncio.new_event_loop()
    others: list[dict[str, Any]] = []
    try:
        loop.set_exception_handler(lambda _, context: others.append(context))
        from gearshift.metrics import Metrics
        metrics = Metrics()
        errors = AcceptErrorLog(loop, metrics=metrics)
        errors.install()
        storm = {"message": AcceptErrorLog.MESSAGE,
                 "exception": OSError(24, "Too many open files")}
        for _ in range(1000):
            loop.call_exception_handler(storm)
        loop.call_exception_handler({"message": "something else"})
        errors.uninstall()
        assert loop.get_exception_handler() is not errors
    finally:
        loop.close()
        structlog.reset_defaults()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 1, lines
    assert lines[0]["error"] == "OSError: [Errno 24] Too many open files"
    assert errors.suppressed == 999
    assert metrics.registry.get_sample_value("gearshift_http_accept_errors_total") == 1000
    assert [c["message"] for c in others] == ["something else"]


def _limit_open_files() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))  # systemd's default soft limit


@pytest.fixture
def many_sockets() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"the test process may open only {hard} files")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.slow
def test_2000_half_open_connections_under_a_1024_fd_limit_leave_healthz_answering(
        tmp_path: Path, mosquitto: tuple[str, int], many_sockets: None) -> None:
    daemon = start_daemon(tmp_path / "d", mosquitto, preexec_fn=_limit_open_files)
    port = int(daemon.url.rsplit(":", 1)[1])
    socks: list[socket.socket] = []
    try:
        daemon.wait_ready()
        answered = []
        for i in range(2000):
            sock = socket.socket()
            sock.settimeout(5)
            with suppress(OSError):  # a connection refused or reset is the server's right
                sock.connect(("127.0.0.1", port))
                sock.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            socks.append(sock)
            if i % 250 == 249:  # probes during the flood, not only after it
                with urllib.request.urlopen(daemon.url + "/healthz", timeout=10) as response:
                    answered.append(response.status)
        with urllib.request.urlopen(daemon.url + "/healthz", timeout=10) as response:
            answered.append(response.status)
        assert answered == [200] * 9
        fds = len(list(Path(f"/proc/{daemon.process.pid}/fd").iterdir()))
        assert fds < 1024 - 64, f"the daemon holds {fds} descriptors"
        metrics = daemon.get("/metrics")[1].decode()
        closed = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                     if line.startswith("gearshift_http_connections_closed_total{"))
        assert closed >= 2000 - 256
        # a policy reload still opens its files
        (daemon.policies / "small.yaml").write_text(
            (daemon.policies / "small.yaml").read_text().replace("max: 12", "max: 13"))
        daemon.wait_until("max 13 in force",
                          lambda: daemon.json("/v1/status")["pools"]["small"]["max"] == 13)
    finally:
        for sock in socks:
            sock.close()
        assert daemon.stop() == 0
    log = daemon.log.read_text(errors="replace")
    assert log.count("out of system resource") + log.count("cannot accept") <= 1
    assert len(log) < 1_000_000
