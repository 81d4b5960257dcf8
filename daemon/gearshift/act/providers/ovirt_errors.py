"""How the oVirt driver's failures map onto gearshift's error kinds.

The oVirt SDK raises ``sdk.Error`` with the engine's fault (reason and detail) and an HTTP
code; the engine says "quota" or "no host" only in words, so those are matched on the
text. ``classify`` turns each failure into the one ``ProviderError`` subclass that tells
the guard what to do, with every known secret value (password, SSO token) redacted.
"""

from __future__ import annotations

from collections.abc import Iterable

import ovirtsdk4 as sdk

from gearshift.act.providers.common import redact
from gearshift.errors import (
    CapacityUnavailable,
    ConfigError,
    NotFound,
    PermanentError,
    ProviderError,
    QuotaExceeded,
    TransientError,
)

_CAPACITY = ("no host that satisfies", "not enough", "insufficient")
_QUOTA = ("quota has no sufficient", "quota limit", "quota exceeded")
_BUSY = ("being copied", "is locked", "try again")


def classify(exc: BaseException, what: str, *, provider: str,
             secrets: Iterable[str | None]) -> ProviderError:
    """One exception from the SDK or the network, as gearshift's error type."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, ConfigError):
        return PermanentError(provider, f"{what}: {exc}")
    detail = ""
    if isinstance(exc, sdk.Error):
        fault = getattr(exc, "fault", None)
        detail = (getattr(fault, "detail", None) or getattr(fault, "reason", None)
                  or str(exc))
    detail = redact(str(detail or exc), secrets).strip("[]")
    text = f"{what}: {detail}" if detail else f"{what}: {type(exc).__name__}"
    low = detail.lower()
    if isinstance(exc, sdk.ConnectionError | sdk.TimeoutError):
        return TransientError(provider, text)
    if isinstance(exc, sdk.AuthError):
        return PermanentError(provider, f"{what}: the engine refused the credentials or "
                                        f"permissions")
    if isinstance(exc, sdk.NotFoundError):
        return NotFound(provider, text)
    if isinstance(exc, sdk.Error):
        code = getattr(exc, "code", None)
        if any(word in low for word in _QUOTA):
            return QuotaExceeded(provider, text)
        if any(word in low for word in _CAPACITY):
            return CapacityUnavailable(provider, text)
        if code is None or code >= 500 or any(word in low for word in _BUSY):
            return TransientError(provider, text)
        return PermanentError(provider, text)
    if isinstance(exc, OSError):
        return TransientError(provider, text)
    return PermanentError(provider, text)
