"""Credentials written into URLs (``https://admin:SECRET@host/sdk``) never leave the process.

Settings refuse them with a clear message, but the refusal itself, a log line quoting a
library's error, or an exception text may still carry the URL. ``redact`` replaces the
userinfo of anything URL-shaped (``//user:password@``) with ``***``; it runs where problems
are formatted (policy and settings errors, hence ``validate``, the log and
``/v1/status.policy_errors``) and in the log's last processor, over every string value.
"""

from __future__ import annotations

import re
from typing import Any

# "//" then userinfo (anything but the characters that end an authority or a quoted
# string) then "@": scheme-less and malformed URLs ("https//u:p@h") are caught too.
_USERINFO = re.compile(r"//[^/?#@\s'\"<>\\]*@")
_MAX_DEPTH = 4


def redact(text: str) -> str:
    """``text`` with the userinfo of every URL in it replaced by ``***``."""
    return _USERINFO.sub("//***@", text) if "@" in text else text


def redact_value(value: Any, *, depth: int = 0) -> Any:
    """``redact`` applied to a string, or to the strings inside lists, tuples and dicts."""
    if isinstance(value, str):
        return redact(value)
    if depth >= _MAX_DEPTH:
        return value
    if isinstance(value, list | tuple):
        return type(value)(redact_value(v, depth=depth + 1) for v in value)
    if isinstance(value, dict):
        return {k: redact_value(v, depth=depth + 1) for k, v in value.items()}
    return value
