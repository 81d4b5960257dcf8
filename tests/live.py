"""A live daemon for tests: tests/sim_daemon.py as a process, on free ports, with its files.

Each daemon gets its own directory (config, policies, providers, API token, log) and its
own MQTT topic prefix on the shared test broker, so daemons never see each other's
retained facts. It is stopped by its own PID.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT
from gearshift.sim.broker import free_port

DEMO = ROOT / "daemon" / "gearshift" / "sim" / "demo"
TOKEN = "live-test-token-0123456789"


@dataclass
class LiveDaemon:
    process: subprocess.Popen[bytes]
    url: str
    directory: Path
    token_file: Path
    policies: Path
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    def get(self, path: str, *, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def json(self, path: str) -> Any:
        status, body = self.get(path)
        assert status == 200, (path, status, body[:500])
        return json.loads(body)

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
        return lines

    def wait_until(self, what: str, check: Any, *, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if self.process.poll() is not None:
                pytest.fail(f"daemon exited ({self.process.returncode}) waiting for {what}:\n"
                            + self.log.read_text(errors="replace")[-3000:])
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}:\n"
                            + self.log.read_text(errors="replace")[-3000:])
            time.sleep(0.1)

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            try:
                return self.get("/readyz")[0] == 200
            except OSError:
                return False

        self.wait_until("/readyz", ready, timeout=timeout)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


def start_daemon(directory: Path, broker: tuple[str, int], *, interval: str = "2s",
                 demand: int = 60, env: dict[str, str] | None = None,
                 extra_config: str = "",
                 preexec_fn: Callable[[], None] | None = None) -> LiveDaemon:
    """Start the daemon wiring over the demo's simulated pool and providers; not yet ready."""
    directory.mkdir(parents=True, exist_ok=True)
    policies = directory / "policies"
    policies.mkdir(exist_ok=True)
    shutil.copy(DEMO / "small.yaml", policies / "small.yaml")
    shutil.copy(DEMO / "providers.yaml", directory / "providers.yaml")
    token_file = directory / "api.token"
    token_file.write_text(TOKEN + "\n")
    port = free_port()
    config = directory / "config.yaml"
    config.write_text(
        f"policies_dir: {policies}\n"
        f"providers_file: {directory / 'providers.yaml'}\n"
        f"mqtt: {{host: {broker[0]}, port: {broker[1]}, prefix: gs-test/{uuid.uuid4().hex[:12]}}}\n"
        f"http: {{port: {port}, token_file: {token_file}}}\n"
        f"reconcile: {{interval: {interval}, stale_after: 30s}}\n"
        "journal: {kind: memory}\n"
        "policy_poll: 0.2s\n"
        "log: {format: json}\n" + extra_config)
    log = directory / "daemon.log"
    full_env = {**os.environ, **(env or {})}
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        if env is None or name not in env:
            full_env.pop(name, None)
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "sim_daemon.py"), "--config", str(config),
         "--demand", f"small={demand}"],
        stdout=subprocess.DEVNULL, stderr=log.open("wb"), env=full_env, cwd=directory,
        preexec_fn=preexec_fn)  # noqa: PLW1509 - only setrlimit, before exec
    return LiveDaemon(process=process, url=f"http://127.0.0.1:{port}", directory=directory,
                      token_file=token_file, policies=policies, log=log, env=env or {})
