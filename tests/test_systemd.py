"""The systemd unit (systemd-analyze), sd_notify from a live daemon, and the loop's heartbeat.

The notify test runs the daemon wiring (tests/sim_daemon.py -> ``daemon.serve``) with
``NOTIFY_SOCKET`` pointing at a datagram socket this test reads, as systemd would.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from builders import policy_set, pool
from conftest import ROOT, need
from gearshift.clock import ManualClock
from gearshift.systemd import Notifier
from live import start_daemon
from test_reconciler import Rig

UNIT = ROOT / "deploy" / "systemd" / "gearshift.service"


def unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = need("systemd-analyze")
    binary = Path(sys.executable).parent / "gearshift"
    assert binary.exists(), "the gearshift console script is not installed in this venv"
    text = UNIT.read_text()
    assert "ExecStart=/opt/gearshift/bin/gearshift run --config /etc/gearshift/config.yaml" in text
    copy = tmp_path / "gearshift.service"
    copy.write_text(text.replace("/opt/gearshift/bin/gearshift", str(binary)))
    result = subprocess.run([analyze, "verify", "--man=no", str(copy)], capture_output=True,
                            text=True, check=False)
    # Unknown keys and bad values only warn (exit 0): any output at all is a failure here,
    # except warnings about other units that installed packages ship (mcollective's, for
    # the MCollective tests) which verify loads along as dependencies of multi-user.target.
    assert result.returncode == 0, result.stderr
    ours = [line for line in (result.stdout + result.stderr).splitlines()
            if not re.match(r"/(usr/)?lib/systemd/system/[^/]+\.service:\d+: ", line)]
    assert ours == []


def test_unit_is_notify_watchdogged_and_hardened() -> None:
    settings = unit_settings(UNIT.read_text())
    one = {key: values[-1] for key, values in settings.items()}
    assert one["Type"] == "notify"
    assert one["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert re.fullmatch(r"\d+(min|s)", one["WatchdogSec"])
    assert one["DynamicUser"] == "yes"
    assert one["ProtectSystem"] == "strict"
    assert one["StateDirectory"] == "gearshift"
    assert one["ConfigurationDirectory"] == "gearshift"
    assert one["NoNewPrivileges"] == "yes" and one["PrivateTmp"] == "yes"
    assert one["RestrictAddressFamilies"].split() == ["AF_UNIX", "AF_INET", "AF_INET6"]
    assert one["CapabilityBoundingSet"] == ""
    assert "User" not in one  # DynamicUser, not root
    # The journal's default path lives in the StateDirectory.
    from gearshift.settings import HttpSettings, JournalSettings

    assert str(JournalSettings().path).startswith("/var/lib/gearshift/")
    # Bounded (issue 11, finding 6): room for every API connection the daemon keeps,
    # well above systemd's default soft limit of 1024, and a memory ceiling.
    from gearshift.api.guard import RESERVED_FDS

    assert int(one["LimitNOFILE"]) >= 2 * HttpSettings().max_connections + RESERVED_FDS
    assert int(one["LimitNOFILE"]) > 1024
    high, top = (_bytes(one[key]) for key in ("MemoryHigh", "MemoryMax"))
    assert 256 * 2**20 <= high < top <= 4 * 2**30


def _bytes(value: str) -> int:
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    return int(value[:-1]) * units[value[-1]] if value[-1] in units else int(value)


class NotifyListener:
    """A unix datagram socket standing in for systemd's notification socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[dict[str, str]] = []
        self.received: list[float] = []  # monotonic receipt time of each message

    def pump(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except (TimeoutError, BlockingIOError):
                return
            self.messages.append(dict(line.split("=", 1) for line in data.decode().splitlines()))
            self.received.append(time.monotonic())

    def wait_for(self, predicate: object, what: str, *, timeout: float = 30.0,
                 process: subprocess.Popen[bytes] | None = None,
                 log: Path | None = None) -> list[dict[str, str]]:
        deadline = time.monotonic() + timeout
        while True:
            self.pump()
            found = [m for m in self.messages if predicate(m)]  # type: ignore[operator]
            if found:
                return found
            if process is not None and process.poll() is not None:
                pytest.fail(f"daemon exited waiting for {what}: "
                            f"{log.read_text()[-3000:] if log else ''}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} after {timeout}s; got {self.messages}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[NotifyListener]:
    # AF_UNIX paths are short (108 bytes): pytest's tmp_path can be longer.
    path = Path(f"/tmp/gs-notify-{os.getpid()}-{time.monotonic_ns()}.sock")
    listener = NotifyListener(path)
    yield listener
    listener.close()
    path.unlink(missing_ok=True)


@pytest.mark.slow  # ~7.5 s: a real daemon through start, reload and stop
def test_daemon_notifies_ready_watchdog_status_reloading_and_stopping(
        tmp_path: Path, mosquitto: tuple[str, int], listener: NotifyListener) -> None:
    # The reconcile interval (1h) is far longer than the watchdog (3s): WATCHDOG=1 must
    # still come within every 3s, from the loop's heartbeat while it idles.
    daemon = start_daemon(tmp_path / "d", mosquitto, interval="1h", demand=60,
                          env={"NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": "3000000"})
    try:
        ready = listener.wait_for(lambda m: m.get("READY") == "1", "READY=1",
                                  process=daemon.process, log=daemon.log)[0]
        # STATUS= comes with READY: a one-line summary of the fleet after the first reconcile.
        assert ready["STATUS"] == "small 2+0 nodes, active density now 0.50", ready
        index = listener.messages.index(ready)
        listener.wait_for(
            lambda m: len([x for x in listener.messages[index:] if x.get("WATCHDOG") == "1"]) >= 4,
            "four WATCHDOG=1 after READY", timeout=20)
        # systemd kills a service that stays silent for WATCHDOG_USEC: no gap may reach it.
        pings = [listener.received[index]] + [
            t for m, t in zip(listener.messages, listener.received, strict=True)
            if m.get("WATCHDOG") == "1" and t >= listener.received[index]]
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert max(gaps) < 3.0, gaps
        assert daemon.json("/v1/status")["last_reconcile"] is not None
        # Only one reconcile ran (interval 1h): the watchdogs came from the idle heartbeat.
        _, metrics = daemon.get("/metrics")
        assert b'gearshift_reconciles_total{outcome="ok"} 1.0' in metrics

        daemon.process.send_signal(signal.SIGHUP)
        reloading = listener.wait_for(lambda m: m.get("RELOADING") == "1", "RELOADING=1")[0]
        assert int(reloading["MONOTONIC_USEC"]) > 0
        after = listener.messages.index(reloading)
        listener.wait_for(lambda m: m in listener.messages[after:] and m.get("READY") == "1"
                          and m.get("STATUS") == "policies reloaded", "READY=1 after reload")
    finally:
        code = daemon.stop()
    listener.pump()
    assert code == 0, daemon.log.read_text()[-3000:]
    assert listener.messages[-1] == {"STOPPING": "1"}


def test_notifier_speaks_the_sd_notify_protocol(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               listener: NotifyListener) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    notifier = Notifier(str(listener.path))
    assert notifier.watchdog_interval == 15.0
    assert notifier.ready("a; b")
    assert notifier.watchdog()
    listener.pump()
    assert listener.messages == [{"READY": "1", "STATUS": "a; b"}, {"WATCHDOG": "1"}]
    # The watchdog is meant for another PID (systemd sets WATCHDOG_PID): stay quiet.
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert Notifier(str(listener.path)).watchdog_interval is None
    # Outside systemd every call is a no-op.
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not Notifier().watchdog()


async def test_the_loop_beats_while_idle_and_stops_beating_when_hung() -> None:
    clock = ManualClock()
    rig = Rig(policy_set(pool()), demand=60, clock=clock)
    await rig.seed()
    reconciler = rig.reconciler
    reconciler.interval = 3600
    reconciler.heartbeat_every = 5
    beats: list[float] = []
    reconciler.on_heartbeat.append(lambda: beats.append(clock.now()))
    stop = asyncio.Event()
    task = asyncio.create_task(reconciler.run(stop))
    await clock.advance(0)
    assert reconciler.reconciles == 1 and len(beats) == 1  # one beat after the reconcile
    for _ in range(6):
        await clock.advance(5)
    assert reconciler.reconciles == 1  # no reconcile due for an hour ...
    assert len(beats) == 7  # ... but the idle loop proved it is alive every 5s

    # Now a reconcile hangs (a call that never returns): the beats must stop.
    hang = asyncio.Event()

    async def hung() -> None:
        await hang.wait()

    reconciler.reconcile_once = hung  # type: ignore[assignment,method-assign]
    reconciler.wake("test")
    await clock.advance(0)
    stalled = len(beats)
    for _ in range(10):
        await clock.advance(5)
    assert len(beats) == stalled
    hang.set()
    await clock.advance(0)
    assert len(beats) == stalled + 1  # it came back: the beats resume
    stop.set()
    await asyncio.wait_for(task, 1)
