"""The pieces every settings section is built from: the strict base class, TLS files,
and secrets that may come from a file.

Apart from settings.py so the section modules (settings_sources.py) can use them without
importing the whole ``Settings``; ``gearshift.settings`` re-exports every name.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from gearshift.durations import Duration

Seconds = Duration  # the name settings (and agent/config.py) give a length of time


def read_secret(value: SecretStr | None, file: Path | None, *, what: str) -> SecretStr | None:
    """The secret given directly, or read from ``file`` (trailing newline stripped)."""
    if value is not None:
        return value
    if file is None:
        return None
    try:
        return SecretStr(file.read_text(encoding="utf-8").rstrip("\n"))
    except OSError as exc:
        raise ValueError(f"cannot read {what} from {file}: {exc.strerror}") from exc


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TlsSettings(Section):
    ca_file: Path | None = Field(None, description="CA bundle that signed the broker's cert.")
    cert_file: Path | None = Field(None, description="Client certificate (mutual TLS).")
    key_file: Path | None = Field(None, description="Client certificate's private key.")
    insecure: bool = Field(False, description="Skip host name checks (tests only).")
