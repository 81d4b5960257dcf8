"""Every command in the README's code blocks, run as a newcomer would run it.

Each command shown is matched by exactly one rule below: run (in a scratch folder that
holds the repository's files, so what the command writes lands there), run against the
demo (the operator commands, with the demo's URL and token in place of the installed
daemon's), or not run, for the reason its rule states (root, systemd, docker, or the suite
itself), which the first test requires. Those are not pytest skips: the suite never skips
silently, and 38 skip lines a run would hide a real one. A new README command that no rule
names fails the first test, so none goes unchecked.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ROOT, need
from gearshift.sim.broker import free_port
from readme import Command, commands

VENV = Path(sys.executable).parent.parent
ROOT_ONLY = "needs root: installs under /opt, /etc or /usr, or reads an installed daemon's /etc/gearshift"
SYSTEMD = "needs systemd (tests/test_systemd.py checks the unit with systemd-analyze)"
DOCKER = "needs docker (tests/test_container.py builds and smoke-tests the image with podman)"


@dataclass(frozen=True)
class Rule:
    pattern: str
    how: str  # "run", "demo" (operator command against the demo), "bootstrap", "collect", "skip"
    why: str = ""  # for "skip": the reason, said in the skip


RULES = [
    Rule(r"^sh \.ci/bootstrap test$", "skip", "the whole suite, which this test is part of "
         "(CI runs exactly this command)"),
    Rule(r"^sh \.ci/bootstrap demo$", "bootstrap"),
    Rule(r'^\.venv/bin/pytest -m "not slow"$', "collect"),
    Rule(r"^\.venv/bin/gearshift (validate |schema |plan --config policies/|simulate )", "run"),
    Rule(r"^\.venv/bin/gearshift plan --config /etc/", "skip", ROOT_ONLY),
    Rule(r"^gearshift keys (new|node) ", "run"),
    Rule(r"^gearshift (status|plan --url|pause|resume)( |$)", "demo"),
    Rule(r"^gearshift run ", "skip", ROOT_ONLY),
    Rule(r"^(GEARSHIFT_JOURNAL=\w+ )?docker ", "skip", DOCKER),
    Rule(r"^curl .*127\.0\.0\.1:9400", "skip", DOCKER + ": the compose file's simulator"),
    Rule(r"^systemctl |.*&& systemctl ", "skip", SYSTEMD),
    Rule(r"^curl .*/v1/unplaced-gears$", "skip", "a hook's report to an installed daemon "
         "(tests/test_unplaced_channel.py posts the same body to a live API)"),
    Rule(r"^(apt-get |install |python3 -m venv /opt|/opt/gearshift/|cp -a /opt|\(umask 077;|"
         r"\$EDITOR /etc|promtool check config /etc)", "skip", ROOT_ONLY),
]


NO_RULE = Rule("", "none")


def rule_for(command: Command) -> Rule:
    """The first rule matching; NO_RULE (which the first test fails on) when none does."""
    return next((r for r in RULES if re.search(r.pattern, command.text)), NO_RULE)


SHOWN = commands()


def test_every_readme_command_is_run_or_skipped_for_a_stated_reason() -> None:
    assert len(SHOWN) > 30  # the parser still finds the README's code blocks
    for command in SHOWN:
        rule = rule_for(command)
        assert rule is not NO_RULE, \
            f"README.md:{command.line}: no rule says how to test {command.text!r}"
        assert rule.how != "skip" or rule.why
    runs = [c for c in SHOWN if rule_for(c).how != "skip"]
    assert len(runs) >= 10, runs


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A folder that looks like the checkout (its files linked) with the venv that runs now."""
    for entry in ROOT.iterdir():
        if entry.name not in {".venv", ".git"}:
            (tmp_path / entry.name).symlink_to(entry)
    (tmp_path / ".venv").symlink_to(VENV)
    return tmp_path


def _shell(command: str, *, cwd: Path, env: dict[str, str] | None = None,
           timeout: float = 300) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items()  # only what the README's command says
            if k not in {"GEARSHIFT_URL", "GEARSHIFT_TOKEN_FILE"}}
    full.update({"PATH": f"{VENV / 'bin'}:{os.environ['PATH']}", **(env or {})})
    return subprocess.run(["sh", "-c", command], cwd=cwd, env=full, capture_output=True,
                          text=True, check=False, timeout=timeout)


def _by(how: str) -> list[object]:
    return [pytest.param(c, id=f"L{c.line}") for c in SHOWN if rule_for(c).how == how]


def _expect_run(command: Command, result: subprocess.CompletedProcess[str], cwd: Path) -> None:
    """What the README says each command does, checked on its output."""
    text = command.text
    assert result.returncode == 0, (text, result.stdout[-1500:], result.stderr[-1500:])
    if " validate " in text:
        assert result.stderr.startswith("ok: policies"), result.stderr
        assert "NOT checked" not in result.stderr
    elif " schema " in text:
        schema = json.loads((cwd / "gearshift.schema.json").read_text())
        assert len(schema["oneOf"]) == 2
    elif " plan " in text:
        assert result.stdout.startswith("plan at "), result.stdout
        assert "heard 6 node(s)" in result.stderr
        assert "scale_out small:" in result.stdout and "why: " in result.stdout
    elif " simulate " in text:
        report = json.loads((cwd / "report.json").read_text())
        assert report["seed"] == 1 and sum(report["violations"].values()) == 0
        assert (cwd / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    elif "keys new" in text:
        assert "(mode 600)" in result.stderr + result.stdout
    elif "keys node" in text:
        assert (cwd / "node1.key").stat().st_mode & 0o777 == 0o600


def test_the_runnable_commands_run_as_written(scratch: Path) -> None:
    """In README order, in one folder: `keys node` uses the keyring `keys new` made."""
    etc = scratch / "etc-gearshift"  # /etc/gearshift needs root: the same files here
    etc.mkdir()
    ran = []
    for command in SHOWN:
        if rule_for(command).how != "run":
            continue
        text = command.text.replace("/etc/gearshift/", f"{etc}/")
        _expect_run(command, _shell(text, cwd=scratch), scratch)
        ran.append(text.split()[1 if text.startswith(".venv") else 2])
    assert len(ran) >= 6, ran


@pytest.fixture(scope="module")
def demo() -> Iterator[tuple[str, Path]]:
    """The demo, standing in for an installed daemon: its URL and token file."""
    need("mosquitto")
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "gearshift", "demo", "--port", str(port)],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True)
    assert process.stdout is not None
    token_file = None
    for line in process.stdout:
        found = re.search(r"GEARSHIFT_TOKEN_FILE=(\S+)", line)
        if found:
            token_file = Path(found.group(1))
        if line.startswith(("Ctrl-C", "running for")):
            break
    assert token_file is not None
    try:
        yield f"http://127.0.0.1:{port}", token_file
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)


@pytest.mark.slow  # ~20 s: the demo stands in for the installed daemon
@pytest.mark.parametrize("command", _by("demo"))
def test_the_operator_commands_work_against_the_demo(command: Command, demo: tuple[str, Path],
                                                     tmp_path: Path) -> None:
    url, token_file = demo
    text = (command.text.replace("http://127.0.0.1:9310", url)
            .replace("/etc/gearshift/api.token", str(token_file)))
    result = _shell(text, cwd=tmp_path, env={"GEARSHIFT_URL": url} if "--url" not in text else None)
    assert result.returncode == 0, (text, result.stdout, result.stderr)
    verb = text.split()[1]
    expected = {"status": "POOL ", "plan": "plan at ", "pause": "pool small paused",
                "resume": "pool small resumed"}[verb]
    assert expected in result.stdout, result.stdout


@pytest.mark.slow  # ~30 s: pytest collects the whole suite
@pytest.mark.parametrize("command", _by("collect"))
def test_the_daily_test_command_selects_the_fast_subset(command: Command) -> None:
    """Run as shown, but collecting only: the suite running itself would never end."""
    result = _shell(f"{command.text} --collect-only -q", cwd=ROOT)
    assert result.returncode == 0, result.stdout[-2000:]
    summary = re.search(r"(\d+)/(\d+) tests collected \((\d+) deselected\)", result.stdout)
    assert summary, result.stdout[-500:]
    selected, total, slow = map(int, summary.groups())
    assert selected + slow == total and 0 < slow < selected


@pytest.mark.slow  # ~60 s: pip checks the venv, then the demo runs for 15 s
@pytest.mark.parametrize("command", _by("bootstrap"))
def test_the_bootstrap_demo_runs(command: Command) -> None:
    """As shown, from the checkout (pip installs it in place), stopped by --for."""
    if VENV.resolve() != (ROOT / ".venv").resolve():
        pytest.fail(f"run the suite from {ROOT / '.venv'} (as `sh .ci/bootstrap test` does): "
                    f"this command installs there")
    need("mosquitto")
    result = _shell(f"{command.text} --for 15 --port {free_port()}", cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.startswith(("updating .venv:", "creating .venv")), result.stderr[:500]
    assert "gearshift demo summary after" in result.stdout
    assert "pause small" in result.stdout
