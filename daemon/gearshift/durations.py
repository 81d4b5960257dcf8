"""Human durations as SREs write them in policy files: ``90s``, ``10m``, ``2h``, ``1h30m``, ``1d``.

One parser, one pattern and one formatter, so every file, request and log line speaks the
same units. ``Duration`` is the pydantic type every model uses for a length of time (policy
files, settings, provider settings): a string in those units, or a plain number of seconds.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
# At least one part, in order (days, hours and minutes whole; seconds may have a fraction).
# Written without lookarounds so JSON Schema tools (schemathesis, editors) can use it too.
_S = r"\d+(\.\d+)?s"
DURATION_PATTERN = rf"^(\d+d(\d+h)?(\d+m)?({_S})?|\d+h(\d+m)?({_S})?|\d+m({_S})?|{_S})$"
_DURATION = re.compile(DURATION_PATTERN)
_FORMS = "use a number with a unit, e.g. 90s, 10m, 2h, 1h30m, 1d"


def parse_duration(text: str) -> float:
    """Seconds in ``text``; raises ValueError naming the accepted forms."""
    stripped = text.strip() if isinstance(text, str) else ""
    if not _DURATION.fullmatch(stripped):
        raise ValueError(f"invalid duration {text!r}: {_FORMS}")
    total, number = 0.0, ""
    for char in stripped:
        if char in _UNITS:
            total += float(number) * _UNITS[char]
            number = ""
        else:
            number += char
    return total


def to_seconds(value: Any) -> float:
    """A ``Duration`` value: numbers of seconds as they are, strings parsed."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"invalid duration {value!r}: must be 0 or more seconds")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"invalid duration {value!r}: {_FORMS}, or a number of seconds")
    return parse_duration(value)


Duration = Annotated[
    float,
    BeforeValidator(to_seconds),
    WithJsonSchema({"anyOf": [
        {"type": "string", "pattern": DURATION_PATTERN, "examples": ["90s", "10m", "2h"]},
        {"type": "number", "minimum": 0, "description": "seconds"}]}),
]


def format_duration(seconds: float) -> str:
    """The shortest readable form: 45s, 10m, 1h30m, 2d3h."""
    if seconds < 60:
        return f"{seconds:g}s"
    whole = round(seconds)
    parts = []
    for unit, size in _UNITS.items():
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
