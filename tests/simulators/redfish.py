"""The sushy-tools Redfish emulator (fake driver) and the fake Foreman, as child processes.

Each sushy run gets a fresh ``SUSHY_EMULATOR_STATE_DIR``: the fake driver keeps its
machines' power state there, and a stale one would leak state between runs. Its power
changes land 1-11 s after the request (the fake driver's own random delay).

sushy-tools makes its systems driver lazily on the first request, without a lock; when the
first requests arrive together, several drivers are made at once, and a late one writes
its initial "Off" over a power change another has just accepted (about 3 lost power-ons in
20 parallel ones). ``start_sushy`` therefore makes one request before handing it out.
"""

from __future__ import annotations

import base64
import shutil
import sys
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import bcrypt

from simulators import TESTS, MissingPeer, Peer, free_port, python


@dataclass
class Sushy:
    peer: Peer
    systems: list[tuple[str, str]]  # (name, /redfish/v1/Systems/UUID)

    @property
    def url(self) -> str:
        return self.peer.url

    def stop(self) -> None:
        self.peer.stop()


def start_sushy(*, directory: Path, machines: int, username: str | None = None,
                password: str | None = None, prefix: str = "node") -> Sushy:
    binary = shutil.which("sushy-emulator") or str(Path(sys.executable).parent / "sushy-emulator")
    if not Path(binary).exists():
        raise MissingPeer("sushy-emulator is missing; run: pip install sushy-tools")
    directory.mkdir(parents=True, exist_ok=True)
    state = directory / "state"
    if state.exists():
        shutil.rmtree(state)
    state.mkdir()
    port = free_port()
    systems = [(f"{prefix}-{i + 1}", str(uuid.uuid4())) for i in range(machines)]
    fake = [{"uuid": uid, "name": name, "power_state": "Off",
             "nics": [{"mac": f"52:54:00:00:{i // 256:02x}:{i % 256:02x}",
                       "ip": f"192.0.2.{i + 10}"}]}
            for i, (name, uid) in enumerate(systems)]
    lines = ["SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'",
             f"SUSHY_EMULATOR_LISTEN_PORT = {port}",
             "SUSHY_EMULATOR_FAKE_DRIVER = True",
             f"SUSHY_EMULATOR_FAKE_SYSTEMS = {fake!r}",
             f"SUSHY_EMULATOR_STATE_DIR = {str(state)!r}"]
    if username is not None and password is not None:
        digest = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
        htpasswd = directory / "htpasswd"
        htpasswd.write_text(f"{username}:{digest}\n")
        lines.append(f"SUSHY_EMULATOR_AUTH_FILE = {str(htpasswd)!r}")
    config = directory / "sushy.conf"
    config.write_text("\n".join(lines) + "\n")
    peer = Peer.start([binary, "--config", str(config)], port=port,
                      log=directory / "sushy.log", name="sushy-emulator")
    request = urllib.request.Request(f"{peer.url}/redfish/v1/Systems")
    if username is not None and password is not None:
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=30) as response:  # builds the driver, once
        response.read()
    return Sushy(peer=peer, systems=[(n, f"/redfish/v1/Systems/{u}") for n, u in systems])


def start_foreman(*, directory: Path, user: str, password: str, hosts: list[str]) -> Peer:
    port = free_port()
    argv = [python(), "-m", "simulators.foreman", "--port", str(port), "--user", user,
            "--password-env", "FAKE_FOREMAN_PASSWORD"]
    for host in hosts:
        argv += ["--host", host]
    return Peer.start(argv, port=port, log=directory / "foreman.log", name="fake Foreman",
                      env={"FAKE_FOREMAN_PASSWORD": password, "PYTHONPATH": str(TESTS)})
