"""The MQTT client as every gearshift speaker builds it: settings, TLS, MQTT 5 properties.

The daemon's fact source, the platform agent runner, the node agent, the MCollective
source and the simulator all connect the same way and back off the same way after a lost
broker, so the factory, the back-off and the SUBACK check live here, below all of them.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiomqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gearshift.settings import MqttSettings

log = structlog.get_logger(component="gearshift.mqtt")


class RateLimitedLog:
    """At most one log line per ``every`` seconds per reason; the rest are counted."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warn(self, reason: str, **fields: Any) -> None:
        now = time.monotonic()
        if now - self._last.get(reason, -self.every) >= self.every:
            suppressed = self._suppressed.pop(reason, 0)
            log.warning("bad message dropped", reason=reason, suppressed=suppressed, **fields)
            self._last[reason] = now
        else:
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1


MessageHandler = Callable[[aiomqtt.Message], None]


def dispatching_queue(handler: MessageHandler) -> type[asyncio.Queue[aiomqtt.Message]]:
    """A queue type for aiomqtt's ``queue_type`` that queues nothing: each message goes to
    ``handler`` the moment it is read, on the event loop, in the broker's order.

    aiomqtt's message iterator makes a task and an ``asyncio.wait`` per message to wait
    for it (more than a fact source's whole parse, validate and store); a consumer that
    only ever hands messages to one synchronous function need not wait for them.
    ``client.messages`` then yields nothing and still ends with ``MqttError`` when the
    connection drops. Nothing the handler raises reaches paho: paho would re-raise it out
    of its socket read without consuming the packet, aiomqtt would mark the client lost but
    leave the socket open, and every later read would hand the same packet over again (a
    loop pinning the CPU, one more per reconnect for a retained poison message). It is
    logged and the message dropped instead. A read hands over one message, or as many as
    publishes of ours await acknowledgement (paho's ``loop_read``), each a loop step.
    """

    class Dispatch(asyncio.Queue[aiomqtt.Message]):
        def put_nowait(self, item: aiomqtt.Message) -> None:
            try:
                handler(item)
            except Exception:
                log.exception("a received MQTT message could not be handled; dropped",
                              topic=item.topic.value[:200])

    return Dispatch


def client_for(settings: MqttSettings, *, identifier: str | None = None,
               will: aiomqtt.Will | None = None,
               on_message: MessageHandler | None = None) -> aiomqtt.Client:
    """An aiomqtt client configured from settings (auth, TLS, protocol); with
    ``on_message``, messages go to it as they arrive (``dispatching_queue``).

    With MQTT 5 the client tells the broker the largest packet it accepts (16 times
    ``max_payload``, at least 1 MiB): a broker drops anything bigger instead of making us
    hold it in memory; smaller oversized messages still arrive and are counted.
    """
    tls_context = None
    if settings.tls is not None:
        tls_context = ssl.create_default_context(
            cafile=str(settings.tls.ca_file) if settings.tls.ca_file else None)
        if settings.tls.cert_file is not None:
            tls_context.load_cert_chain(str(settings.tls.cert_file),
                                        str(settings.tls.key_file) if settings.tls.key_file
                                        else None)
        if settings.tls.insecure:
            tls_context.check_hostname = False
    password = settings.secret()
    v5 = settings.protocol == "5"
    properties = None
    if v5:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.MaximumPacketSize = max(1 << 20, 16 * settings.max_payload)
    return aiomqtt.Client(
        settings.host, settings.port, username=settings.username,
        password=password.get_secret_value() if password is not None else None,
        identifier=identifier or f"{settings.client_id}-{uuid.uuid4().hex[:8]}",
        protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
        will=will, keepalive=settings.keepalive, tls_context=tls_context,
        tls_insecure=settings.tls.insecure if settings.tls is not None else None,
        properties=properties, timeout=settings.timeout,
        queue_type=dispatching_queue(on_message) if on_message is not None else None)


def check_granted(granted: Any, topic: str) -> None:
    """Raise ``MqttError`` when the broker refused a subscription (an ACL, usually)."""
    for code in granted:
        failed = code.is_failure if hasattr(code, "is_failure") else int(code) >= 0x80
        if failed:
            raise aiomqtt.MqttError(f"subscription to {topic} refused by the broker ({code})")


class Backoff:
    """Exponential back-off with "equal jitter": each delay is random in [base/2, base].

    The base doubles from ``initial`` up to ``maximum``; the jitter stays even at the cap,
    so a fleet of clients that lost the same broker does not come back in lockstep.
    """

    def __init__(self, *, initial: float, maximum: float,
                 rng: random.Random | None = None) -> None:
        self.initial = initial
        self.maximum = maximum
        self.rng = rng or random.Random()
        self._base = min(initial, maximum)

    def next(self) -> float:
        delay = self.rng.uniform(self._base / 2, self._base)
        self._base = min(self._base * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self._base = min(self.initial, self.maximum)


def response_properties(topic: str, correlation: bytes) -> Properties:
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.ResponseTopic = topic
    properties.CorrelationData = correlation
    return properties
