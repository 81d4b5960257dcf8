"""A simulated world server and real ``gearshift run`` processes, for crash, fault and HA tests.

The world (``python -m gearshift.sim.server``) runs in a process of its own and keeps the
score; each daemon is the real ``python -m gearshift run --config`` against it (``kind:
simulated`` providers and platform with the server's url) and a real mosquitto, with
short intervals and boot times so many kill/restart cycles fit in a few minutes.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gearshift.sim.broker import free_port, wait_for_port

POOL = """\
apiVersion: gearshift/v1
kind: Pool
name: small
priority: 100
selector: {node_profile: small}
size: {min: 2, max: 10}
density: {scale_up_above: 0.80, scale_down_below: 0.45, target: 0.65}
headroom_gears: 5
step: {max_up: 3, max_down: 2}
cooldown: {up: 1s, down: 1s}
stabilization: {down: 1s}
scale_in: {strategy: fewest_gears, drain_timeout: 20s, max_concurrent_drains: 2}
placement:
  - {provider: rack-a, blueprint: small-a, max_nodes: 5}
  - {provider: cloud-b, blueprint: small-b, max_nodes: 10}
"""

PROVIDERS = """\
apiVersion: gearshift/v1
kind: Providers
providers:
  - name: rack-a
    kind: simulated
    quota: {{max_nodes: 5}}
    cost_per_hour: 0.02
    boot_time: 1s
    settings: {{url: "{url}", timeout: 10}}
    simulation: {{boot_jitter: 0.5s}}
  - name: cloud-b
    kind: simulated
    quota: {{max_nodes: 10}}
    cost_per_hour: 0.19
    boot_time: 1s
    settings: {{url: "{url}", timeout: 10}}
    simulation: {{boot_jitter: 0.5s}}
blueprints:
  - {{name: small-a, provider: rack-a, node_profile: small, max_active_gears: 20}}
  - {{name: small-b, provider: cloud-b, node_profile: small, max_active_gears: 20}}
"""


def http(method: str, url: str, body: Any = None, *, timeout: float = 10.0) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        text = response.read()
    return json.loads(text) if text else None


class World:
    """The simulated world server process."""

    def __init__(self, directory: Path, *, mqtt_port: int, seed: int, move_time: float = 0.5,
                 pool: str = POOL, providers: str = PROVIDERS) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.policies = directory / "policies"
        self.policies.mkdir(parents=True, exist_ok=True)
        (self.policies / "small.yaml").write_text(pool)
        self.providers_file = directory / "providers.yaml"
        self.providers_file.write_text(providers.format(url=self.url))
        self.log = (directory / "world.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gearshift.sim.server", "--providers",
             str(self.providers_file), "--port", str(self.port), "--mqtt-port", str(mqtt_port),
             "--seed", str(seed), "--move-time", str(move_time), "--period", "0.2",
             "--heartbeat", "1"], stdout=self.log, stderr=subprocess.STDOUT)
        wait_for_port("127.0.0.1", self.port, timeout=20)

    def demand(self, gears: int, pool: str = "small") -> None:
        http("POST", f"{self.url}/v1/admin/demand", {pool: gears})

    def faults(self, **faults: float) -> None:
        http("POST", f"{self.url}/v1/admin/faults", faults)

    def foreign(self, identity: str, pool: str = "small") -> None:
        http("POST", f"{self.url}/v1/admin/foreign", {"identity": identity, "pool": pool,
                                                      "profile": pool, "max_active_gears": 20})

    def report(self) -> dict[str, Any]:
        result: dict[str, Any] = http("GET", f"{self.url}/v1/report")
        return result

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.log.close()


@dataclass
class DaemonConfig:
    mqtt_port: int
    journal: dict[str, Any]
    interval: str = "0.5s"
    stale_after: str = "4s"
    operations: dict[str, Any] | None = None
    name: str = "gearshift"


DEFAULT_OPERATIONS = {"call_timeout": "2s", "retry_deadline": "3s", "retry_initial": "0.1s",
                      "retry_max": "0.5s", "breaker_threshold": 5, "breaker_reset": "3s",
                      "capacity_backoff": "3s", "provisioning_timeout_factor": 3,
                      "min_provisioning_timeout": "6s", "orphan_grace": "8s",
                      "orphan_sweep": "3s", "move_batch": 5}


class Daemon:
    """One ``gearshift run`` process (restartable) against the world."""

    def __init__(self, directory: Path, world: World, config: DaemonConfig) -> None:
        self.directory = directory
        self.world = world
        self.config = config
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.config_file = directory / f"{config.name}.yaml"
        operations = {**DEFAULT_OPERATIONS, **(config.operations or {})}
        document = {
            "policies_dir": str(world.policies),
            "providers_file": str(world.providers_file),
            "mqtt": {"host": "127.0.0.1", "port": config.mqtt_port},
            "http": {"host": "127.0.0.1", "port": self.port},
            "reconcile": {"interval": config.interval, "stale_after": config.stale_after,
                          "debounce": "0.1s"},
            "journal": config.journal,
            "platform": {"kind": "simulated", "url": world.url},
            "operations": operations,
            "log": {"level": "info", "format": "json"},
        }
        self.config_file.write_text(json.dumps(document, indent=2))  # JSON is YAML

    def start(self) -> None:
        self.starts += 1
        log = (self.directory / f"{self.config.name}.log").open("ab")
        log.write(f"--- start {self.starts} at {time.time():.3f}\n".encode())
        log.flush()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gearshift", "run", "--config", str(self.config_file)],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "NOTIFY_SOCKET": ""})
        log.close()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self, timeout: float = 20) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process is not None else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            raise

    def status(self, *, timeout: float = 2.0) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = http("GET", f"{self.url}/v1/status", timeout=timeout)
        except (urllib.error.URLError, OSError, ValueError):
            return None
        return result

    def metrics(self) -> str | None:
        try:
            with urllib.request.urlopen(f"{self.url}/metrics", timeout=2) as response:
                text: str = response.read().decode()
                return text
        except (urllib.error.URLError, OSError):
            return None

    def wait_status(self, predicate: Any, *, timeout: float, poll: float = 0.1
                    ) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            if status is not None and predicate(status):
                return status
            if not self.alive:
                return None
            time.sleep(poll)
        return None

    def log_text(self) -> str:
        path = self.directory / f"{self.config.name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def metric(text: str | None, name: str) -> float | None:
    """The value of an unlabelled metric (or the sum over its labels) in an exposition."""
    if text is None:
        return None
    total = None
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {"):
            total = (total or 0.0) + float(line.rsplit(" ", 1)[1])
    return total


@dataclass
class JournalView:
    open_ops: list[dict[str, Any]]
    all_ops: list[dict[str, Any]]
    machines: dict[str, dict[str, Any]]
    recoveries: list[dict[str, Any]]


def read_sqlite_journal(path: Path) -> JournalView:
    """The journal as a separate reader sees it (read-only; safe while the daemon runs)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        ops = [dict(r) for r in conn.execute("SELECT * FROM gearshift_operations")]
        machines = {r["identity"]: dict(r) for r in conn.execute("SELECT * FROM gearshift_machines")}
        recoveries = [dict(r) for r in conn.execute("SELECT * FROM gearshift_recoveries")]
    finally:
        conn.close()
    return JournalView(open_ops=[o for o in ops if not o["done"]], all_ops=ops,
                       machines=machines, recoveries=recoveries)


def owned_world_nodes(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["identity"]: n for n in report["nodes"] if n["tagged"]}


def tear_down(*daemons: Daemon, world: World, broker: subprocess.Popen[bytes]) -> None:
    """Stop what a crash, fault or HA test started, whatever state it was left in.

    Every daemon still alive is resumed (a test may have frozen it with SIGSTOP) and
    killed, then the world and the broker are stopped: one teardown, so a fix reaches
    every test that uses the world.
    """
    for daemon in daemons:
        if daemon.alive:
            daemon.resume()
            daemon.kill()
    world.stop()
    broker.terminate()
    broker.wait(5)
