"""Issue 11, finding 7: credentials in URLs never echoed, ``\\Z`` anchors (a trailing newline
is not a valid host, district or gear), provider failures logged with their cause.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import structlog
from pydantic import ValidationError

from gearshift import jsonlimits
from gearshift.act.platform.commands import check_value
from gearshift.act.providers.base import CreateRequest
from gearshift.act.providers.guard import GuardedProvider, GuardSettings
from gearshift.act.providers.registry import build_provider
from gearshift.clock import InstantClock
from gearshift.errors import ConfigError, PlatformError, TransientError
from gearshift.logs import configure
from gearshift.policy.holder import PolicyHolder
from gearshift.policy.schema import Blueprint, PoolPolicy, ProviderSpec
from gearshift.redact import redact, redact_value
from gearshift.settings import load_settings
from gearshift.sim.broker import free_port
from gearshift.store.journal import MemoryJournal

SECRET = "S3cr3t-in-url-91f2"

PROVIDERS = """\
apiVersion: gearshift/v1
kind: Providers
providers:
  - name: vc
    kind: vsphere
    quota: {{max_nodes: 4}}
    boot_time: 3m
    settings: {{url: "{url}", username: u, password_file: /nonexistent}}
blueprints: []
"""


@pytest.mark.parametrize("url", [
    f"https://admin:{SECRET}@vcenter.example/sdk",
    f"ftp://admin:{SECRET}@vcenter.example/sdk",  # wrong scheme: used to be quoted back
    f"https//admin:{SECRET}@vcenter.example/sdk",  # does not parse as a URL at all
    f"https://admin:{SECRET}@/sdk",  # no host
    f"admin:{SECRET}@vcenter.example",  # no scheme
])
def test_validate_refuses_credentials_in_a_url_without_echoing_them(tmp_path: Path,
                                                                    url: str) -> None:
    providers = tmp_path / "providers.yaml"
    providers.write_text(PROVIDERS.format(url=url))
    result = subprocess.run([sys.executable, "-m", "gearshift", "validate", str(providers)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert SECRET not in result.stdout + result.stderr
    assert result.stdout == (f"{providers}:8:21: provider vc (kind vsphere): settings.url: "
                             "put no credentials in the URL; use username (or username_env, "
                             "username_file) and password_file or password_env\n")


def test_a_refused_reload_keeps_credentials_out_of_the_log_and_the_problems(
        tmp_path: Path) -> None:
    (tmp_path / "pools").mkdir()
    providers = tmp_path / "providers.yaml"
    providers.write_text(PROVIDERS.replace("kind: vsphere", "kind: simulated").format(
        url="https://vcenter.example/sdk"))
    holder = PolicyHolder([tmp_path / "pools", providers])
    # without kind settings (simulate, tests) the URL is only a string: a later problem
    # in the same file that quotes it is redacted where problems are formatted
    providers.write_text(PROVIDERS.replace("kind: vsphere", "kind: simulated").format(
        url=f"https://admin:{SECRET}@vcenter.example/sdk").replace(
        "boot_time: 3m", f"boot_time: 'https://admin:{SECRET}@x/'"))
    stream = io.StringIO()
    configure(level="info", fmt="json", stream=stream)
    try:
        assert holder.reload() is False
    finally:
        structlog.reset_defaults()
    assert holder.problems and all(SECRET not in p for p in holder.problems)
    assert SECRET not in stream.getvalue()
    assert "//***@x/" in stream.getvalue()


def test_the_log_redacts_urls_with_credentials_under_any_key() -> None:
    stream = io.StringIO()
    configure(level="info", fmt="json", stream=stream)
    try:
        log = structlog.get_logger()
        log.warning(f"cannot reach https://u:{SECRET}@h/x", target=f"amqp://u:{SECRET}@b:5672",
                    problems=[f"f.yaml:1:1: http://u:{SECRET}@h"], nested={"a": (f"//{SECRET}@h",)},
                    password="plain")
        try:
            raise RuntimeError(f"https://u:{SECRET}@h/x")
        except RuntimeError:
            log.exception("boom")
    finally:
        structlog.reset_defaults()
    text = stream.getvalue()
    assert SECRET not in text
    first = json.loads(text.splitlines()[0])
    assert first["event"] == "cannot reach https://***@h/x"
    assert first["target"] == "amqp://***@b:5672"
    assert first["problems"] == ["f.yaml:1:1: http://***@h"]
    assert first["password"] == "**********"
    assert "https://***@h/x" in json.loads(text.splitlines()[1])["exception"]


def test_redact_leaves_ordinary_text_alone() -> None:
    for text in ("user@example.com wrote", "https://host/path?q=a@b", "10.0.0.1:8443", ""):
        assert redact(text) == text or "//" in text
    assert redact("https://host/path?q=a@b") == "https://host/path?q=a@b"
    assert redact_value({"a": [1, "x://u:p@h"]}) == {"a": [1, "x://***@h"]}


def test_settings_errors_are_redacted(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"prometheus: {{url: 'https://u:{SECRET}@p', interval: 'https://u:{SECRET}@p'}}\n")
    with pytest.raises(ConfigError) as refused:
        load_settings(config)
    assert refused.value.problems and SECRET not in "".join(refused.value.problems)


# -- \Z anchors -------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "value"), [
    ("host", "node1.example"), ("district", "a1b2c3d4-district"),
    ("gears", "0123456789abcdef,fedcba9876543210")])
def test_platform_values_with_a_trailing_newline_are_refused(name: str, value: str) -> None:
    assert check_value(name, value) == value
    for bad in (value + "\n", value + "\r\n", "\n" + value):
        with pytest.raises(PlatformError):
            check_value(name, bad)


def test_policy_names_districts_and_durations_refuse_a_trailing_newline() -> None:
    # pydantic's patterns (Rust regex) already anchor at the very end; kept that way
    base: dict[str, Any] = {"apiVersion": "gearshift/v1", "kind": "Pool", "name": "small",
                            "priority": 1, "selector": {"node_profile": "small"},
                            "size": {"min": 1, "max": 2}, "placement": [
                                {"provider": "p", "blueprint": "b", "max_nodes": 1}]}
    assert PoolPolicy.model_validate(base).name == "small"
    with pytest.raises(ValidationError):
        PoolPolicy.model_validate({**base, "name": "small\n"})
    blueprint = {"name": "b", "provider": "p", "node_profile": "small", "district": "d1"}
    assert Blueprint.model_validate(blueprint).district == "d1"
    with pytest.raises(ValidationError):
        Blueprint.model_validate({**blueprint, "district": "d1\n"})
    with pytest.raises(ValidationError):
        PoolPolicy.model_validate({**base, "cooldown": {"up": "60s\nx"}})
    with pytest.raises(ValidationError):
        ProviderSpec.model_validate({"name": "p\n", "kind": "simulated",
                                     "quota": {"max_nodes": 1}})


def test_json_depth_scan_ignores_brackets_inside_strings() -> None:
    assert jsonlimits.depth('{"a": "[[[[", "b": ["\\"]]]"]}') == 2
    assert jsonlimits.depth(b"[" * 40 + b"]" * 40) == 40
    with pytest.raises(jsonlimits.TooDeep):
        jsonlimits.loads("[" * 33 + "]" * 33)
    assert jsonlimits.loads("[" * 32 + "]" * 32) is not None
    with pytest.raises(ValueError, match="Expecting"):
        jsonlimits.loads('{"a": ')


# -- provider failures carry their cause ------------------------------------------------

async def test_a_provider_failure_is_logged_with_its_cause_and_no_secret(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    port = free_port()  # nothing listens there: connections are refused
    monkeypatch.setenv("GS_TEST_CAUSE_PW", SECRET)
    spec = ProviderSpec.model_validate({
        "name": "rack", "kind": "redfish", "quota": {"max_nodes": 1}, "boot_time": "2m",
        "settings": {"username": "admin", "password_env": "GS_TEST_CAUSE_PW",
                     "request_timeout": "5s", "state_file": str(tmp_path / "state.json"),
                     "machines": [{"bmc": f"http://127.0.0.1:{port}"}]}})
    provider = build_provider(spec)
    provider.keep_state_in(MemoryJournal())  # bare metal keeps its allocations there
    guarded = GuardedProvider(provider, clock=InstantClock(),
                              settings=GuardSettings(retry_deadline=5, retry_initial=0.01,
                                                     retry_max=0.01, retry_attempts=2),
                              boot_time=120)
    stream = io.StringIO()
    configure(level="info", fmt="json", stream=stream)
    try:
        blueprint = Blueprint.model_validate({"name": "b", "provider": "rack",
                                              "node_profile": "small"})
        with pytest.raises(TransientError):
            await guarded.create(CreateRequest(key="k1", name="n1", pool="small",
                                               blueprint=blueprint))
    finally:
        await guarded.close()
        structlog.reset_defaults()
    text = stream.getvalue()
    assert SECRET not in text
    lines = [json.loads(line) for line in text.splitlines()]
    retried = [e for e in lines if e["event"] == "provider call failed: retrying"]
    failed = [e for e in lines if e["event"] == "provider call failed"]
    assert len(retried) == 1 and len(failed) == 1, lines
    assert failed[0]["provider"] == "rack" and failed[0]["error"] == "transient"
    assert failed[0]["attempts"] == 2
    assert "unreachable (ClientConnectorError)" in failed[0]["cause"]
    assert "Connection refused" in failed[0]["cause"]
    assert retried[0]["cause"] == failed[0]["cause"]
