"""Where the vSphere driver connects, and which inventory object each setting names.

``connect_options`` turns the provider's settings into ``SmartConnect``'s arguments (URL
parts, TLS, the socket timeout). ``one_named`` and ``one_datacenter`` pick the single
object a name means from a property-collector read, and say plainly what is missing or
ambiguous: such a mistake is permanent, and the operator has to fix the settings.

No pyVmomi here: the driver (``vsphere.py``) and ``vsphere_places`` make the SDK calls;
these helpers see plain ``(object, properties)`` pairs.
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import urlsplit

from gearshift.act.providers.kind_settings import VSphereSettings
from gearshift.errors import PermanentError

Found = list[tuple[Any, dict[str, Any]]]  # (managed object, its properties by path)


def connect_options(settings: VSphereSettings) -> dict[str, Any]:
    """``SmartConnect``'s keyword arguments for ``settings``, but the credentials."""
    parts = urlsplit(settings.url)
    context = None
    if not settings.insecure:
        context = ssl.create_default_context(
            cafile=str(settings.ca_file) if settings.ca_file else None)
    return {"protocol": parts.scheme, "host": parts.hostname,
            "port": parts.port or (443 if parts.scheme == "https" else 80),
            "path": parts.path or "/sdk", "sslContext": context,
            "disableSslCertValidation": settings.insecure,
            "httpConnectionTimeout": settings.request_timeout}


def one_datacenter(found: Found, wanted: str | None, *, provider: str) -> Any:
    """The datacenter named ``wanted``, or the only one when ``wanted`` is None."""
    matches = [o for o, p in found if wanted is None or p.get("name") == wanted]
    if len(matches) != 1:
        names = sorted(p.get("name", "?") for _, p in found)
        raise PermanentError(provider, (f"datacenter {wanted!r} not found" if wanted else
                                        "several datacenters: set settings.datacenter")
                             + f" (there are: {', '.join(names)})")
    return matches[0]


def one_named(found: Found, name: str, *, provider: str, what: str) -> Any:
    """The one object called ``name``; none or several is a ``PermanentError``."""
    matches = [o for o, p in found if p.get("name") == name]
    if not matches:
        raise PermanentError(provider, f"{what} {name!r} not found")
    if len(matches) > 1:
        raise PermanentError(provider, f"{what} {name!r} is ambiguous: "
                                       f"{len(matches)} objects have that name")
    return matches[0]
