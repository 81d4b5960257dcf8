"""MCollective 2.x messages as the ``psk`` security plugin writes and checks them.

A request (``Security::Psk#encoderequest``, ``Security::Base#create_request``) is a Marshal
hash ``{:body, :senderid, :requestid, :filter, :collective, :agent, :callerid, :ttl,
:msgtime, :hash}`` whose ``:body`` is the Marshal of the agent's message (an RPC request
``{:agent, :action, :caller, :data}``, or the string ``"ping"`` for the discovery agent)
and whose ``:hash`` is ``MD5.hexdigest(body + psk)``. A reply (``encodereply``,
``create_reply``) is ``{:senderid, :requestid, :senderagent, :msgtime, :body, :hash}``
with the same digest over its body.

The PSK digest proves only that the sender knows the shared key (every node does), not
which node sent it; ``decode_reply`` therefore also checks what we can: the request id
is one we sent, the sender is a node we asked, and ``msgtime`` is within ``ttl`` of our
clock (both ways: a reply from the future is clock skew too). Every refusal is a
``BadMessage`` whose ``reason`` is a metric label. Digests are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gearshift.errors import BadMessage
from gearshift.observe.mcollective.marshal import MarshalError, RubyValue, Symbol, dumps, loads

# mcollectived's ``Security::Base#valid_callerid?``: /^[\w]+=[\w\.\-]+$/
CALLER_PREFIX = "gearshift"


def digest(body: bytes, psk: bytes) -> str:
    """``Digest::MD5.hexdigest(body.to_s + psk)``: the psk plugin's message hash."""
    return hashlib.md5(body + psk, usedforsecurity=False).hexdigest()


def fact_filter(fact: str, value: str, operator: str = "==") -> dict[Symbol, str]:
    """One entry of a filter's ``"fact"`` list, as ``Util.parse_fact_string`` makes it."""
    return {Symbol("fact"): fact, Symbol("value"): value, Symbol("operator"): operator}


def make_filter(*, facts: Mapping[str, str] = {}, identities: Sequence[str] = (),
                agents: Sequence[str] = ()) -> dict[str, list[Any]]:
    """A request filter (``Util.empty_filter`` plus what is given); all must match."""
    return {"fact": [fact_filter(k, v) for k, v in facts.items()], "cf_class": [],
            "agent": list(agents), "identity": list(identities), "compound": []}


def rpc_body(*, agent: str, action: str, data: Mapping[str, Any], caller: str) -> bytes:
    """The Marshal'd body of an RPC request (``RPC::Client#new_request``)."""
    return dumps({Symbol("agent"): agent, Symbol("action"): action, Symbol("caller"): caller,
                  Symbol("data"): {Symbol(k): v for k, v in data.items()}})


def encode_request(body: bytes, *, psk: bytes, sender: str, request_id: str,
                   filter_: Mapping[str, Any], collective: str, agent: str, caller: str,
                   ttl: int, now: float) -> bytes:
    """The whole request payload, as ``Psk#encoderequest`` dumps it."""
    return dumps({
        Symbol("body"): body, Symbol("senderid"): sender, Symbol("requestid"): request_id,
        Symbol("filter"): dict(filter_), Symbol("collective"): collective,
        Symbol("agent"): agent, Symbol("callerid"): caller, Symbol("ttl"): ttl,
        Symbol("msgtime"): int(now), Symbol("hash"): digest(body, psk)})


class IdentityFilter:
    """``identity in f``: does it match one of mco's identity filters (exact or /regex/)?
    Who may answer a broadcast when identities are configured."""

    def __init__(self, patterns: Collection[str]) -> None:
        self.exact = {p for p in patterns if not (len(p) > 2 and p[0] == p[-1] == "/")}
        self.regexes = [re.compile(p[1:-1]) for p in patterns if p not in self.exact]

    def __contains__(self, identity: object) -> bool:
        return isinstance(identity, str) and (
            identity in self.exact or any(r.search(identity) for r in self.regexes))


class Envelope(BaseModel):
    """A reply's outer hash, after the restricted Marshal decoder."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    senderid: str = Field(min_length=1, max_length=255)
    requestid: str = Field(min_length=1, max_length=64)
    senderagent: str = Field(max_length=64)
    msgtime: int
    body: bytes
    hash: str = Field(min_length=32, max_length=32)


class Reply(BaseModel):
    """A checked reply: who sent it, to which request, and its decoded body."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    sender: str
    request_id: str
    agent: str
    msgtime: int
    body: Any  # RubyValue: plain data only (see marshal.py)


def _plain_keys(value: RubyValue) -> dict[str, RubyValue]:
    if not isinstance(value, dict):
        raise BadMessage("not_a_hash", type(value).__name__)
    return {str(k): v for k, v in value.items() if isinstance(k, str)}


def decode_reply(payload: bytes, *, psk: bytes, now: float, ttl: float,
                 asked: Mapping[str, Any], max_size: int) -> Reply:
    """Check and decode one reply; ``asked`` maps our open request ids to who was asked
    (a container of identities, or None when anyone matching the filter may answer)."""
    if len(payload) > max_size:
        raise BadMessage("too_large", f"{len(payload)} bytes > {max_size}")
    try:
        outer = _plain_keys(loads(payload, max_size=max_size))
        envelope = Envelope.model_validate(outer)
    except MarshalError as exc:
        raise BadMessage(f"marshal_{exc.reason}", exc.detail[:120]) from exc
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise BadMessage("bad_envelope", f"{'.'.join(map(str, first['loc']))}: "
                                         f"{first['msg']}") from exc
    if envelope.requestid not in asked:
        raise BadMessage("unknown_request", envelope.requestid[:64])
    if not hmac.compare_digest(digest(envelope.body, psk), envelope.hash):
        raise BadMessage("bad_digest", f"from {envelope.senderid[:80]!r}")
    identities = asked[envelope.requestid]
    if identities is not None and envelope.senderid not in identities:
        raise BadMessage("identity_not_asked", envelope.senderid[:80])
    age = now - envelope.msgtime
    if age > ttl:
        raise BadMessage("expired", f"msgtime is {age:.0f}s old (ttl {ttl:g}s)")
    if -age > ttl:
        raise BadMessage("clock_skew", f"msgtime is {-age:.0f}s ahead of ours")
    try:
        body = loads(envelope.body, max_size=max_size)
    except MarshalError as exc:
        raise BadMessage(f"marshal_{exc.reason}", exc.detail[:120]) from exc
    return Reply(sender=envelope.senderid, request_id=envelope.requestid,
                 agent=envelope.senderagent, msgtime=envelope.msgtime, body=body)


def rpc_data(reply: Reply) -> dict[str, RubyValue]:
    """The ``:data`` of an RPC reply (``{:statuscode, :statusmsg, :data}``), or refuse it."""
    body = _plain_keys(reply.body)
    status = body.get("statuscode")
    if status != 0:
        message = body.get("statusmsg")
        raise BadMessage("rpc_failed", f"{reply.sender[:80]}: status {status!r}: "
                                       f"{str(message)[:120]}")
    return _plain_keys(body.get("data"))
