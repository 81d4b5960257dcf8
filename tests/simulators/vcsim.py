"""vcsim, the vCenter simulator, built from Debian's govmomi sources and started per session.

Debian packages govmomi's ``simulator`` library but no ``vcsim`` command, so
``tests/simulators/vcsim/main.go`` is built with the system Go toolchain in GOPATH mode. The
binary is cached under the temp directory by a hash of main.go, so only the first session
on a machine pays the ~25 s build.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from simulators import MissingPeer

MAIN = Path(__file__).resolve().parent / "vcsim" / "main.go"
GOCODE = Path("/usr/share/gocode")
APT = "apt-get install -y golang-go golang-github-vmware-govmomi-dev"


def build() -> Path:
    """The vcsim binary, built once per machine and main.go version."""
    go = shutil.which("go")
    if go is None or not (GOCODE / "src/github.com/vmware/govmomi/simulator").is_dir():
        raise MissingPeer(f"vcsim needs Go and Debian's govmomi sources; run: {APT}")
    digest = hashlib.sha256(MAIN.read_bytes()).hexdigest()[:16]
    cache = Path(tempfile.gettempdir()) / f"gearshift-vcsim-{digest}"
    binary = cache / "vcsim"
    if binary.exists():
        return binary
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be building it right now
        if binary.exists():
            return binary
        env = {**os.environ, "GO111MODULE": "off", "GOFLAGS": "",
               "GOPATH": f"{cache / 'gopath'}:{GOCODE}", "GOCACHE": str(cache / "gocache")}
        partial = cache / "vcsim.partial"
        result = subprocess.run([go, "build", "-o", str(partial), str(MAIN)], env=env,
                                capture_output=True, text=True, check=False, timeout=600)
        if result.returncode != 0:
            raise MissingPeer(f"building vcsim failed ({APT}?):\n{result.stderr[-3000:]}")
        partial.replace(binary)
    return binary


@dataclass
class Vcsim:
    process: subprocess.Popen[str]
    url: str  # https://HOST:PORT/sdk, without credentials
    username: str
    password: str

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start(*, username: str, password: str, no_capacity: tuple[str, ...] = (),
          log: Path | None = None, timeout: float = 20.0) -> Vcsim:
    binary = build()
    argv = [str(binary), "-l", "127.0.0.1:0", "-username", username, "-password", password]
    for name in no_capacity:
        argv += ["-no-capacity", name]
    stderr = log.open("w") if log is not None else subprocess.DEVNULL
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, text=True)
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    line = process.stdout.readline()  # vcsim prints it as soon as it listens
    if not line.startswith("VCSIM_URL=") or time.monotonic() > deadline:
        process.kill()
        raise RuntimeError(f"vcsim did not start: {line!r}")
    raw = line.strip().split("=", 1)[1]
    host = raw.split("@", 1)[1] if "@" in raw else raw.split("://", 1)[1]
    return Vcsim(process=process, url=f"https://{host}", username=username, password=password)
