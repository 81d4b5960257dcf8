"""Who may make this agent run a command: only the daemon, signed, fresh, once, to us.

Anyone with publish rights on the broker can send to ``nodes/{identity}/command``; the
allowlist bounds *what* runs, not *who* asks. So a request must come in a signed envelope
(``gearshift.wire.signing``, purpose ``command``) made with this node's key, which only this
node and the daemon (from its master key) hold, and its body must name this node as
``target``, carry an ``expires_at`` no further ahead than ``MAX_TTL``, and a
``request_id`` not seen before it expires. Anything else is refused with the reason in
the reply and the log. Replies are signed the same way (purpose ``reply``) so the daemon
knows they are this node's.

Without a key file every command is refused, unless ``allow_unsigned_commands`` is set
for a migration (and then the agent says so in every log line it refuses nothing for).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from gearshift import jsonlimits
from gearshift.errors import CommandRefused
from gearshift.wire.signing import NodeKeys, SignatureError, is_envelope, open_envelope, seal

MAX_TTL = 3600.0  # a command may be valid for at most an hour (the longest move timeout)
MAX_SKEW = 30.0  # tolerated clock difference when a command says when it was signed
MAX_REMEMBERED = 10_000


class CommandGate:
    def __init__(self, *, identity: str, command_topic: str, keys: NodeKeys | None,
                 allow_unsigned: bool = False,
                 clock: Callable[[], float] = time.time) -> None:
        self.identity = identity
        self.command_topic = command_topic
        self.keys = keys
        self.allow_unsigned = allow_unsigned
        self.clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()  # request_id -> expires_at

    def admit(self, payload: bytes) -> bytes:
        """The request inside ``payload`` once it has proved itself; CommandRefused if not."""
        if not is_envelope(payload):
            if self.keys is None and self.allow_unsigned:
                return payload
            raise CommandRefused("unsigned command refused" + (
                "" if self.keys is not None else ": this agent has no key_file"))
        if self.keys is None:
            raise CommandRefused("signed command refused: this agent has no key_file")
        try:
            signed = open_envelope(payload, keys=self.keys.by_kid(), purpose="command",
                                   topic=self.command_topic)
        except SignatureError as exc:
            raise CommandRefused(f"command refused: {exc}") from None
        try:
            body = jsonlimits.loads(signed.body)
        except (ValueError, RecursionError):
            raise CommandRefused("command refused: the signed body is not JSON") from None
        if not isinstance(body, dict):
            raise CommandRefused("command refused: the signed body is not an object")
        request_id = body.get("request_id")
        if body.get("target") != self.identity:
            raise CommandRefused(f"command refused: addressed to "
                                 f"{str(body.get('target'))[:80]!r}, not this node",
                                 request_id=request_id if isinstance(request_id, str) else None)
        now = self.clock()
        expires = body.get("expires_at")
        if not isinstance(expires, int | float) or isinstance(expires, bool):
            raise CommandRefused("command refused: no expires_at")
        if expires <= now:
            raise CommandRefused(f"command refused: expired {now - expires:.0f}s ago")
        if expires > now + MAX_TTL + MAX_SKEW or signed.ts > now + MAX_SKEW:
            raise CommandRefused("command refused: valid too far ahead (check the clocks)")
        if not isinstance(request_id, str) or not request_id:
            raise CommandRefused("command refused: no request_id")
        self._forget(now)
        if request_id in self._seen:
            raise CommandRefused("command refused: replayed request_id", request_id=request_id)
        self._seen[request_id] = float(expires)
        while len(self._seen) > MAX_REMEMBERED:
            self._seen.popitem(last=False)
        return signed.body

    def _forget(self, now: float) -> None:
        for request_id in [r for r, until in self._seen.items() if until <= now]:
            del self._seen[request_id]

    def seal_reply(self, reply: bytes, *, topic: str) -> bytes:
        if self.keys is None:
            return reply
        kid, key = self.keys.current
        return seal(reply, key=key, kid=kid, purpose="reply", topic=topic, ts=self.clock())
