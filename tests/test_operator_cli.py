"""The operator commands against a live daemon: status, pause/resume, plan --url, health,
and `config example` against deploy/config.example.yaml."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from conftest import ROOT
from gearshift.config_example import example_config
from gearshift.settings import Settings, load_settings
from gearshift.sim.broker import free_port
from live import LiveDaemon, start_daemon


def gearshift(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    full_env = {k: v for k, v in os.environ.items()
                if k not in ("GEARSHIFT_URL", "GEARSHIFT_TOKEN_FILE")}
    return subprocess.run([sys.executable, "-m", "gearshift", *args], capture_output=True,
                          text=True, check=False, cwd=ROOT, timeout=60, env={**full_env,
                                                                            **(env or {})})


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory,
           mosquitto: tuple[str, int]) -> Iterator[LiveDaemon]:
    live = start_daemon(tmp_path_factory.mktemp("cli"), mosquitto, demand=60, interval="1s")
    live.wait_ready()
    yield live
    assert live.stop() == 0, live.log.read_text()[-3000:]


@pytest.mark.parametrize("command", ["status", "pause", "resume", "health", "config"])
def test_operator_commands_have_help(command: str) -> None:
    result = gearshift(command, "--help")
    assert result.returncode == 0
    assert f"usage: gearshift {command}" in result.stdout


def test_status_prints_tables(daemon: LiveDaemon) -> None:
    result = gearshift("status", "--url", daemon.url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"gearshift at {daemon.url}: leader, facts fresh, last reconcile 20")
    header = next(i for i, line in enumerate(lines) if line.startswith("POOL"))
    assert lines[header].split() == ["POOL", "ACTIVE", "BOOTING", "DRAINING", "UNKNOWN",
                                     "PARKED", "DESIRED", "MIN-MAX", "ACTIVE-DENSITY", "BAND",
                                     "STATE"]
    assert lines[header + 1].split() == ["small", "2", "0", "0", "0", "0", "2", "2-12",
                                         "0.50", "0.45-0.80", "in", "band"]
    providers = lines.index(next(line for line in lines if line.startswith("PROVIDER")))
    rows = {line.split()[0]: line.split() for line in lines[providers + 1:] if line.strip()}
    assert set(rows) == {"rack-a", "vsphere-dc1", "ec2-east"}
    assert rows["rack-a"][1:3] == ["yes", "2"]
    as_json = gearshift("status", "--url", daemon.url, "--json")
    assert json.loads(as_json.stdout)["pools"]["small"]["nodes"]["active"] == 2


def test_pause_and_resume_need_the_token(daemon: LiveDaemon, tmp_path: Path) -> None:
    no_token = gearshift("pause", "small", "--url", daemon.url)
    assert no_token.returncode == 1 and "--token-file" in no_token.stderr
    wrong = tmp_path / "wrong.token"
    wrong.write_text("not-the-token\n")
    refused = gearshift("pause", "small", "--url", daemon.url, "--token-file", str(wrong))
    assert refused.returncode == 1
    assert "403 token not accepted" in refused.stderr
    assert "not-the-token" not in refused.stderr + refused.stdout

    paused = gearshift("pause", "small", "--url", daemon.url, "--token-file",
                       str(daemon.token_file))
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.strip() == "pool small paused: no actions until resumed"
    status = gearshift("status", "--url", daemon.url)
    assert "PAUSED" in status.stdout
    assert daemon.json("/v1/status")["pools"]["small"]["paused"] is True

    unknown = gearshift("resume", "large", "--url", daemon.url,
                        env={"GEARSHIFT_TOKEN_FILE": str(daemon.token_file)})
    assert unknown.returncode == 1 and "404 no such pool" in unknown.stderr
    resumed = gearshift("resume", "small", env={"GEARSHIFT_TOKEN_FILE": str(daemon.token_file),
                                                "GEARSHIFT_URL": daemon.url})
    assert resumed.returncode == 0, resumed.stderr
    assert daemon.json("/v1/status")["pools"]["small"]["paused"] is False


def test_plan_against_a_running_daemon(daemon: LiveDaemon) -> None:
    result = gearshift("plan", "--url", daemon.url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("plan at 20")
    assert re.search(r"pool small: 2 active, 0 booting, 0 draining, 0 unknown; active density now 0\.50",
                     result.stdout), result.stdout
    assert "no actions" in result.stdout
    as_json = json.loads(gearshift("plan", "--url", daemon.url, "--json").stdout)
    assert as_json["pools"]["small"]["active"] == 2 and as_json["actions"] == []


def test_plan_url_on_a_paused_pool_under_pressure(daemon: LiveDaemon) -> None:
    # A capacity request creates pressure; the pool is paused, so the dry run says so.
    import urllib.request

    request = urllib.request.Request(
        daemon.url + "/v1/capacity-requests", method="POST",
        data=json.dumps({"pool": "small", "gears": 200, "ttl": "2m"}).encode(),
        headers={"Authorization": f"Bearer {daemon.token_file.read_text().strip()}",
                 "Content-Type": "application/json"})
    assert gearshift("pause", "small", "--url", daemon.url, "--token-file",
                     str(daemon.token_file)).returncode == 0  # so the plan stays a plan
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201
    try:
        plan = json.loads(gearshift("plan", "--url", daemon.url, "--json").stdout)
        assert plan["actions"] == []  # paused: the planner says so and does nothing
        assert "paused" in plan["pools"]["small"]["summary"]
    finally:
        gearshift("resume", "small", "--url", daemon.url, "--token-file", str(daemon.token_file))


def test_unreachable_daemon_exits_3(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    token = tmp_path / "api.token"
    token.write_text("abc\n")
    for args in (["status"], ["plan"], ["pause", "small", "--token-file", str(token)]):
        result = gearshift(*args, "--url", url)
        assert result.returncode == 3, (args, result.stderr)
        assert f"cannot reach the gearshift daemon at {url}" in result.stderr
    assert gearshift("health", "--url", url).returncode == 1
    # A token file that cannot be a header value is refused before anything is sent.
    result = gearshift("pause", "small", "--url", url, "--token-file", __file__)
    assert result.returncode == 1 and "one line of printable ASCII" in result.stderr


def test_health(daemon: LiveDaemon) -> None:
    result = gearshift("health", "--url", daemon.url)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["alive"] is True


def test_config_example_is_generated_and_current() -> None:
    committed = (ROOT / "deploy" / "config.example.yaml").read_text()
    printed = gearshift("config", "example").stdout
    assert printed == example_config()
    assert committed == printed, (
        "deploy/config.example.yaml is out of date: run "
        "`gearshift config example > deploy/config.example.yaml`")


def test_config_example_documents_every_setting_and_loads_as_the_defaults(
        tmp_path: Path) -> None:
    text = example_config()

    def walk(model: type[BaseModel], path: list[str]) -> list[str]:
        names = []
        for name, field in model.model_fields.items():
            from gearshift.config_example import _model_in

            section, _ = _model_in(field.annotation)
            if section is not None:
                names += walk(section, [*path, name])
            else:
                assert field.description, f"{'.'.join([*path, name])} has no description"
                names.append("GEARSHIFT_" + "__".join([*path, name]).upper())
        return names

    envs = walk(Settings, [])
    assert len(envs) > 30
    flat = text.replace("\n  # ", " ").replace("\n# ", " ")
    for env in envs:
        assert f"Env: {env}." in flat, env
    copy = tmp_path / "config.yaml"
    copy.write_text(text)
    assert load_settings(copy).model_dump() == load_settings(None).model_dump()


@pytest.mark.slow  # ~3 s: connects to every peer the config names
def test_config_check(daemon: LiveDaemon, tmp_path: Path) -> None:
    config = daemon.directory / "config.yaml"
    ok = gearshift("config", "check", "--config", str(config))
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(config.read_text().replace("policy_poll: 0.2s", "policy_poll: soon"))
    result = gearshift("config", "check", "--config", str(bad))
    assert result.returncode == 1 and "policy_poll" in result.stderr
    # A keyring every user can read is refused, and no key appears in the message.
    ring = tmp_path / "keyring"
    assert gearshift("keys", "new", "--out", str(ring)).returncode == 0
    assert ring.stat().st_mode & 0o777 == 0o600
    ring.chmod(0o644)
    keyed = tmp_path / "keyed.yaml"
    keyed.write_text(config.read_text() + f"trust: {{keyring_file: {ring}}}\n")
    result = gearshift("config", "check", "--config", str(keyed))
    secret = ring.read_text().splitlines()[1].split(":", 1)[1]
    assert result.returncode == 1 and "readable by every user" in result.stderr
    assert secret not in result.stderr + result.stdout
    required = tmp_path / "required.yaml"
    required.write_text(config.read_text() + "trust: {facts: require_signed}\n")
    result = gearshift("config", "check", "--config", str(required))
    assert result.returncode == 1 and "require_signed needs trust.keyring_file" in result.stderr


async def test_plan_text_is_the_same_locally_and_through_the_api() -> None:
    """/v1/plan carries every action's reason and candidates; `plan --url` prints them as
    `plan --config` does."""
    from aiohttp.test_utils import TestClient, TestServer

    from builders import policy_set, pool
    from gearshift.api.server import ApiServer
    from gearshift.client import plan_from_dict
    from gearshift.clock import ManualClock
    from gearshift.explain import plan_to_text
    from test_reconciler import Rig

    rig = Rig(policy_set(pool()), demand=110, clock=ManualClock())
    await rig.seed()
    local = await rig.reconciler.dry_run()
    assert local.actions, "the rig should want to scale out"
    api = ApiServer(rig.reconciler, rig.metrics, token=None)
    async with TestClient(TestServer(api.app)) as client:
        data = await (await client.get("/v1/plan")).json()
    scale_out = data["actions"][0]
    assert scale_out["kind"] == "scale_out"
    assert "projected density 0.92 > 0.80" in scale_out["reason"]
    assert [c["provider"] for c in scale_out["candidates"]] == [
        "rack-a", "vsphere-dc1", "ec2-east"]
    assert plan_to_text(plan_from_dict(data)) == plan_to_text(local)
    assert "candidate ec2-east/small-ec2" in plan_to_text(local)
