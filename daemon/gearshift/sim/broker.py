"""An MQTT broker on a free loopback port: mosquitto when installed, else amqtt in-process.

Used by ``gearshift demo`` and the test fixtures. Mosquitto runs as a child process with a
throw-away config (no persistence, anonymous, 127.0.0.1 only) and is stopped by its PID.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class BrokerInfo:
    host: str
    port: int
    kind: str  # mosquitto | amqtt


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(host: str, port: int, *, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.02)


def start_mosquitto(directory: Path, *, port: int | None = None,
                    extra_config: str = "") -> tuple[subprocess.Popen[bytes], int]:
    """Start mosquitto on ``port`` (free one by default); returns the process and port."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = port or free_port()
    config = directory / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                      f"log_dest stderr\nlog_type error\nlog_type warning\n{extra_config}")
    process = subprocess.Popen([binary, "-c", str(config)], stdout=subprocess.DEVNULL,
                               stderr=(directory / "mosquitto.log").open("wb"))
    try:
        wait_for_port("127.0.0.1", port)
    except TimeoutError:
        process.kill()
        raise
    return process, port


def mosquitto_available() -> bool:
    return shutil.which("mosquitto") is not None or Path("/usr/sbin/mosquitto").exists()


@asynccontextmanager
async def embedded_broker() -> AsyncIterator[BrokerInfo]:
    """A broker for the duration of the block."""
    if mosquitto_available():
        with tempfile.TemporaryDirectory(prefix="gearshift-broker-") as directory:
            process, port = await asyncio.to_thread(start_mosquitto, Path(directory))
            try:
                yield BrokerInfo("127.0.0.1", port, "mosquitto")
            finally:
                process.terminate()
                try:
                    await asyncio.to_thread(process.wait, 5)
                except subprocess.TimeoutExpired:
                    process.kill()
        return
    try:
        from amqtt.broker import Broker  # noqa: PLC0415 - optional fallback
    except ImportError as exc:
        raise RuntimeError("no MQTT broker: install mosquitto (apt-get install -y mosquitto) "
                           "or pip install 'gearshift[demo]'") from exc
    port = free_port()
    config: dict[str, Any] = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "sys_interval": 0,
        "auth": {"allow-anonymous": True, "plugins": ["auth_anonymous"]},
        "topic-check": {"enabled": False},
    }
    broker = Broker(config)
    await broker.start()
    try:
        yield BrokerInfo("127.0.0.1", port, "amqtt")
    finally:
        await broker.shutdown()
