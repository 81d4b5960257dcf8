"""How the oVirt driver talks to one engine at all: an SSO token, an SDK connection per thread.

The oVirt SDK (pycurl) is blocking: calls run on the provider's threads
(``common.Blocking``), each thread with its own SDK connection (one connection serialises
its requests on a lock), with pycurl's timeout on every request. The SSO token is fetched
and revoked by gearshift itself with aiohttp (``ovirt_sso``): the SDK's own SSO requests
carry no timeout, and a hung engine would pin a thread for ever. An expired token (401)
is fetched again once.

Apart from the driver (``ovirt.py``: what a node is, and the provider contract) because
none of this depends on which call is made. It imports the SDK, so it is on the
SDK-confinement contract's list next to the driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import ovirtsdk4 as sdk

from gearshift.act.providers import ovirt_errors
from gearshift.act.providers.common import Blocking, SecretRef, reveal
from gearshift.act.providers.kind_settings import OvirtSettings
from gearshift.act.providers.ovirt_sso import fetch_token, revoke_token, sso_session
from gearshift.errors import ConfigError, PermanentError, ProviderError

T = TypeVar("T")


class _AuthExpired(Exception):
    """The engine refused the token: fetch a new one and try once more."""


class OvirtEngine:
    """The engine behind provider ``name``: its token, its connections, calls run on them."""

    def __init__(self, name: str, settings: OvirtSettings, *,
                 username: str | SecretRef | None, password: SecretRef) -> None:
        self.name = name
        self.settings = settings
        self.username = username
        self.password = password
        self.blocking = Blocking(name, workers=settings.workers,
                                 timeout=settings.request_timeout)
        parts = urlsplit(settings.url)
        base = f"{parts.scheme}://{parts.netloc}"
        self.sso_url = f"{base}/ovirt-engine/sso/oauth/token"
        self.logout_url = f"{base}/ovirt-engine/services/sso-logout"
        self.token: str | None = None
        self._generation = 0
        self._local = threading.local()
        self._connections: list[Any] = []
        self._connections_lock = threading.Lock()
        self._token_lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None

    # -- SSO, with aiohttp and a timeout ----------------------------------------------
    def _secrets(self) -> list[str | None]:
        try:
            return [reveal(self.username), self.password.get().get_secret_value(), self.token]
        except ConfigError:
            return [self.token]

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = sso_session(self.settings)
        return self._session

    async def _fetch_token(self) -> str:
        form = {"grant_type": "password", "scope": "ovirt-app-api",
                "username": reveal(self.username) or "",
                "password": self.password.get().get_secret_value()}
        return await fetch_token(self._http(), provider=self.name, url=self.sso_url, form=form,
                                 timeout=self.settings.request_timeout)

    async def _ensure_token(self, *, renew: bool = False) -> None:
        async with self._token_lock:
            if self.token is None or renew:
                self.token = await self._fetch_token()
                self._generation += 1

    def _connection(self) -> Any:
        """This thread's SDK connection for the current token."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.generation == self._generation:
            return conn
        if conn is not None:
            with self._connections_lock:
                if conn in self._connections:
                    self._connections.remove(conn)
            conn.close(logout=False)
        conn = sdk.Connection(url=self.settings.url, token=self.token,
                              insecure=self.settings.insecure,
                              ca_file=str(self.settings.ca_file) if self.settings.ca_file else None,
                              timeout=max(1, math.ceil(self.settings.request_timeout)),
                              connections=1)
        self._local.conn, self._local.generation = conn, self._generation
        with self._connections_lock:
            self._connections.append(conn)
        return conn

    # -- running SDK calls ------------------------------------------------------------
    def error(self, exc: BaseException, what: str) -> ProviderError:
        """``exc`` from the SDK as gearshift's error, with no secret in its message."""
        return ovirt_errors.classify(exc, what, provider=self.name, secrets=self._secrets())

    async def run(self, fn: Callable[[Any], T], *, what: str, timeout: float | None = None) -> T:
        """``fn(system_service)`` on a provider thread; on an expired token, renew once."""
        await self._ensure_token()

        def call() -> T:
            try:
                return fn(self._connection().system_service())
            except sdk.AuthError as exc:
                raise _AuthExpired from exc
            except BaseException as exc:
                raise self.error(exc, what) from None

        for attempt in (1, 2):
            try:
                return await self.blocking(call, what=what, timeout=timeout)
            except _AuthExpired:
                if attempt == 2:
                    break
                await self._ensure_token(renew=True)
        raise PermanentError(self.name, f"{what}: the engine refused a fresh token")

    async def close(self) -> None:
        with self._connections_lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            with contextlib.suppress(sdk.Error):
                conn.close(logout=False)
        token, self.token = self.token, None
        if token is not None and self._session is not None:
            await revoke_token(self._session, url=self.logout_url, token=token)
        if self._session is not None:
            await self._session.close()
        self.blocking.close()
