"""``platform: {kind: simulated, url: ...}``: the PaaS side of a simulated world server.

Deactivate, activate, move gears, remove and add as HTTP calls to the world server
(``python -m gearshift.sim.server``): ``POST /v1/platform/nodes/{identity}/{step}``. Every
step is idempotent there, as the real OpenShift commands are made to be here.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from gearshift.act.platform.base import GearCount, MoveReport, NodeRef, Platform
from gearshift.errors import PlatformError


class SimulatedWorldPlatform(Platform):
    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def _step(self, node: NodeRef, step: str, body: dict[str, Any] | None = None) -> Any:
        return await self._call("POST", f"/v1/platform/nodes/{node.identity}/{step}",
                                what=f"{step} {node.identity}", body=body or {})

    async def _call(self, method: str, path: str, *, what: str,
                    body: dict[str, Any] | None = None) -> Any:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout))
        step = what
        try:
            async with self._session.request(method, f"{self.url}{path}", json=body) as resp:
                text = await resp.text()
                if resp.status >= 400:
                    raise PlatformError(f"{step}: HTTP {resp.status}: {text[:200]}")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise PlatformError(f"{step}: world server unreachable: "
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

    async def gears(self, node: NodeRef) -> GearCount | None:
        data = await self._call("GET", f"/v1/platform/nodes/{node.identity}/gears",
                                what=f"gears {node.identity}")
        return GearCount(total=int(data["total"]), active=int(data["active"]),
                         source="simulated world")

    async def members(self) -> frozenset[str] | None:
        data = await self._call("GET", "/v1/platform/nodes", what="members")
        return frozenset(str(m) for m in data["members"])

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
