"""The JSON-over-HTTP client the bare-metal provider speaks Redfish and Foreman with.

Basic auth from plain or secret credentials, every request bounded by a timeout, and
answers turned into gearshift's error types (401/403 and TLS failures are permanent;
408, 429, 5xx and unreachable are transient), with secrets blanked out of messages.
"""

from __future__ import annotations

import base64
import json
import ssl
from pathlib import Path
from typing import Any

import aiohttp

from gearshift.act.providers.common import SecretRef, plain_or_secret, redact, reveal
from gearshift.act.providers.kind_settings import Credentials
from gearshift.errors import ConfigError, PermanentError, ProviderError, TransientError


def tls_context(insecure: bool, ca_file: Path | None) -> ssl.SSLContext | bool:
    if insecure:
        return False
    if ca_file is not None:
        return ssl.create_default_context(cafile=str(ca_file))
    return True


class Rest:
    """A small JSON-over-HTTP client with basic auth and gearshift's error types."""

    def __init__(self, provider: str, *, what: str, username: str | SecretRef | None,
                 password: SecretRef | None, tls: ssl.SSLContext | bool, timeout: float) -> None:
        self.provider = provider
        self.what = what
        self.username = username
        self.password = password
        self.tls = tls
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def secrets(self) -> list[str | None]:
        try:
            return [reveal(self.username),
                    self.password.get().get_secret_value() if self.password else None]
        except ConfigError:
            return []

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.tls),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"Accept": "application/json"})
        return self._session

    async def request(self, method: str, url: str, *, what: str,
                      body: dict[str, Any] | None = None) -> Any:
        headers = {}
        if self.password is not None:
            try:
                pair = f"{reveal(self.username) or ''}:{self.password.get().get_secret_value()}"
            except ConfigError as exc:
                raise PermanentError(self.provider, f"{what}: {exc}") from None
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        try:
            async with self._http().request(method, url, json=body,
                                            headers=headers) as response:
                text = await response.text()
                status = response.status
        except TimeoutError as exc:
            raise TransientError(self.provider, f"{what}: {self.what} did not answer within "
                                                f"{self.timeout:g}s") from exc
        except aiohttp.ClientSSLError as exc:
            raise PermanentError(self.provider, f"{what}: TLS to the {self.what} failed "
                                                f"({type(exc).__name__}; set ca_file)") from exc
        except aiohttp.ClientError as exc:
            raise TransientError(self.provider, f"{what}: {self.what} unreachable "
                                                f"({type(exc).__name__})") from exc
        if status >= 400:
            raise self._failure(status, text, what)
        if not text.strip():
            return None
        try:
            return json.loads(text)
        except ValueError:
            return None

    def _failure(self, status: int, text: str, what: str) -> ProviderError:
        message = ""
        try:
            body = json.loads(text)
            error = body.get("error", body) if isinstance(body, dict) else {}
            message = str(error.get("message") or error.get("full_messages") or "")
            extended = error.get("@Message.ExtendedInfo") or []
            if not message and extended:
                message = str(extended[0].get("Message", ""))
        except (ValueError, AttributeError):
            message = text[:200]
        message = redact(message, self.secrets())[:300]
        detail = f"{what}: {self.what} answered {status}" + (f": {message}" if message else "")
        if status in (401, 403):
            return PermanentError(self.provider, f"{what}: the {self.what} refused the "
                                                 f"credentials ({status})")
        if status in (408, 429) or status >= 500:
            return TransientError(self.provider, detail)
        return PermanentError(self.provider, detail)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def credentials(provider: str, what: str, settings: Credentials
                 ) -> tuple[str | SecretRef | None, SecretRef | None]:
    username = plain_or_secret(provider=provider, what=f"{what} username",
                               value=settings.username, env=settings.username_env,
                               file=settings.username_file)
    password = None
    if settings.password_env or settings.password_file:
        password = SecretRef(provider=provider, what=f"{what} password",
                             env=settings.password_env, file=settings.password_file)
    return username, password
