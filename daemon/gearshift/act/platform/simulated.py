"""``platform: {kind: simulated, url: ...}``: the PaaS side of a simulated world server.

Deactivate, activate, move gears, remove and add as HTTP calls to the world server
(``python -m gearshift.sim.server``): ``POST /v1/platform/nodes/{identity}/{step}``. Every
step is idempotent there, as the real OpenShift commands are made to be here.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from gearshift.act.platform.base import MoveReport, NodeRef, Platform
from gearshift.errors import PlatformError


class SimulatedWorldPlatform(Platform):
    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def _step(self, node: NodeRef, step: str, body: dict[str, Any] | None = None) -> Any:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            async with self._session.post(f"{self.url}/v1/platform/nodes/{node.identity}/{step}",
                                          json=body or {}) as resp:
                text = await resp.text()
                if resp.status >= 400:
                    raise PlatformError(f"{step} {node.identity}: HTTP {resp.status}: "
                                        f"{text[:200]}")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise PlatformError(f"{step} {node.identity}: world server unreachable: "
                                f"{exc.__class__.__name__}") from None
        return json.loads(text) if text else None

    async def deactivate(self, node: NodeRef) -> None:
        await self._step(node, "deactivate")

    async def activate(self, node: NodeRef) -> None:
        await self._step(node, "activate")

    async def move_gears(self, node: NodeRef, *, limit: int) -> MoveReport:
        data = await self._step(node, "move", {"limit": limit})
        return MoveReport(started=int(data["started"]), failed=int(data.get("failed", 0)),
                          remaining=int(data["remaining"]))

    async def remove(self, node: NodeRef) -> None:
        await self._step(node, "remove")

    async def add(self, node: NodeRef) -> None:
        await self._step(node, "add")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
