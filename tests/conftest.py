"""Shared fixtures: builders for snapshots, and real peers started on free loopback ports.

A test that needs a real server (mosquitto, promtool, ...) fails when it is missing,
with the apt-get line that installs it; it never silently skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path

import pytest

from gearshift.sim.broker import mosquitto_available, start_mosquitto
from peers import ACTIVEMQ_APT, Broker, activemq_broker, activemq_missing, mosquitto_broker
from pgpeer import PgServer, start_postgres

ROOT = Path(__file__).resolve().parent.parent
# Subprocesses (`python -m gearshift ...`) import this checkout's code, whatever is installed.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT / "daemon"), *filter(None, [os.environ.get("PYTHONPATH")])])

APT = {
    "mosquitto": "apt-get install -y mosquitto",
    "promtool": "apt-get install -y --no-install-recommends prometheus",
    "prometheus": "apt-get install -y --no-install-recommends prometheus",
    "systemd-analyze": "apt-get install -y systemd",
    "mosquitto_passwd": "apt-get install -y mosquitto",
    "java": "apt-get install -y activemq libmqtt-client-java",
    "openssl": "apt-get install -y openssl",
}


def need(binary: str) -> str:
    """The path of ``binary``, or fail the test saying how to install it."""
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists()
                                    else None)
    if path is None:
        pytest.fail(f"{binary} is not installed; run: {APT.get(binary, binary)}")
    return path



@pytest.fixture
def progress(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Say one line on the terminal now, captured output or not (``-s`` is not needed).

    Long tests (the crash and fault runs take minutes) call it once per round or phase,
    so a run shows where it is instead of a single dot that looks like a hang.
    """
    plugins = request.config.pluginmanager
    reporter = plugins.get_plugin("terminalreporter")
    capture = plugins.get_plugin("capturemanager")  # captures at the fd level: step aside
    name = request.node.name

    def say(line: str) -> None:
        with capture.global_and_fixture_disabled() if capture is not None else nullcontext():
            if reporter is not None:
                reporter.write_line(f"    {name}: {line}")
            else:
                print(f"    {name}: {line}", file=sys.__stderr__, flush=True)

    return say


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A mosquitto broker for the whole session: (host, port)."""
    if not mosquitto_available():
        need("mosquitto")
    directory = tmp_path_factory.mktemp("mosquitto")
    process, port = start_mosquitto(directory)
    yield "127.0.0.1", port
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="session")
def mosquitto_peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A second session mosquitto that broker-loss tests may stop and start again."""
    need("mosquitto")
    broker = mosquitto_broker(tmp_path_factory.mktemp("mosquitto-peer"))
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def activemq_peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """Debian's ActiveMQ with its MQTT connector, started once per session (a JVM)."""
    missing = activemq_missing()
    if missing is not None:
        pytest.fail(f"ActiveMQ with MQTT needs {missing}; run: {ACTIVEMQ_APT}")
    need("java")
    broker = activemq_broker(tmp_path_factory.mktemp("activemq"))
    yield broker
    broker.stop()


@pytest.fixture(params=["mosquitto", "activemq"])
def broker(request: pytest.FixtureRequest) -> Broker:
    """Each real broker in turn: the same integration test runs against both."""
    peer: Broker = request.getfixturevalue(f"{request.param}_peer")
    if peer.process is None or peer.process.poll() is not None:
        peer.start()  # a broker-loss test left it stopped
    return peer

# -- PostgreSQL (journal HA tests) ------------------------------------------------------
APT["postgres"] = "apt-get install -y postgresql"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgServer]:
    """A PostgreSQL server for the session, on a free port, in a throw-away directory."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()
