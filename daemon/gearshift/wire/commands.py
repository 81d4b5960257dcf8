"""The command protocol's two messages, typed: a request from the daemon, an agent's reply.

``act.platform.agent`` (the daemon's side) builds ``CommandRequest`` and reads
``CommandReply``; ``gearshift.agent`` reads requests (its own, stricter parsing: see
``agent.commands`` and ``agent.gate``) and builds ``CommandReply``. Both sides share these
so the field names cannot drift apart. The JSON forms are documented in ``gearshift.agent``;
requests and replies travel on the topics in ``wire.topics``, signed with
``wire.signing`` when a keyring is configured.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True)
class CommandRequest:
    """Run the agent's template ``command`` with ``args``.

    ``target`` and ``expires_at`` are set when the request is signed, so an agent can
    refuse a request meant for another node or sent too long ago.
    """

    command: str
    args: Mapping[str, str]
    request_id: str
    target: str | None = None
    expires_at: float | None = None

    def to_json(self) -> bytes:
        body: dict[str, Any] = {"command": self.command, "args": dict(self.args),
                                "request_id": self.request_id}
        if self.target is not None:
            body["target"] = self.target
        if self.expires_at is not None:
            body["expires_at"] = self.expires_at
        return json.dumps(body).encode()


@dataclass(frozen=True, kw_only=True)
class CommandReply:
    """What an agent did with a request: ``ok`` only when the command ran and exited 0;
    ``exit_code`` is None when it never ran or was killed at its timeout."""

    request_id: str | None
    command: str
    ok: bool = False
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "command": self.command, "ok": self.ok,
                "exit_code": self.exit_code, "stdout": self.stdout, "stderr": self.stderr,
                "error": self.error}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CommandReply:
        """The reply in a decoded JSON object; ``ValueError`` when ``ok`` is not a bool or
        ``exit_code`` neither an integer nor null. Missing text fields are empty."""
        ok = data.get("ok")
        code = data.get("exit_code")
        if not isinstance(ok, bool) or (code is not None and not isinstance(code, int)):
            raise ValueError("malformed reply")
        request_id = data.get("request_id")
        error = data.get("error")
        return cls(request_id=request_id if isinstance(request_id, str) else None,
                   command=str(data.get("command") or ""), ok=ok, exit_code=code,
                   stdout=str(data.get("stdout") or ""), stderr=str(data.get("stderr") or ""),
                   error=str(error) if error else None)
