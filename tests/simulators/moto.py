"""A moto server (``moto_server``) in a child process, and EC2 error injection for it.

moto never runs out of capacity or quota, so tests inject EC2's real error documents with a
botocore ``before-send.ec2.RunInstances`` hook: the request never leaves the client, the
answer goes through botocore's normal parsing (status code, XML ``<Errors>`` body).
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiobotocore.awsrequest import AioAWSResponse

from simulators import MissingPeer, Peer, free_port


def start(*, directory: Path) -> Peer:
    binary = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    if not Path(binary).exists():
        raise MissingPeer("moto_server is missing; run: pip install 'moto[server]'")
    port = free_port()
    return Peer.start([binary, "-H", "127.0.0.1", "-p", str(port)], port=port,
                      log=directory / "moto.log", name="moto_server")


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def read(self) -> bytes:
        return self.data


def ec2_error(code: str, message: str, status: int) -> AioAWSResponse:
    """The response EC2 sends for an error ``code``."""
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{code}'
            f'</Code><Message>{message}</Message></Error></Errors>'
            f'<RequestID>7a62c49f-347e-4fc4-9331-6e8eEXAMPLE</RequestID></Response>').encode()
    return AioAWSResponse("https://ec2.amazonaws.com/", status,
                          {"Content-Type": "text/xml;charset=UTF-8"}, _Body(body))


# Real EC2 codes with the HTTP status EC2 answers them with.
ERRORS = {
    "InsufficientInstanceCapacity": (500, "We currently do not have sufficient m5.large "
                                          "capacity in the Availability Zone you requested."),
    "InstanceLimitExceeded": (400, "You have requested more instances (21) than your current "
                                   "instance limit of 20 allows for the specified instance type."),
    "RequestLimitExceeded": (503, "Request limit exceeded."),
    "Unsupported": (400, "The requested configuration is currently not supported. Please "
                         "check the documentation for supported configurations."),
    "AuthFailure": (401, "AWS was not able to validate the provided access credentials"),
}


def inject(client: Any, code: str, *, times: int | None = None) -> Callable[..., Any]:
    """Answer RunInstances with EC2's ``code`` error (``times`` times, or for ever)."""
    status, message = ERRORS[code]
    left = [times]

    def hook(request: Any, **_: Any) -> AioAWSResponse | None:
        if left[0] is not None:
            if left[0] <= 0:
                return None
            left[0] -= 1
        return ec2_error(code, message, status)

    client.meta.events.register("before-send.ec2.RunInstances", hook)
    return hook


def uninject(client: Any, hook: Callable[..., Any]) -> None:
    client.meta.events.unregister("before-send.ec2.RunInstances", hook)
