"""A newcomer's first minutes: `sh .ci/bootstrap demo` says what it installs before pip
runs, and the demo hands out a token of its own with the exact pause/resume commands to
try, which work as printed."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, need
from gearshift.sim.broker import free_port


def _stub(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.mark.parametrize("first_run", [True, False])
def test_bootstrap_says_what_it_installs_before_pip_runs(tmp_path: Path, first_run: bool) -> None:
    """pip is stubbed: only the order and wording of what a person sees is tested here."""
    shutil.copytree(ROOT / ".ci", tmp_path / ".ci")
    bin_ = tmp_path / "bin"
    _stub(bin_ / "dpkg-query", "printf 'install ok installed'")  # never apt-get here
    venv = tmp_path / ".venv" / "bin"
    pip_stub = 'echo "PIP $*" >&2'
    if first_run:  # the venv the bootstrap creates gets the stubbed pip once it exists
        _stub(bin_ / "python3", f'if [ "$1 $2" = "-m venv" ]; then mkdir -p {venv}; '
              f'printf \'#!/bin/sh\\n{pip_stub}\\n\' > {venv}/python; chmod +x {venv}/python; '
              f'printf \'#!/bin/sh\\necho DEMO "$@"\\n\' > {venv}/gearshift; '
              f'chmod +x {venv}/gearshift; else exec {sys.executable} "$@"; fi')
    else:
        _stub(venv / "python", pip_stub)
        _stub(venv / "gearshift", 'echo DEMO "$@"')
    env = {**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}", "PYTHON": "python3"}
    result = subprocess.run(["sh", ".ci/bootstrap", "demo", "--for", "1"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == ("creating .venv and installing gearshift[demo,sim] with the packages "
                        "constraints.txt pins (a first run downloads them: about a minute)"
                        if first_run else
                        "updating .venv: gearshift[demo,sim] and the packages constraints.txt pins")
    pip_calls = [line for line in lines if line.startswith("PIP ")]
    assert all("-q" in call.split() for call in pip_calls) and len(pip_calls) == 2, lines
    assert lines[1].startswith("PIP ")  # nothing else between the announcement and pip
    assert result.stdout == "DEMO demo --for 1\n"


@pytest.mark.slow  # ~25 s: a real demo, its pause and resume driven by the printed commands
def test_the_demo_prints_a_token_and_commands_that_pause_and_resume_as_printed(
        tmp_path: Path) -> None:
    need("mosquitto")
    port = free_port()
    demo = subprocess.Popen([sys.executable, "-m", "gearshift", "demo", "--for", "25",
                             "--port", str(port)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    assert demo.stdout is not None
    head = []
    try:
        for line in demo.stdout:
            head.append(line.rstrip("\n"))
            if line.startswith("running for"):
                break
        text = "\n".join(head)
        exports = re.search(r"^  export GEARSHIFT_URL=(\S+) GEARSHIFT_TOKEN_FILE=(\S+)$", text,
                            re.MULTILINE)
        assert exports, text
        url, token_file = exports.group(1), Path(exports.group(2))
        assert url == f"http://127.0.0.1:{port}"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        assert len(token) >= 32 and token not in text  # the path is printed, never the token
        commands = [line.split("#")[0].strip() for line in head
                    if line.startswith("  gearshift ")]
        assert [c.split()[1] for c in commands] == ["status", "pause", "plan", "resume"], head
        # as a person pastes them: one shell, the export line first, gearshift on the PATH
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        env.pop("GEARSHIFT_URL", None)
        env.pop("GEARSHIFT_TOKEN_FILE", None)
        said = {}
        for command in commands:
            result = subprocess.run(["sh", "-c", f"{exports.group(0).strip()}; {command}"],
                                    env=env, capture_output=True, text=True, check=False,
                                    timeout=30, cwd=ROOT)
            assert result.returncode == 0, (command, result.stdout, result.stderr)
            said[command.split()[1]] = result.stdout
        assert said["pause"] == "pool small paused: no actions until resumed\n"
        assert said["resume"] == "pool small resumed\n"
        # without the token the same call is refused: the token is what made it work
        refused = subprocess.run([sys.executable, "-m", "gearshift", "pause", "small",
                                  "--url", url], capture_output=True, text=True, check=False,
                                 timeout=30, cwd=ROOT,
                                 env=env)
        assert refused.returncode == 1 and "token" in refused.stderr
        rest, _ = demo.communicate(timeout=60)
    finally:
        demo.kill() if demo.poll() is None else None
    assert demo.returncode == 0
    assert "gearshift demo summary" in rest
    assert not token_file.exists() and not token_file.parent.exists()
