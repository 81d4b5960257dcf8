"""STOMP plumbing for the MCollective source: TLS, and connections that report their fate.

stompman reconnects (and re-subscribes) by itself, which is what we want, but the fact
source must know when the broker was lost: facts gathered before a loss are not proof
that nodes are alive after it. ``watched_connection`` wraps stompman's TCP connection
class (its ``connection_class`` hook) to call back on every new connection and on every
connection lost.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncGenerator, Callable
from typing import Any

import stompman
from stompman.connection import Connection

from gearshift.settings import TlsSettings


def tls_context(tls: TlsSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    if tls.cert_file is not None:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    if tls.insecure:
        context.check_hostname = False
    return context


def watched_connection(on_connect: Callable[[], None],
                       on_lost: Callable[[], None]) -> type[Connection]:
    """stompman's TCP connection, telling us when one opens and when one is lost."""

    class Watched(Connection):
        @classmethod
        async def connect(cls, **kwargs: Any) -> Watched | None:
            connection = await super().connect(**kwargs)
            if connection is not None:
                on_connect()
            return connection

        async def read_frames(self) -> AsyncGenerator[Any, None]:
            try:
                async for frame in super().read_frames():
                    yield frame
            except stompman.ConnectionLostError:
                on_lost()
                raise

    return Watched
