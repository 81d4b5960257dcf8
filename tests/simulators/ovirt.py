"""Start the fake oVirt engine (``simulators.ovirt_engine``) as a child process."""

from __future__ import annotations

from pathlib import Path

from simulators import TESTS, Peer, free_port, python


def start(*, password: str, directory: Path, clusters: tuple[str, ...] = ("Default",),
          templates: tuple[str, ...] = ("node-template",), user: str = "gearshift@internal",
          lock: float = 0.1, boot: float = 0.1) -> Peer:
    port = free_port()
    argv = [python(), "-m", "simulators.ovirt_engine", "--port", str(port), "--user", user,
            "--password-env", "FAKE_OVIRT_PASSWORD", "--lock", str(lock), "--boot", str(boot)]
    for cluster in clusters:
        argv += ["--cluster", cluster]
    for template in templates:
        argv += ["--template", template]
    return Peer.start(argv, port=port, log=directory / "ovirt-engine.log", name="fake oVirt engine",
                      env={"FAKE_OVIRT_PASSWORD": password, "PYTHONPATH": f"{TESTS}"})
