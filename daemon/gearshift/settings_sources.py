"""Settings of where node facts come from besides MQTT (MCollective) and what a message must
prove before it counts (trust): the two largest sections, kept apart from settings.py.

``gearshift.settings`` re-exports both, so callers import them from there as before.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, model_validator

from gearshift.errors import ConfigError
from gearshift.settings_base import Seconds, Section, TlsSettings, read_secret
from gearshift.wire.signing import Keyring


class McollectiveSettings(Section):
    """Read node facts from the fleet's own mcollectived, over ActiveMQ's STOMP connector."""

    enabled: bool = Field(False, description=(
        "Read node facts from MCollective (rpcutil on every node) instead of MQTT: an "
        "existing OpenShift v2 fleet needs no gearshift agent."))
    brokers: list[Annotated[str, Field(pattern=r"^[\w.\-]+:\d{1,5}$")]] = Field(
        default_factory=lambda: ["127.0.0.1:61613"], min_length=1, description=(
            "ActiveMQ STOMP connectors as HOST:PORT, a failover pool like "
            "plugin.activemq.pool.N (61613 plain, 61614 usual with TLS)."))
    username: str | None = Field(None, description="STOMP login (plugin.activemq.pool.N.user).")
    password: SecretStr | None = Field(None, description="STOMP passcode (prefer password_file).")
    password_file: Path | None = Field(None, description="File holding the STOMP passcode.")
    tls: TlsSettings | None = Field(None, description="Connect with TLS when set.")
    heartbeat: Seconds = Field(30.0, ge=1, description=(
        "STOMP heart-beat interval both ways; a broker silent for 3 of them is lost."))
    collective: str = Field("mcollective", pattern=r"^[\w.\-]+$",
                            description="The collective to ask (main_collective).")
    identity: str = Field("gearshift", pattern=r"^[\w.\-]+$", description=(
        "Our sender id; the reply queue is /queue/COLLECTIVE.reply.IDENTITY_RANDOM."))
    psk: SecretStr | None = Field(None, description="The psk plugin's key (prefer psk_file).")
    psk_file: Path | None = Field(None, description=(
        "File holding plugin.psk, readable by the daemon alone; never logged."))
    interval: Seconds = Field(60.0, gt=0, description=(
        "Ask every node for its facts this often (OpenShift rewrites them every minute)."))
    jitter: float = Field(0.1, ge=0, le=0.5, description=(
        "Each round starts up to this share of the interval early or late."))
    timeout: Seconds = Field(5.0, gt=0, description="Replies are collected for this long.")
    ttl: int = Field(60, ge=5, le=3600, description=(
        "Requests are valid this long (mcollectived refuses older ones); replies whose "
        "msgtime is further than this from our clock are refused."))
    discovery_interval: Seconds = Field(120.0, gt=0, description=(
        "poll directed: discover nodes (discovery agent ping with the filters) this often."))
    poll: Literal["broadcast", "directed"] = Field("broadcast", description=(
        "broadcast: one request a round to the agent's topic with the filters, answered "
        "by every node that matches (new nodes show within one interval); directed: one "
        "request per node found by discovery (mc_identity), and only those may answer "
        "(new nodes show at the next discovery)."))
    facts_filter: dict[str, str] = Field(default_factory=dict, description=(
        "Only nodes whose facts match all of these (e.g. {node_profile: small})."))
    identities: list[str] = Field(default_factory=list, description=(
        "Only these identities (/regex/ allowed, as mco -I); empty: every node."))
    max_reply: int = Field(262144, ge=4096, le=16 << 20, description=(
        "Larger replies are refused (bytes)."))

    @model_validator(mode="after")
    def _one_source_each(self) -> McollectiveSettings:
        if self.password is not None and self.password_file is not None:
            raise ValueError("set password or password_file, not both")
        if self.psk is not None and self.psk_file is not None:
            raise ValueError("set psk or psk_file, not both")
        if self.enabled and self.psk is None and self.psk_file is None:
            raise ValueError("enabled needs psk_file (or psk)")
        if self.timeout >= self.interval:
            raise ValueError("timeout must be shorter than interval")
        for pattern in self.identities:
            if len(pattern) > 2 and pattern[0] == pattern[-1] == "/":
                try:
                    re.compile(pattern[1:-1])
                except re.error as exc:
                    raise ValueError(f"identities: {pattern!r} is not a regex: {exc}") from None
        return self

    def secret(self) -> SecretStr | None:
        return read_secret(self.password, self.password_file, what="STOMP password")

    def servers(self) -> list[tuple[str, int]]:
        return [(host, int(port)) for host, port in (b.rsplit(":", 1) for b in self.brokers)]

    def secret_psk(self) -> SecretStr:
        """The psk; ``ConfigError`` (naming the file, never the key) when unusable."""
        try:
            psk = read_secret(self.psk, self.psk_file, what="MCollective psk")
            self.secret()
        except ValueError as exc:
            raise ConfigError([f"mcollective: {exc}"]) from None
        if psk is None or not psk.get_secret_value():
            raise ConfigError([f"mcollective: the psk is empty ({self.psk_file or 'psk'})"])
        return psk


class TrustSettings(Section):
    """What a message must prove before it counts, and how much of it gearshift keeps."""

    facts: Literal["accept_unsigned", "require_signed"] = Field("accept_unsigned", description=(
        "require_signed: node facts must be signed with the node's key (see `gearshift keys`); "
        "accept_unsigned: unsigned facts are taken and flagged (for migrating a fleet), a "
        "signed one with a bad signature is refused either way."))
    keyring_file: Path | None = Field(None, description=(
        "The daemon's master keys (`gearshift keys new`): checks node facts, signs agent "
        "commands. Without it no message can be checked and commands go unsigned."))
    max_clock_skew: Seconds = Field(10.0, ge=0, le=120, description=(
        "Facts stamped further ahead of our clock than this are refused: stored, they would "
        "pin the node and make its real facts look out of order."))
    max_gears: int = Field(10_000, ge=1, le=1_000_000, description=(
        "A node claiming more gears (or max_active_gears) than this has bad facts."))
    max_nodes: int = Field(100_000, ge=1, description=(
        "Facts of further new identities are refused once this many nodes are known (about "
        "5 kB each: 100 000 stay well inside the unit's MemoryHigh)."))
    max_unvouched: int = Field(1_000, ge=0, description=(
        "Once the platform lists its district members, facts of further new identities "
        "that are neither ours nor members are refused past this many held."))
    forget_after: Seconds = Field(3600.0, gt=0, description=(
        "A node that is not ours and has not been heard from for this long is forgotten "
        "(it stops counting against size.max and freezing scale-in)."))
    vouch_interval: Seconds = Field(60.0, gt=0, description=(
        "Ask the platform which nodes are district members this often; a node that is "
        "neither ours nor a member never counts for a pool."))
    dispute_hold: Seconds = Field(1800.0, ge=0, description=(
        "A node whose facts the platform contradicted is held unknown this long."))

    def keyring(self) -> Keyring | None:
        try:
            return Keyring.load(self.keyring_file) if self.keyring_file is not None else None
        except ValueError as exc:
            raise ConfigError([f"trust.keyring_file: {exc}"]) from None
