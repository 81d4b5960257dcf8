"""The oVirt engine's SSO token, fetched and revoked with aiohttp rather than by the SDK.

The SDK's own SSO requests carry no timeout, so a hung engine would pin a provider thread
for ever; these calls share the driver's request timeout. No SDK import here: the driver
(``ovirt.py``) and its connection to the engine (``ovirt_engine.py``, which calls these)
are the modules that touch ``ovirtsdk4``.
"""

from __future__ import annotations

import ssl

import aiohttp

from gearshift.act.providers.kind_settings import OvirtSettings
from gearshift.errors import PermanentError, TransientError


def sso_session(settings: OvirtSettings) -> aiohttp.ClientSession:
    """A session that verifies the engine as ``settings`` say, with the request timeout."""
    context: ssl.SSLContext | bool = True
    if settings.insecure:
        context = False
    elif settings.ca_file:
        context = ssl.create_default_context(cafile=str(settings.ca_file))
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=context),
        timeout=aiohttp.ClientTimeout(total=settings.request_timeout))


async def fetch_token(session: aiohttp.ClientSession, *, provider: str, url: str,
                      form: dict[str, str], timeout: float) -> str:
    """An access token for ``form``'s credentials; engine trouble is transient, a refusal
    permanent."""
    try:
        async with session.post(url, data=form,
                                headers={"Accept": "application/json"}) as response:
            if response.status >= 500:
                raise TransientError(provider, f"SSO answered {response.status}")
            body = await response.json(content_type=None)
    except TimeoutError as exc:
        raise TransientError(provider, f"SSO did not answer within {timeout:g}s") from exc
    except (aiohttp.ClientError, ValueError) as exc:
        raise TransientError(provider, f"SSO request failed: {type(exc).__name__}") from exc
    if isinstance(body, list):
        body = body[0] if body else {}
    if not isinstance(body, dict) or "error" in body or "access_token" not in body:
        code = body.get("error_code", "error") if isinstance(body, dict) else "error"
        raise PermanentError(provider, f"the engine's SSO refused the credentials ({code})")
    return str(body["access_token"])


async def revoke_token(session: aiohttp.ClientSession, *, url: str, token: str) -> None:
    """Log ``token`` out; best effort (the engine expires it anyway)."""
    try:
        async with session.post(url, data={"token": token}):
            pass
    except (aiohttp.ClientError, TimeoutError):
        pass
