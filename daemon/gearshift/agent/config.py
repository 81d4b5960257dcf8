"""The agent's config file (YAML), validated once at start-up with clear errors.

Example::

    identity: node1.example.com          # default: this host's FQDN
    mqtt: {host: broker.example, port: 8883, username: node1, password_file: /etc/gearshift/agent.pw,
           tls: {ca_file: /etc/pki/ca.pem}}
    interval: 60s                        # publish at least this often
    poll: 5s                             # look for changed facts this often
    facts: {kind: openshift, path: /etc/mcollective/facts.yaml}
    commands:
      # what the daemon's OpenShift platform (via: agent) sends, on the broker host's agent:
      deactivate: oo-admin-ctl-district -c deactivate-node -u {district} -i {host}
      activate: oo-admin-ctl-district -c activate-node -u {district} -i {host}
      remove: oo-admin-ctl-district -c remove-node -u {district} -i {host}
      add: oo-admin-ctl-district -c add-node -u {district} -i {host}
      move: oo-admin-move --gear_uuid {gears} --json
      # and on every node's own agent:
      list_gears: oo-admin-ctl-gears list
    command_timeout: 10m
    key_file: /etc/gearshift/node.key    # gearshift keys node node1.example.com (chmod 600)

Secrets follow the daemon's rules: ``password_file`` rather than a password in the file.
"""

from __future__ import annotations

import shlex
import socket
import string
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gearshift import safeyaml
from gearshift.errors import ConfigError
from gearshift.settings import MqttSettings, Seconds
from gearshift.wire.signing import NodeKeys

COMMAND_NAME = r"^[a-z][a-z0-9_-]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OpenShiftFacts(_Strict):
    kind: Literal["openshift"]
    path: Path = Path("/etc/mcollective/facts.yaml")


class ContainerFacts(_Strict):
    kind: Literal["containers"]
    runtime: Literal["podman", "docker"] = "podman"
    binary: Path | None = Field(None, description="Runtime binary (default: found on PATH).")
    filters: list[str] = Field(default_factory=list,
                               description="--filter values, e.g. label=openshift.gear")
    node_profile: str = Field(min_length=1)
    max_active_gears: int = Field(ge=1)
    district_uuid: str | None = None
    district_active: bool = True
    timeout: Seconds = 30.0


class FileFacts(_Strict):
    kind: Literal["file"]
    path: Path


FactSourceConfig = Annotated[OpenShiftFacts | ContainerFacts | FileFacts,
                             Field(discriminator="kind")]


def template_fields(template: str) -> list[list[str]]:
    """The placeholders of each argv element of ``template`` (checked: plain names only)."""
    argv = shlex.split(template)
    if not argv:
        raise ValueError("empty command template")
    fields: list[list[str]] = []
    for token in argv:
        names = []
        for _, name, spec, conversion in string.Formatter().parse(token):
            if name is None:
                continue
            if not name.isidentifier() or spec or conversion:
                raise ValueError(f"placeholder {{{name}}} in {token!r}: use plain {{name}}")
            names.append(name)
        fields.append(names)
    if fields[0]:
        raise ValueError("the program itself cannot be a placeholder")
    return fields


class AgentConfig(_Strict):
    identity: str = Field(default_factory=socket.getfqdn, min_length=1, max_length=255,
                          pattern=r"^[^/+#\s]+$")
    mqtt: MqttSettings = MqttSettings(client_id="gearshift-agent")
    interval: Seconds = Field(60.0, gt=0, description="Publish facts at least this often.")
    poll: Seconds = Field(5.0, gt=0, description="Read the fact source this often.")
    facts: FactSourceConfig
    commands: dict[str, str] = Field(default_factory=dict,
                                     description="Allowlisted command name -> template.")
    command_timeout: Seconds = Field(600.0, gt=0)
    max_concurrent_commands: int = Field(1, ge=1, le=16)
    key_file: Path | None = Field(None, description=(
        "This node's keys (`gearshift keys node IDENTITY`): signs its facts and replies, "
        "checks the daemon's commands. Without it commands are refused."))
    allow_unsigned_commands: bool = Field(False, description=(
        "Run unsigned commands when no key_file is set (a migration only: anyone who can "
        "publish on the broker can then run the allowlisted commands)."))

    def keys(self) -> NodeKeys | None:
        try:
            return NodeKeys.load(self.key_file) if self.key_file is not None else None
        except ValueError as exc:
            raise ConfigError([f"key_file: {exc}"]) from None

    @field_validator("commands")
    @classmethod
    def _templates(cls, commands: dict[str, str]) -> dict[str, str]:
        import re  # noqa: PLC0415

        for name, template in commands.items():
            if not re.match(COMMAND_NAME, name):
                raise ValueError(f"command name {name!r} must match {COMMAND_NAME}")
            try:
                template_fields(template)
            except ValueError as exc:
                raise ValueError(f"command {name}: {exc}") from exc
        return commands


def load_agent_config(path: Path) -> AgentConfig:
    try:
        data = safeyaml.load_file(path) or {}
    except OSError as exc:
        raise ConfigError([f"{path}:1:1: cannot read: {exc.strerror}"]) from exc
    except (safeyaml.FileTooLarge, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}:1:1: {exc}"]) from exc
    except yaml.YAMLError as exc:
        line, column = safeyaml.where(exc)
        raise ConfigError([f"{path}:{line}:{column}: not valid YAML: "
                           f"{getattr(exc, 'problem', None) or exc.__class__.__name__}"]) from exc
    if not isinstance(data, dict):
        raise ConfigError([f"{path}:1:1: expected a mapping"])
    try:
        config = AgentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([f"{path}:1:1: {'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                           for e in exc.errors(include_url=False)]) from exc
    config.keys()  # a key file that cannot be used is a config error now, not at run time
    return config
