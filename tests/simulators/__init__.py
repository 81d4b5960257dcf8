"""Real (or faithful fake) peers for the provider tests and ``bench/providers.py``.

Each one starts on a free loopback port, says where it listens, and is stopped by its own
PID: vcsim (built from Debian's govmomi sources), a moto server, the sushy-tools Redfish
emulator, and the fake oVirt engine and Foreman (aiohttp, in a child process). A peer that
cannot run raises ``MissingPeer`` with the command that installs it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from gearshift.sim.broker import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent.parent
TESTS = ROOT / "tests"

__all__ = ["ROOT", "BlackHole", "MissingPeer", "Peer", "free_port", "wait_for_port"]


class MissingPeer(RuntimeError):
    """A simulator cannot run here; the message says how to install what it needs."""


class Peer:
    """A child process serving on ``port``, stopped by its PID."""

    def __init__(self, process: subprocess.Popen[bytes], *, port: int, log: Path | None = None,
                 name: str = "peer") -> None:
        self.process = process
        self.port = port
        self.log = log
        self.name = name

    @classmethod
    def start(cls, argv: list[str], *, port: int, log: Path, name: str,
              env: dict[str, str] | None = None, timeout: float = 30.0) -> Peer:
        process = subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                   env={**os.environ, **(env or {})})
        peer = cls(process, port=port, log=log, name=name)
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}: {peer.tail()}")
            try:
                wait_for_port("127.0.0.1", port, timeout=0.2)
                return peer
            except TimeoutError:
                if time.monotonic() > deadline:
                    peer.stop()
                    raise RuntimeError(f"{name} did not listen on {port} within {timeout}s: "
                                       f"{peer.tail()}") from None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tail(self) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return self.log.read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


class BlackHole:
    """A TCP port that accepts connections and never answers: every call to it times out."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port: int = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.held.append(conn)  # read nothing, answer nothing

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1)
        for conn in self.held:
            conn.close()
        self.sock.close()


def python() -> str:
    return sys.executable
