"""JSON from the network, refused when it is nested deeper than any message of ours.

``json.loads`` recurses once per ``[`` or ``{``: a 60 KB body of brackets raises
RecursionError (a 500 in aiohttp, a crash anywhere that only expects ValueError), and a
body nested a few hundred deep that does parse can still exhaust whatever walks it next.
No gearshift message nests more than a few levels (a fact's ``gears`` block, a capacity
request's flat object), so the depth is checked before parsing, by a linear scan that
skips string contents and recurses into nothing.

Used by the HTTP API (capacity requests) and by the MQTT paths (facts, capacity requests).
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 32
"""Deepest nesting of arrays and objects accepted (gearshift's own messages use 3)."""

# A JSON string (escapes included; an unterminated one runs to the end, so no later
# quote starts another rescan), or one bracket: a bracket inside a string never counts.
# Possessive quantifiers: no backtracking, linear in the payload.
_TOKENS = re.compile(rb'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)|[\[\]{}]', re.DOTALL)
_OPEN = frozenset(b"[{")


class TooDeep(ValueError):
    """The document nests arrays and objects deeper than allowed."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"JSON nested deeper than {limit} levels")
        self.limit = limit


def depth(payload: bytes | str) -> int:
    """How deep arrays and objects nest in ``payload`` (0 for a bare value).

    Only brackets outside strings count; malformed JSON gets some number back and fails
    in the parser afterwards.
    """
    return _scan(payload, stop_above=None)


def check_depth(payload: bytes | str, *, max_depth: int = MAX_DEPTH) -> None:
    """TooDeep (a ValueError) when ``payload`` nests deeper than ``max_depth``.

    Stops at the first bracket past the limit: a 60 KB tower of brackets costs microseconds.
    """
    if _scan(payload, stop_above=max_depth) > max_depth:
        raise TooDeep(max_depth)


def _scan(payload: bytes | str, *, stop_above: int | None) -> int:
    data = payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else payload
    level = deepest = 0
    for match in _TOKENS.finditer(data):
        char = match.group()
        if len(char) != 1:
            continue  # a string
        if char[0] in _OPEN:
            level += 1
            if level > deepest:
                deepest = level
                if stop_above is not None and deepest > stop_above:
                    break
        else:
            level -= 1
    return deepest


def loads(payload: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` that refuses deep nesting first; every refusal is a ValueError.

    TooDeep for nesting, json.JSONDecodeError for syntax, UnicodeDecodeError for bytes that
    are not UTF-8: callers answer all of them as "bad input" with one ``except ValueError``.
    """
    check_depth(payload, max_depth=max_depth)
    try:
        return json.loads(payload)
    except RecursionError as exc:  # unreachable past the check; kept a ValueError anyway
        raise TooDeep(max_depth) from exc
