"""``kind: simulated`` with ``settings.url``: a provider that is an HTTP client of a world server.

The simulated world server (``python -m gearshift.sim.server``) holds machines, nodes and
gears in a process of its own, so the world outlives the daemon: the crash, fault and
HA tests kill and restart ``gearshift run`` against it, and anyone can point a real
``gearshift run`` at a simulated fleet. The wire protocol is small JSON over HTTP:

* ``POST   /v1/providers/{name}/machines``  create, idempotent by ``key`` (tags sent along)
* ``GET    /v1/providers/{name}/machines``  machines carrying gearshift's owner tag
* ``DELETE /v1/providers/{name}/machines/{id}``  destroy (404: already gone)
* ``POST   /v1/providers/{name}/machines/{id}/stop`` (and ``/start``)  power off / on,
  disk kept (404: no such machine)
* ``GET    /v1/providers/{name}/quota``

Status codes map onto the error hierarchy: 409 quota, 507 capacity, 404 not found,
other 4xx permanent, 5xx and connection problems transient.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from gearshift.act.providers.base import (
    BLUEPRINT_TAG,
    KEY_TAG,
    OWNER_TAG,
    POOL_TAG,
    CreateRequest,
    Provider,
    QuotaInfo,
)
from gearshift.errors import (
    CapacityUnavailable,
    ConfigError,
    NotFound,
    PermanentError,
    ProviderError,
    QuotaExceeded,
    TransientError,
)
from gearshift.model import Machine, PowerState
from gearshift.policy.schema import ProviderSpec


def machine_from_json(provider: str, data: dict[str, Any]) -> Machine:
    return Machine(provider=provider, machine_id=str(data["machine_id"]), name=str(data["name"]),
                   blueprint=data.get("blueprint"), pool=data.get("pool"),
                   created_at=data.get("created_at"), key=data.get("key"),
                   power=PowerState(data.get("power") or PowerState.UNKNOWN))


class SimulatedWorldProvider(Provider):
    def __init__(self, name: str, *, url: str, timeout: float = 60.0) -> None:
        super().__init__(name)
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_spec(cls, spec: ProviderSpec) -> SimulatedWorldProvider:
        url = spec.settings.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError([f"provider {spec.name}: kind simulated needs settings.url, the "
                               f"http:// address of a world server"])
        return cls(spec.name, url=url, timeout=float(spec.settings.get("timeout", 60.0)))

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            async with self._client().request(method, f"{self.url}{path}", json=body) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransientError(self.name, f"world server unreachable: "
                                            f"{exc.__class__.__name__}") from None
        error: type[ProviderError] | None = None
        if status == 404:
            error = NotFound
        elif status == 409:
            error = QuotaExceeded
        elif status == 507:
            error = CapacityUnavailable
        elif status >= 500:
            error = TransientError
        elif status >= 400:
            error = PermanentError
        if error is not None:
            raise error(self.name, f"HTTP {status}: {text[:200]}")
        import json  # noqa: PLC0415

        return json.loads(text) if text else None

    async def create(self, request: CreateRequest) -> Machine:
        blueprint = request.blueprint
        data = await self._request("POST", f"/v1/providers/{self.name}/machines", {
            "key": request.key, "name": request.name, "pool": request.pool,
            "blueprint": blueprint.name,
            "tags": {OWNER_TAG: "gearshift", KEY_TAG: request.key, POOL_TAG: request.pool,
                     BLUEPRINT_TAG: blueprint.name}})
        return machine_from_json(self.name, data)

    async def list_owned(self) -> list[Machine]:
        data = await self._request("GET", f"/v1/providers/{self.name}/machines")
        return [machine_from_json(self.name, m) for m in data["machines"]]

    async def destroy(self, machine_id: str) -> None:
        await self._request("DELETE", f"/v1/providers/{self.name}/machines/{machine_id}")

    async def stop(self, machine_id: str) -> None:
        await self._request("POST", f"/v1/providers/{self.name}/machines/{machine_id}/stop")

    async def start(self, machine_id: str) -> None:
        await self._request("POST", f"/v1/providers/{self.name}/machines/{machine_id}/start")

    async def quota(self) -> QuotaInfo:
        data = await self._request("GET", f"/v1/providers/{self.name}/quota")
        return QuotaInfo(max_nodes=int(data["max_nodes"]), used=int(data["used"]))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
