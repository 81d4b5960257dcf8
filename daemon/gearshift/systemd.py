"""sd_notify for ``Type=notify``: READY, WATCHDOG, STATUS, RELOADING, STOPPING.

The protocol is one datagram to the socket in ``$NOTIFY_SOCKET`` (a leading ``@`` means
the abstract namespace); a dozen lines, so no dependency. Outside systemd (no variable)
every call is a no-op.
"""

from __future__ import annotations

import os
import socket
import time


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        self.address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        watchdog = os.environ.get("WATCHDOG_USEC")
        watchdog_pid = os.environ.get("WATCHDOG_PID")
        if watchdog_pid and watchdog_pid.isdigit() and int(watchdog_pid) != os.getpid():
            watchdog = None  # the watchdog is meant for another process (sd_watchdog_enabled)
        # Ping twice per watchdog period, as sd_watchdog_enabled(3) recommends.
        self.watchdog_interval = (int(watchdog) / 2_000_000
                                  if watchdog and watchdog.isdigit() and int(watchdog) > 0
                                  else None)

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, **fields: str) -> bool:
        if not self.address:
            return False
        address = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        message = "\n".join(f"{k.upper()}={v}" for k, v in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(address)
                sock.sendall(message)
        except OSError:
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send(ready="1", status=status)

    def watchdog(self) -> bool:
        return self.send(watchdog="1")

    def status(self, text: str) -> bool:
        return self.send(status=text)

    def reloading(self) -> bool:
        return self.send(reloading="1",
                         monotonic_usec=str(int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6)))

    def stopping(self) -> bool:
        return self.send(stopping="1")
