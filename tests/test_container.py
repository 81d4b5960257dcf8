"""The container image: its Dockerfile read, then built and run for real.

The static checks read the Dockerfile: multi-stage on a slim Python base, runtime
dependencies only, a non-root USER, a HEALTHCHECK that hits /healthz (through
`gearshift health`), ENTRYPOINT `gearshift run`, and no secrets baked in: no ENV/ARG
carrying a password, token or secret, no COPY of secret-looking files, and a
.dockerignore that keeps them (and .venv, .git) out of the build context. `gearshift
health` itself is tested against a live daemon in test_operator_cli.py.

The slow tests run deploy/image/build-and-smoke.sh, which builds this very Dockerfile on a
base made from Debian packages (no registry is reachable) and checks the running image:
version, validate, non-root, HEALTHCHECK healthy then unhealthy, no compiler, the demo
through a published port, deploy/compose.yaml. Then each check is shown able to fail: the
script is fed broken copies of the Dockerfile and must stop at the check that was broken.
A run killed mid-way (a CI time-out) must not break the next one.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import ROOT

SECRET_WORDS = re.compile(r"PASSWORD|PASSWD|TOKEN|SECRET|CREDENTIAL|DSN|API_?KEY", re.I)


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    logical, current = [], ""
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        current += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            if current.strip():
                logical.append(current.strip())
            current = ""
    result = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            found.append([])
        if found:
            found[-1].append((keyword, rest))
    return found


def env_pairs(rest: str) -> list[tuple[str, str]]:
    words = shlex.split(rest)
    if len(words) >= 2 and "=" not in words[0]:
        return [(words[0], " ".join(words[1:]))]  # legacy `ENV KEY value`
    return [(key, value) for key, _, value in (word.partition("=") for word in words)]


def test_multi_stage_slim_base() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2
    args = dict(env_pairs(rest)[0] for keyword, rest in instructions()
                if keyword == "ARG" and "=" in rest and not rest.startswith("EXTRAS"))
    for stage in all_stages:
        image = stage[0][1].split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), image)
        assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", image), image
    assert all_stages[0][0][1].endswith("AS build")


def test_runtime_stage_runs_gearshift_as_non_root_with_a_healthcheck() -> None:
    final = stages()[-1]
    keywords = [k for k, _ in final]
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users, "the runtime stage must switch to a non-root USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    # USER comes before the process starts.
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    healthcheck = next(rest for keyword, rest in final if keyword == "HEALTHCHECK")
    command = json.loads(healthcheck.split("CMD", 1)[1])
    assert command[:2] == ["gearshift", "health"]
    env = dict(pair for keyword, rest in final if keyword == "ENV" for pair in env_pairs(rest))
    assert env["GEARSHIFT_URL"].startswith("http://127.0.0.1:")  # health's default target
    entrypoint = json.loads(next(rest for keyword, rest in final if keyword == "ENTRYPOINT"))
    assert entrypoint == ["gearshift", "run"]
    # Only the built environment is copied in: no sources, no build tools.
    copies = [rest for keyword, rest in final if keyword in ("COPY", "ADD")]
    assert copies == ["--from=build /opt/gearshift /opt/gearshift"]
    installs = " ".join(rest for keyword, rest in final if keyword == "RUN")
    for build_tool in ("gcc", "-dev", "pip install"):
        assert build_tool not in installs


def test_only_runtime_extras_are_installed() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = set(pyproject["project"]["optional-dependencies"])
    default = next(rest for keyword, rest in instructions()
                   if keyword == "ARG" and rest.startswith("EXTRAS="))
    chosen = set(default.split("=", 1)[1].split(","))
    assert chosen <= extras, chosen - extras
    assert not chosen & {"dev", "demo", "sim", "all"}
    pip = [rest for keyword, rest in stages()[0] if keyword == "RUN" and "pip install" in rest]
    assert any('".[${EXTRAS}]"' in rest for rest in pip)


def test_no_secrets_baked_in() -> None:
    for keyword, rest in instructions():
        if keyword in ("ENV", "ARG", "LABEL"):
            for name, value in env_pairs(rest):
                assert not (SECRET_WORDS.search(name) and value), f"{keyword} {name}={value}"
                assert not SECRET_WORDS.search(value), f"{keyword} {name}={value}"
        if keyword in ("COPY", "ADD"):
            sources = [w for w in shlex.split(rest) if not w.startswith("--")][:-1]
            for source in sources:
                for pattern in ("*.pw", "*token*", "*secret*", "*.pem", "*.key", ".env"):
                    assert not fnmatch.fnmatch(source.lower(), pattern), source
            assert not any(s in (".", "./") for s in sources), "COPY . copies everything"


def test_dockerignore_keeps_local_state_and_secrets_out() -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for needed in (".git", ".venv", "tests", "**/*.pw", "**/*token*", "**/*secret*"):
        assert needed in patterns, needed
    # What the build stage copies is not excluded.
    for kept in ("pyproject.toml", "README.md", "daemon"):
        assert not any(fnmatch.fnmatch(kept, p) for p in patterns), kept


SCRIPT = ROOT / "deploy" / "image" / "build-and-smoke.sh"
IMAGE_APT = ("apt-get install -y --no-install-recommends podman runc debootstrap curl "
             "containernetworking-plugins golang-github-containernetworking-plugin-dnsname")


def require_image_tools() -> None:
    """The script needs root (rootful podman, debootstrap) and the Debian tools."""
    for binary in ("podman", "runc", "debootstrap", "curl"):
        if shutil.which(binary) is None and not Path(f"/usr/sbin/{binary}").exists():
            pytest.fail(f"{binary} is not installed; run: {IMAGE_APT}")
    if os.geteuid() != 0:
        pytest.fail("building the image needs root (rootful podman, debootstrap)")


def build_and_smoke(*args: str) -> subprocess.CompletedProcess[str]:
    require_image_tools()
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=1500, check=False)


@pytest.mark.slow
@pytest.mark.timeout(1600)  # cold: debootstrap, the stand-in bases, compiling the oVirt SDK
def test_the_image_builds_runs_and_passes_every_check(tmp_path: Path) -> None:
    report = tmp_path / "image.json"
    result = build_and_smoke("--report", str(report))
    assert result.returncode == 0, result.stderr[-5000:]
    for passed in ("gearshift --version: gearshift 0.1.0", "ok: /etc/gearshift/policies",
                   "runs as uid 10001", "no compiler", "status page and /metrics answer",
                   "HEALTHCHECK healthy while", "every process in the container runs as non-root",
                   "HEALTHCHECK unhealthy once", "compose: the daemon is ready"):
        assert passed in result.stderr, passed
    figures = json.loads(report.read_text())
    print(f"image figures: {figures}")
    # What gearshift adds to its base (the venv, libxml2, the user): no build tools, no
    # test dependencies; a regression (a copied wheel cache, gcc left behind) shows here.
    assert 0 < figures["image_bytes"] - figures["base_bytes"] < 350_000_000, figures


def replace(old: str, new: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert old in text, f"the Dockerfile no longer has {old!r}: update this test"
        return text.replace(old, new)
    return edit


HEALTH = 'CMD ["gearshift", "health", "--timeout", "5s"]'
BROKEN = {
    "user-root": (replace("USER 10001:10001", "USER root"), "non-root"),
    "healthcheck-wrong-port": (replace(HEALTH, HEALTH.replace(
        '"health",', '"health", "--url", "http://127.0.0.1:9399",')), "healthcheck"),
    "healthcheck-always-passes": (replace(HEALTH, 'CMD ["true"]'), "healthcheck"),
    "compiler-left": (replace("--no-install-recommends libxml2 \\",
                              "--no-install-recommends libxml2 gcc \\"), "no-compiler"),
}


@pytest.mark.slow
@pytest.mark.timeout(1600)
@pytest.mark.parametrize("broken", sorted(BROKEN))
def test_each_check_fails_on_a_dockerfile_broken_on_purpose(broken: str, tmp_path: Path) -> None:
    edit, check = BROKEN[broken]
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(edit((ROOT / "Dockerfile").read_text()))
    result = build_and_smoke("--dockerfile", str(dockerfile), "--name", f"broken-{broken}",
                             "--no-compose")
    assert result.returncode == 1, result.stderr[-5000:]
    assert f"FAIL: {check}:" in result.stderr, result.stderr[-5000:]
    print(next(line for line in result.stderr.splitlines() if line.startswith("FAIL: ")))


@pytest.mark.slow
@pytest.mark.timeout(1600)
def test_a_run_killed_mid_way_leaves_nothing_that_breaks_the_next() -> None:
    """A CI run killed while the demo container ran left it in the private storage, and the
    next run failed: "the container name ... is already in use". Kill one for real, with its
    container up, and the next run must pass."""
    require_image_tools()
    args = ["bash", str(SCRIPT), "--name", "killed", "--no-compose"]
    killed = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert killed.stderr is not None
    seen = []
    for line in killed.stderr:
        seen.append(line)
        if "status page and /metrics answer" in line:
            break
    else:
        pytest.fail("the run to be killed ended before its demo answered:\n" + "".join(seen))
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait(timeout=60)
    result = build_and_smoke("--name", "killed", "--no-compose")
    assert result.returncode == 0, result.stderr[-5000:]
    assert "status page and /metrics answer" in result.stderr
