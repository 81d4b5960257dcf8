"""Daemon settings: a YAML file, overridden by ``GEARSHIFT_*`` environment variables.

Nested settings use ``__`` in the environment: ``GEARSHIFT_MQTT__HOST=broker.example``.
Precedence, highest first: environment, the config file, the defaults below. Defaults
bind only to 127.0.0.1. Secrets are ``SecretStr`` (printed as ``**********``) and can come
from a file (``password_file``), so they need not sit in the config or the environment.
"""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from gearshift import safeyaml
from gearshift.durations import to_seconds
from gearshift.errors import ConfigError
from gearshift.redact import redact
from gearshift.settings_base import Seconds, Section, TlsSettings, read_secret
from gearshift.settings_sources import McollectiveSettings, TrustSettings

__all__ = [
    "HttpSettings", "JournalSettings", "LogSettings", "McollectiveSettings", "MqttSettings",
    "OperationsSettings", "PlatformSettings", "PrometheusSettings", "ReconcileSettings",
    "Seconds", "Section", "Settings", "TlsSettings", "TrustSettings", "load_settings",
    "read_secret",
]

_config_file: ContextVar[Path | None] = ContextVar("gearshift_config_file", default=None)


_seconds = to_seconds  # how config_example tells duration fields apart


class MqttSettings(Section):
    enabled: bool = Field(True, description="Read node facts from MQTT.")
    host: str = Field("127.0.0.1", description="Broker host (mosquitto, ActiveMQ, ...).")
    port: int = Field(1883, description="Broker port (8883 is usual with TLS).")
    prefix: str = Field("gearshift/v1", description="Topic prefix.")
    protocol: Literal["3.1.1", "5"] = Field(
        "5", description="MQTT protocol version; ActiveMQ 5.x speaks only 3.1.1.")
    client_id: str = Field("gearshift", description="MQTT client id prefix of the daemon.")
    username: str | None = Field(None, description="Broker user name.")
    password: SecretStr | None = Field(None, description="Broker password (prefer password_file).")
    password_file: Path | None = Field(None, description="File holding the broker password.")
    tls: TlsSettings | None = Field(None, description="Connect with TLS when set.")
    keepalive: int = Field(30, description="MQTT keepalive in seconds.")
    max_payload: int = Field(65536, ge=1024, le=65536, description=(
        "Larger messages are rejected (64 KiB at most: the facts parser's own limit)."))
    reconnect_min: Seconds = Field(1.0, description="First reconnect delay after a broker "
                                                    "loss (jittered, doubling).")
    reconnect_max: Seconds = Field(60.0, description="Longest reconnect delay.")
    catch_up_timeout: Seconds = Field(
        10.0, description="Longest wait for retained facts after subscribing.")
    catch_up_min: Seconds = Field(
        1.0, description="Trust the fleet no sooner than this after subscribing, so agents "
                         "publishing live (a broker that lost its retained facts) are heard.")
    timeout: Seconds = Field(10.0, description="Longest wait for the broker to answer a "
                                               "connect, subscribe or publish.")

    def secret(self) -> SecretStr | None:
        return read_secret(self.password, self.password_file, what="MQTT password")


class HttpSettings(Section):
    host: str = Field("127.0.0.1", description="Address the HTTP API listens on.")
    port: int = Field(9310, description="Port of /metrics, /healthz, /v1/...")
    token_file: Path | None = Field(None, description="Bearer token for mutating calls; "
                                                      "without it they are refused.")
    max_body: int = Field(65536, description="Largest request body accepted, in bytes.")
    max_connections: int = Field(256, ge=8, description=(
        "Open connections at most; a new one past it closes the oldest. Lowered to half "
        "of the open-files limit (LimitNOFILE) left after 128 for everything else."))
    read_timeout: Seconds = Field(10.0, gt=0, description=(
        "A connection that sends no complete request headers for this long (from connect, "
        "or idle between requests) is closed; a request body must arrive within it too."))
    plan_cache: Seconds = Field(2.0, ge=0, description=(
        "/v1/plan answers from a plan at most this old when nothing was reconciled, "
        "reloaded or paused since; requests meanwhile share the plan being computed."))


class ReconcileSettings(Section):
    interval: Seconds = Field(30.0, description="Reconcile at least this often.")
    stale_after: Seconds = Field(180.0, description="Facts older than this make a node unknown.")
    debounce: Seconds = Field(0.02, description="Check for policy-edge crossings at most this "
                                                "often (the first fact is checked at once).")
    hung_after: Seconds = Field(600.0, description=(
        "The loop counts as hung when it has not proved it is alive for this long: /healthz "
        "answers 503. Keep it at the systemd unit's WatchdogSec."))
    gc_freeze: bool = Field(True, description=(
        "Before the facts replay and once they have caught up, collect garbage once and "
        "freeze what survives (the imports, the fleet) out of the collector's reach, so "
        "full collections do not stall reconciles."))


class JournalSettings(Section):
    kind: Literal["memory", "sqlite", "postgres"] = Field(
        "sqlite", description="Where operations are journaled.")
    path: Path = Field(Path("/var/lib/gearshift/journal.db"), description="SQLite file.")
    dsn: SecretStr | None = Field(None, description="PostgreSQL DSN (kind: postgres).")
    dsn_file: Path | None = Field(None, description="File holding the PostgreSQL DSN.")
    lease_ttl: Seconds = Field(10.0, description=(
        "PostgreSQL: the leader lease lasts this long unless renewed; a follower takes over "
        "at most this long (plus one poll) after the leader dies."))
    lease_renew: Seconds = Field(2.0, description="How often the leader renews its lease.")
    lease_poll: Seconds = Field(1.0, description="How often a follower tries to take the lease.")
    instance: str | None = Field(None, description=(
        "This instance's name in the lease (default: host name and process id)."))
    keep_finished: Seconds = Field(30 * 86400.0, ge=0, description=(
        "Finished operations (and recovery records) are deleted from the journal once "
        "their last step is this old; the leader looks about once an hour. Operations "
        "not yet done are never deleted. 0 keeps them for ever."))

    def secret_dsn(self) -> SecretStr | None:
        return read_secret(self.dsn, self.dsn_file, what="journal DSN")


class PlatformSettings(Section):
    kind: Literal["openshift", "none", "simulated"] = Field(
        "none", description="How nodes are deactivated, drained and removed.")
    commands: dict[str, str] = Field(default_factory=dict, description=(
        "Command templates by step (deactivate, activate, move, remove, add, list_gears); "
        "the defaults are OpenShift v2's oo-admin-ctl-district and oo-admin-move."))
    timeout: Seconds = Field(600.0, description="Longest a platform command may run.")
    list_timeout: Seconds = Field(30.0, description=(
        "Longest listing a draining node's gears (list_gears) may take: it runs on every "
        "reconcile of a drain, so a node that does not answer must not hold the loop."))
    via: Literal["broker", "agent"] = Field("broker", description=(
        "broker: run the commands here (gearshift runs on the broker host); agent: ask the "
        "node agents over MQTT 5 (request/response on nodes/{identity}/command)."))
    agent_identity: str | None = Field(None, description=(
        "via agent: the identity of the agent on the broker host, which runs the "
        "oo-admin-* commands. list_gears always goes to the draining node's own agent."))
    allowed_programs: list[str] = Field(
        default_factory=lambda: ["oo-admin-ctl-district", "oo-admin-move", "ssh"],
        description="Programs a command template may run (exactly as the template names them).")
    move_parallel: int = Field(2, ge=1, description="oo-admin-move processes at once per node.")
    gears_per_move: int = Field(5, ge=1, description="Gear UUIDs per oo-admin-move call.")
    move_retry_after: Seconds = Field(300.0, description=(
        "A gear whose move failed is tried again after this long."))
    stop_grace: Seconds = Field(30.0, description=(
        "On shutdown, wait this long for gear moves in flight before interrupting them."))
    url: str | None = Field(None, description=(
        "kind simulated: the simulated world server (python -m gearshift.sim.server)."))


class OperationsSettings(Section):
    """How operations are carried out: provider call bounds, timeouts, recovery."""

    call_timeout: Seconds = Field(120.0, description="Longest one provider call may take.")
    retry_deadline: Seconds = Field(300.0, description=(
        "Transient provider errors are retried (jittered back-off) for at most this long."))
    retry_initial: Seconds = Field(1.0, description="First retry back-off.")
    retry_max: Seconds = Field(30.0, description="Longest retry back-off.")
    breaker_threshold: int = Field(5, ge=1, description="Failures in a row that open the "
                                                        "provider's circuit breaker.")
    breaker_reset: Seconds = Field(120.0, description="How long an open breaker stays open.")
    capacity_backoff: Seconds = Field(300.0, description=(
        "How long a provider is skipped after a quota, capacity or provisioning failure."))
    provisioning_timeout_factor: float = Field(3.0, gt=0, description=(
        "A new node that publishes no facts within its provider's time-to-ready times this "
        "is retired, and the provider backed off."))
    min_provisioning_timeout: Seconds = Field(120.0, description=(
        "Never retire a silent new node sooner than this."))
    orphan_grace: Seconds = Field(900.0, description=(
        "A machine carrying our tag that the journal does not know and that never "
        "published facts is retired once it is this old."))
    orphan_sweep: Seconds = Field(600.0, description=(
        "How often providers are listed to find such machines (besides at start)."))
    move_batch: int = Field(10, ge=1, description="Gears moved per drain per reconcile.")
    create_wait: Seconds = Field(60.0, gt=0, description=(
        "A reconcile waits this long for its creates; slower ones go on in the background "
        "(journaled, counted as booting), so one slow provider never stalls the loop."))


class LogSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Least severe level logged.")
    format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto: console on a terminal, JSON lines otherwise.")


class PrometheusSettings(Section):
    url: str = Field("http://127.0.0.1:9090", description="Prometheus base URL "
                                                          "(queries go to /api/v1/query).")
    interval: Seconds = Field(15.0, description="Query every pool's signals this often.")
    token_file: Path | None = Field(None, description="Bearer token for Prometheus, if any.")
    ca_file: Path | None = Field(None, description="CA bundle for an https:// Prometheus.")


class Settings(BaseSettings):
    """Everything ``gearshift run`` needs; see deploy/config.example.yaml."""

    model_config = SettingsConfigDict(env_prefix="GEARSHIFT_", env_nested_delimiter="__",
                                      extra="forbid")

    policies_dir: Path = Field(Path("/etc/gearshift/policies"),
                               description="Directory of kind: Pool files.")
    providers_file: Path = Field(Path("/etc/gearshift/providers.yaml"),
                                 description="The kind: Providers file.")
    mqtt: MqttSettings = MqttSettings()
    mcollective: McollectiveSettings = McollectiveSettings()
    http: HttpSettings = HttpSettings()
    reconcile: ReconcileSettings = ReconcileSettings()
    journal: JournalSettings = JournalSettings()
    platform: PlatformSettings = PlatformSettings()
    log: LogSettings = LogSettings()
    policy_poll: Seconds = Field(2.0, description=(
        "Look for edited policy files this often and reload them; 0 turns polling off "
        "(SIGHUP always reloads)."))
    prometheus: PrometheusSettings | None = Field(
        None, description="Query pools' PromQL signals here; unset: signals are unavailable.")
    operations: OperationsSettings = OperationsSettings()
    trust: TrustSettings = TrustSettings()

    @model_validator(mode="after")
    def _one_password_source(self) -> Settings:
        if self.mqtt.password is not None and self.mqtt.password_file is not None:
            raise ValueError("mqtt: set password or password_file, not both")
        if self.trust.facts == "require_signed" and self.trust.keyring_file is None:
            raise ValueError("trust: facts: require_signed needs trust.keyring_file")
        return self

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config = _config_file.get()
        if config is not None:
            # read with gearshift's bounds (size, alias expansion), not yaml.safe_load
            data = safeyaml.load_file(config) or {}
            if not isinstance(data, dict):
                raise ConfigError([f"{config}:1:1: expected a mapping of settings"])
            sources.append(InitSettingsSource(settings_cls, init_kwargs=data))
        return (*sources, file_secret_settings)


def load_settings(config: Path | None) -> Settings:
    """Settings from ``config`` (if given) and the environment."""
    if config is not None and not config.is_file():
        raise FileNotFoundError(f"config file {config} does not exist")
    token = _config_file.set(config)
    try:
        return Settings()
    except ValidationError as exc:
        # Only where and what: pydantic's own text quotes the input, which may be a secret.
        where = str(config) if config is not None else "environment"
        raise ConfigError([redact(
            f"{where}: {'.'.join(str(part) for part in error['loc']) or 'settings'}: "
            f"{error['msg']}") for error in exc.errors(include_url=False, include_input=False)
        ]) from None
    except safeyaml.YamlLimitError as exc:
        line, col = safeyaml.where(exc)
        raise ConfigError([f"{config}:{line}:{col}: {exc.problem}"]) from None
    except yaml.YAMLError as exc:  # where only: PyYAML's own text quotes the line
        line, col = safeyaml.where(exc)
        raise ConfigError([f"{config}:{line}:{col}: not valid YAML: "
                           f"{exc.__class__.__name__}"]) from None
    except safeyaml.FileTooLarge as exc:
        raise ConfigError([f"{config}:1:1: {exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{config}:1:1: not UTF-8 text"]) from None
    finally:
        _config_file.reset(token)
