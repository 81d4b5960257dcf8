"""Message authentication between the daemon and node agents: who said this, and when.

A broker ACL says who may publish where, but only if the broker is configured right, and
anyone with publish rights on a misconfigured broker could otherwise speak for any node.
So messages carry their own proof, independent of the broker:

* The daemon holds a **keyring** of master keys, each with an id (``kid``), newest first.
* Each node gets its **node key**: ``HMAC-SHA256(master, "gearshift node key/1" || identity)``
  (``gearshift keys node IDENTITY``). The daemon derives it again from the identity in the
  topic; it keeps no per-node secret, and a node's key is useless for any other identity.
* A signed message is a JSON **envelope** around the original payload::

      {"schema": "gearshift.signed/1", "kid": "2026-12", "ts": 1796000000.0,
       "sig": "<base64 HMAC>", "body": "<the original payload, as a string>"}

  The MAC covers a purpose (``facts``, ``command``, ``reply``), the MQTT topic, ``ts`` and
  the body, so a signature cannot be moved to another node, another topic, another kind
  of message or another time.

Rotation: add a new master key to the keyring (the daemon accepts both), hand nodes
their new node keys (an agent's key file may hold several; it signs with the first),
then drop the old master key. HMAC (not per-node public keys) keeps the daemon's side a
single secret file and the verification a microsecond; the price is that the daemon
could forge a node's facts, which it has no reason to do.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

ENVELOPE = "gearshift.signed/1"
Purpose = Literal["facts", "status", "command", "reply"]
KID = r"[A-Za-z0-9._-]{1,32}"
MAX_KEYS = 16


class SignatureError(Exception):
    """A message that cannot be trusted; ``reason`` is a short metric label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    schema_: Literal["gearshift.signed/1"] = Field(alias="schema")
    kid: str = Field(pattern=rf"^{KID}$")  # Rust regex: $ is the very end
    ts: float
    sig: str = Field(min_length=40, max_length=64)
    body: str


@dataclass(frozen=True)
class Signed:
    """A verified message: its body, the key that signed it and when it says it was made."""

    body: bytes
    kid: str
    ts: float


def derive_node_key(master: bytes, identity: str) -> bytes:
    return hmac.new(master, b"gearshift node key/1\0" + identity.encode(), hashlib.sha256).digest()


def _mac(key: bytes, *, purpose: Purpose, topic: str, ts: float, body: bytes) -> bytes:
    head = f"gearshift/1\0{purpose}\0{topic}\0{ts!r}\0".encode()
    return hmac.new(key, head + body, hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def seal(body: bytes, *, key: bytes, kid: str, purpose: Purpose, topic: str, ts: float) -> bytes:
    """``body`` wrapped in a signed envelope (``body`` must be UTF-8 text, e.g. JSON)."""
    mac = _mac(key, purpose=purpose, topic=topic, ts=ts, body=body)
    return json.dumps({"schema": ENVELOPE, "kid": kid, "ts": ts, "sig": _b64(mac),
                       "body": body.decode()}, separators=(",", ":")).encode()


def is_envelope(payload: bytes) -> bool:
    return payload[:64].find(b'"gearshift.signed/1"') >= 0


def open_envelope(payload: bytes, *, keys: dict[str, bytes], purpose: Purpose,
                  topic: str) -> Signed:
    """The verified body of ``payload``; ``keys`` maps kid to the key to check with."""
    try:
        envelope = Envelope.model_validate_json(payload)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise SignatureError("bad_envelope", f"{where}: {first['msg']}"[:120]) from None
    key = keys.get(envelope.kid)
    if key is None:
        raise SignatureError("unknown_key", f"kid {envelope.kid!r} is not in the keyring")
    body = envelope.body.encode()
    try:
        given = base64.b64decode(envelope.sig, validate=True)
    except ValueError:
        raise SignatureError("bad_signature", "sig is not base64") from None
    wanted = _mac(key, purpose=purpose, topic=topic, ts=envelope.ts, body=body)
    if not hmac.compare_digest(given, wanted):
        raise SignatureError("bad_signature", f"signed with kid {envelope.kid!r}")
    return Signed(body=body, kid=envelope.kid, ts=envelope.ts)


# -- key files -------------------------------------------------------------------------
def _read_keys(path: Path, *, what: str) -> list[tuple[str, bytes]]:
    """``kid:base64`` lines (``#`` comments), newest first; refuses a readable-by-all file."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read {what} {path}: {exc.strerror}") from None
    if mode & 0o004:
        raise ValueError(f"{what} {path} is readable by every user: chmod 600 it")
    keys: list[tuple[str, bytes]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        kid, sep, encoded = line.partition(":")
        if not sep or not re.fullmatch(KID, kid):
            raise ValueError(f"{path}:{number}: expected KID:BASE64 (KID from [A-Za-z0-9._-])")
        try:
            key = base64.b64decode(encoded.strip(), validate=True)
        except ValueError:
            raise ValueError(f"{path}:{number}: key {kid!r} is not base64") from None
        if len(key) < 32:
            raise ValueError(f"{path}:{number}: key {kid!r} is {len(key)} bytes; at least 32")
        if any(kid == k for k, _ in keys):
            raise ValueError(f"{path}:{number}: key id {kid!r} appears twice")
        keys.append((kid, key))
    if not keys:
        raise ValueError(f"{what} {path} holds no key")
    if len(keys) > MAX_KEYS:
        raise ValueError(f"{what} {path} holds {len(keys)} keys; at most {MAX_KEYS}")
    return keys


@dataclass(frozen=True)
class Keyring:
    """The daemon's master keys, newest (the one it signs with) first."""

    keys: tuple[tuple[str, bytes], ...]

    @classmethod
    def load(cls, path: Path) -> Keyring:
        return cls(tuple(_read_keys(path, what="keyring")))

    def node_keys(self, identity: str) -> dict[str, bytes]:
        """Every key ``identity`` may sign with, by kid."""
        return {kid: derive_node_key(master, identity) for kid, master in self.keys}

    def node_key(self, identity: str) -> tuple[str, bytes]:
        """The key the daemon signs commands to ``identity`` with (the newest)."""
        kid, master = self.keys[0]
        return kid, derive_node_key(master, identity)


@dataclass(frozen=True)
class NodeKeys:
    """One node's keys (an agent's key file), newest (the one it signs with) first."""

    keys: tuple[tuple[str, bytes], ...]

    @classmethod
    def load(cls, path: Path) -> NodeKeys:
        return cls(tuple(_read_keys(path, what="node key file")))

    def by_kid(self) -> dict[str, bytes]:
        return dict(self.keys)

    @property
    def current(self) -> tuple[str, bytes]:
        return self.keys[0]


def new_master_line(kid: str) -> str:
    return f"{kid}:{_b64(secrets.token_bytes(32))}"


def node_key_lines(keyring: Keyring, identity: str) -> list[str]:
    return [f"{kid}:{_b64(derive_node_key(master, identity))}" for kid, master in keyring.keys]


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a new file only its owner can read (never over an existing one)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
