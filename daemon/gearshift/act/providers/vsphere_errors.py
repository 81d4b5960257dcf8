"""How the vSphere driver's failures map onto gearshift's error kinds.

pyVmomi raises SOAP faults (``vim.fault.*``, ``vmodl.fault.*``), and the network raises
socket, HTTP and TLS errors; ``classify`` turns each into the one ``ProviderError``
subclass that tells the guard what to do (retry, spill, back off, open the breaker, or
treat the machine as gone). Messages carry the fault's name and its text with every known
secret value redacted.
"""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Iterable
from typing import Any

from pyVmomi import vim as _vim
from pyVmomi import vmodl as _vmodl

from gearshift.act.providers.common import redact
from gearshift.errors import (
    CapacityUnavailable,
    ConfigError,
    NotFound,
    PermanentError,
    ProviderError,
    TransientError,
)

# pyVmomi's classes are generated at import time and untyped: treat them as Any here.
vim: Any = _vim
vmodl: Any = _vmodl


def classify(exc: BaseException, what: str, *, provider: str,
             secrets: Iterable[str | None]) -> ProviderError:
    """One exception from pyvmomi or the network, as gearshift's error type."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, ConfigError):
        return PermanentError(provider, f"{what}: {exc}")
    name = type(exc).__name__
    text = redact(str(getattr(exc, "msg", "") or exc), secrets)
    detail = f"{what}: {name}" + (f": {text}" if text and text != name else "")
    if isinstance(exc, vmodl.fault.ManagedObjectNotFound):
        return NotFound(provider, detail)
    if isinstance(exc, vim.fault.InvalidLogin | vim.fault.NoPermission
                  | vim.fault.NotAuthenticated):
        return PermanentError(provider, f"{what}: vCenter refused the credentials or "
                                        f"permissions ({name})")
    if isinstance(exc, vim.fault.InsufficientResourcesFault | vim.fault.NoDiskSpace
                  | vim.fault.NoCompatibleHost):
        return CapacityUnavailable(provider, detail)
    if isinstance(exc, vim.fault.TaskInProgress | vim.fault.Timedout
                  | vmodl.fault.HostCommunication | vmodl.fault.SystemError
                  | vmodl.fault.RequestCanceled | vim.fault.HostConnectFault):
        return TransientError(provider, detail)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return PermanentError(provider, f"{what}: the vCenter TLS certificate is not "
                                        f"trusted (set ca_file, or insecure for a lab)")
    if isinstance(exc, OSError | http.client.HTTPException | TimeoutError):
        return TransientError(provider, detail)
    return PermanentError(provider, detail)
