"""Settings precedence (env over file over defaults), secrets, and log output."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import structlog

from gearshift.errors import ConfigError
from gearshift.logs import configure
from gearshift.settings import load_settings


def test_defaults_bind_to_loopback() -> None:
    settings = load_settings(None)
    assert settings.http.host == "127.0.0.1" and settings.http.port == 9310
    assert settings.mqtt.host == "127.0.0.1"
    assert settings.reconcile.interval == 30


def test_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("mqtt: {host: broker.example, port: 8883}\nreconcile: {interval: 1m}\n")
    settings = load_settings(config)
    assert (settings.mqtt.host, settings.mqtt.port) == ("broker.example", 8883)
    assert settings.reconcile.interval == 60
    monkeypatch.setenv("GEARSHIFT_MQTT__PORT", "1884")
    monkeypatch.setenv("GEARSHIFT_RECONCILE__INTERVAL", "15s")
    settings = load_settings(config)
    assert (settings.mqtt.host, settings.mqtt.port) == ("broker.example", 1884)
    assert settings.reconcile.interval == 15


def test_secrets_from_files_never_print(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "mqtt.pw"
    secret.write_text("hunter2\n")
    monkeypatch.setenv("GEARSHIFT_MQTT__PASSWORD_FILE", str(secret))
    settings = load_settings(None)
    assert settings.mqtt.secret().get_secret_value() == "hunter2"  # type: ignore[union-attr]
    assert "hunter2" not in repr(settings) and "hunter2" not in settings.model_dump_json()
    monkeypatch.delenv("GEARSHIFT_MQTT__PASSWORD_FILE")
    monkeypatch.setenv("GEARSHIFT_MQTT__PASSWORD", "hunter3")
    assert "hunter3" not in repr(load_settings(None).mqtt)


def test_unknown_settings_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("mqtt: {hots: x}\n")
    with pytest.raises(ConfigError, match="hots"):
        load_settings(config)


def test_a_mistyped_setting_never_echoes_its_value(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("mqtt: {pasword: hunter2, password: [hunter3]}\n")
    monkeypatch.setenv("GEARSHIFT_JOURNAL__DSNFILE", "postgresql://gs:S3cret@db/gs")
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    text = "\n".join(caught.value.problems)
    assert f"{config}: mqtt.pasword: Extra inputs are not permitted" in text
    assert "journal.dsnfile" in text
    for secret in ("hunter2", "hunter3", "S3cret"):
        assert secret not in text


def test_json_lines_off_a_terminal_with_secrets_masked() -> None:
    stream = io.StringIO()
    configure(level="info", fmt="auto", stream=stream)
    structlog.get_logger(component="test").info("action", kind="scale_out", password="p4ss",
                                                reason="pool small: +1")
    line = json.loads(stream.getvalue().splitlines()[-1])
    assert line["event"] == "action" and line["kind"] == "scale_out"
    assert line["password"] == "**********"
    assert line["level"] == "info" and "timestamp" in line
