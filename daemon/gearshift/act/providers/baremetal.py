"""Bare metal: a pool of pre-racked machines, switched on and off through their BMCs.

``kind: redfish`` and ``kind: foreman`` are both this provider. The providers file lists
the machines (``settings.machines``: BMC URL, Redfish system path, the host name the node
will publish facts as); nothing is ever made or destroyed:

* **create** allocates the first free machine to the request's idempotency key, then, when
  ``settings.foreman`` is set, marks the host for build in Foreman
  (``PUT /api/hosts/:id {"host": {"build": true}}``) and sets a one-time PXE boot through
  Redfish, and finally powers it on (``ComputerSystem.Reset``; a machine that is already on
  is restarted into its build) and polls its ``PowerState`` until it is ``On`` or
  ``power_timeout`` passes. A retried create with the same key finds its machine again.
* **destroy** (retire) powers the machine off (``GracefulShutdown``, then ``ForceOff`` half
  way to the deadline, or ``ForceOff`` at once) and, once it is ``Off``, returns it to the
  pool. A machine that is not allocated is fine.

**Where ownership lives.** Which machine is allocated to which key is recorded in a small
JSON state file (``settings.state_file``, default ``$STATE_DIRECTORY/baremetal-NAME.json``,
i.e. ``/var/lib/gearshift`` under systemd's ``StateDirectory=gearshift``), written
atomically (temporary file, fsync, rename) *before* the machine is powered on, so a restart
finds every allocation, including one whose power-on was interrupted. Each record keeps the
machine's BMC address too, so a machine later removed from the providers file can still be
retired. Redfish's writable ``AssetTag`` would keep the record on the machine itself, but
not every BMC accepts it (sushy-tools, which the tests run against, does not), so the file
it is. The file is the one thing to back up with the journal.

Redfish and Foreman are plain REST, spoken with aiohttp (every request bounded by
``request_timeout``); the emulator applies power changes 1-11 s late, hence the polling.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from gearshift.act.providers.base import CreateRequest, Provider, QuotaInfo
from gearshift.act.providers.common import (
    SecretRef,
    parse_settings,
    plain_or_secret,
    redact,
    reveal,
)
from gearshift.act.providers.kind_settings import (
    BareMetalSettings,
    Credentials,
    ForemanKindSettings,
)
from gearshift.errors import (
    CapacityUnavailable,
    ConfigError,
    PermanentError,
    ProviderError,
    QuotaExceeded,
    TransientError,
)
from gearshift.model import Machine
from gearshift.policy.schema import ProviderSpec

log = structlog.get_logger(component="gearshift.act.baremetal")


@dataclass(frozen=True)
class Allocation:
    key: str
    name: str  # node identity
    pool: str
    blueprint: str
    bmc: str
    system: str
    foreman_host: str | None
    allocated_at: float


class StateFile:
    """Allocations by machine id, kept in one JSON file replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Allocation]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        return {mid: Allocation(**record) for mid, record in data.get("allocations", {}).items()}

    def save(self, allocations: dict[str, Allocation]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        body = json.dumps({"version": 1, "allocations": {k: asdict(v) for k, v in
                                                         sorted(allocations.items())}},
                          indent=2)
        with partial.open("w", encoding="utf-8") as out:
            out.write(body)
            out.flush()
            os.fsync(out.fileno())
        partial.replace(self.path)


def _tls(insecure: bool, ca_file: Path | None) -> ssl.SSLContext | bool:
    if insecure:
        return False
    if ca_file is not None:
        return ssl.create_default_context(cafile=str(ca_file))
    return True


class _Rest:
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


def _credentials(provider: str, what: str, settings: Credentials
                 ) -> tuple[str | SecretRef | None, SecretRef | None]:
    username = plain_or_secret(provider=provider, what=f"{what} username",
                               value=settings.username, env=settings.username_env,
                               file=settings.username_file)
    password = None
    if settings.password_env or settings.password_file:
        password = SecretRef(provider=provider, what=f"{what} password",
                             env=settings.password_env, file=settings.password_file)
    return username, password


class BareMetalProvider(Provider):
    def __init__(self, spec: ProviderSpec, settings: BareMetalSettings) -> None:
        super().__init__(spec.name)
        self.spec = spec
        self.settings = settings
        username, password = _credentials(spec.name, "BMC", settings)
        self.redfish = _Rest(spec.name, what="BMC", username=username, password=password,
                             tls=_tls(settings.insecure, settings.ca_file),
                             timeout=settings.request_timeout)
        self.foreman: _Rest | None = None
        if settings.foreman is not None:
            f_user, f_password = _credentials(spec.name, "Foreman", settings.foreman)
            self.foreman = _Rest(spec.name, what="Foreman", username=f_user, password=f_password,
                                 tls=_tls(settings.foreman.insecure, settings.foreman.ca_file),
                                 timeout=settings.request_timeout)
        state_dir = Path(os.environ.get("STATE_DIRECTORY", "/var/lib/gearshift").split(":")[0])
        self.state = StateFile(settings.state_file or state_dir / f"baremetal-{spec.name}.json")
        self.call_timeout = settings.power_timeout + 10 * settings.request_timeout
        self._lock = asyncio.Lock()
        self._allocations: dict[str, Allocation] | None = None

    @classmethod
    def from_spec(cls, spec: ProviderSpec) -> BareMetalProvider:
        model = ForemanKindSettings if spec.kind == "foreman" else BareMetalSettings
        settings = parse_settings(spec, model)
        provider = cls(spec, settings)
        for rest in (provider.redfish, provider.foreman):
            if rest is None:
                continue
            for ref in (rest.username, rest.password):
                if isinstance(ref, SecretRef):
                    ref.check()
        return provider

    # -- state ------------------------------------------------------------------------
    async def _load(self) -> dict[str, Allocation]:
        if self._allocations is None:
            try:
                self._allocations = await asyncio.to_thread(self.state.load)
            except (OSError, ValueError, TypeError) as exc:
                raise PermanentError(self.name, f"cannot read the state file {self.state.path}: "
                                                f"{type(exc).__name__}") from None
        return self._allocations

    async def _save(self, allocations: dict[str, Allocation]) -> None:
        try:
            await asyncio.to_thread(self.state.save, allocations)
        except OSError as exc:
            raise PermanentError(self.name, f"cannot write the state file {self.state.path}: "
                                            f"{exc.strerror}") from None
        self._allocations = allocations

    def _machine(self, machine_id: str, a: Allocation) -> Machine:
        return Machine(provider=self.name, machine_id=machine_id, name=a.name, pool=a.pool,
                       blueprint=a.blueprint, created_at=a.allocated_at, key=a.key)

    # -- Redfish ----------------------------------------------------------------------
    async def _system(self, a: Allocation, what: str) -> dict[str, Any]:
        body = await self.redfish.request("GET", a.bmc + a.system, what=what)
        if not isinstance(body, dict):
            raise TransientError(self.name, f"{what}: the BMC sent no ComputerSystem")
        return body

    async def _reset(self, a: Allocation, system: dict[str, Any], reset: str, what: str) -> None:
        action = system.get("Actions", {}).get("#ComputerSystem.Reset", {})
        target = action.get("target") or f"{a.system}/Actions/ComputerSystem.Reset"
        allowed = action.get("ResetType@Redfish.AllowableValues")
        if allowed and reset not in allowed:
            raise PermanentError(self.name, f"{what}: the BMC does not offer ResetType {reset}")
        url = target if target.startswith("http") else a.bmc + target
        await self.redfish.request("POST", url, what=what, body={"ResetType": reset})

    async def _power_on(self, a: Allocation, *, fresh: bool, what: str) -> None:
        """Switch the machine on; a fresh allocation is first marked for build (Foreman)
        and set to PXE boot once, and restarted if it was left running. A retried create
        leaves a machine that is already on alone."""
        system = await self._system(a, what)
        state = system.get("PowerState")
        if state == "On" and not fresh:
            return
        if self.foreman is not None and a.foreman_host:
            host = a.foreman_host
            await self.foreman.request("PUT", f"{self._foreman_url()}/api/hosts/{host}",
                                       what=f"{what}: mark {host} for build",
                                       body={"host": {"build": True}})
        if self._pxe():
            await self.redfish.request("PATCH", a.bmc + a.system, what=f"{what}: PXE boot",
                                       body={"Boot": {"BootSourceOverrideTarget": "Pxe",
                                                      "BootSourceOverrideEnabled": "Once"}})
        if state != "On":
            await self._reset(a, system, "On", what)
        elif self._pxe():
            await self._reset(a, system, "ForceRestart", what)
        await self._wait_power(a, "On", what)

    async def _power_off(self, a: Allocation, *, what: str) -> None:
        system = await self._system(a, what)
        if system.get("PowerState") == "Off":
            return
        await self._reset(a, system, self.settings.power_off, what)
        await self._wait_power(a, "Off", what, force_halfway=self.settings.power_off != "ForceOff")

    async def _wait_power(self, a: Allocation, want: str, what: str, *,
                          force_halfway: bool = False) -> None:
        """Poll PowerState until ``want``; a graceful shutdown is forced half way."""
        start = time.monotonic()
        deadline = start + self.settings.power_timeout
        halfway = start + self.settings.power_timeout / 2
        while True:
            state = (await self._system(a, what)).get("PowerState")
            if state == want:
                return
            now = time.monotonic()
            if now >= deadline:
                raise TransientError(self.name, f"{what}: still {state} after "
                                                f"{self.settings.power_timeout:g}s")
            if force_halfway and now >= halfway:
                await self._reset(a, await self._system(a, what), "ForceOff", what)
                force_halfway = False
            await asyncio.sleep(min(self.settings.poll_interval, max(0.0, deadline - now)))

    def _pxe(self) -> bool:
        return self.settings.pxe_boot if self.settings.pxe_boot is not None else (
            self.foreman is not None)

    def _foreman_url(self) -> str:
        assert self.settings.foreman is not None
        return self.settings.foreman.url

    # -- the contract -----------------------------------------------------------------
    async def create(self, request: CreateRequest) -> Machine:
        what = f"create {request.name}"
        async with self._lock:
            allocations = await self._load()
            found = next(((mid, a) for mid, a in allocations.items() if a.key == request.key),
                         None)
            fresh = found is None
            if found is None:
                limit = self.spec.quota.max_nodes
                if len(allocations) >= limit:
                    raise QuotaExceeded(self.name, f"quota of {limit} machines is used up")
                free = next((m for m in self.settings.machines if m.id not in allocations), None)
                if free is None:
                    raise CapacityUnavailable(self.name, f"all {len(self.settings.machines)} "
                                                         f"machines of the pool are in use")
                found = (free.id, Allocation(
                    key=request.key, name=free.identity, pool=request.pool,
                    blueprint=request.blueprint.name, bmc=free.bmc, system=free.system,
                    foreman_host=(free.foreman_host or free.identity) if self.foreman else None,
                    allocated_at=time.time()))
                await self._save({**allocations, found[0]: found[1]})
        machine_id, allocation = found
        try:
            await self._power_on(allocation, fresh=fresh, what=f"{what} on {machine_id}")
        except ProviderError:
            if fresh:  # give the machine back: nothing was promised to anyone
                async with self._lock:
                    allocations = dict(await self._load())
                    if allocations.get(machine_id) == allocation:
                        del allocations[machine_id]
                        await self._save(allocations)
            raise
        log.info("machine powered on", provider=self.name, machine=machine_id,
                 node=allocation.name, pool=request.pool)
        return self._machine(machine_id, allocation)

    async def list_owned(self) -> list[Machine]:
        async with self._lock:
            allocations = await self._load()
        return [self._machine(mid, a) for mid, a in sorted(allocations.items())]

    async def destroy(self, machine_id: str) -> None:
        async with self._lock:
            allocation = (await self._load()).get(machine_id)
        if allocation is None:
            return  # not ours, or already back in the pool
        await self._power_off(allocation, what=f"retire {machine_id}")
        async with self._lock:
            allocations = dict(await self._load())
            if allocations.get(machine_id) == allocation:
                del allocations[machine_id]
                await self._save(allocations)
        log.info("machine powered off and returned to the pool", provider=self.name,
                 machine=machine_id)

    async def quota(self) -> QuotaInfo:
        async with self._lock:
            used = len(await self._load())
        return QuotaInfo(max_nodes=min(self.spec.quota.max_nodes, len(self.settings.machines)),
                         used=used)

    async def close(self) -> None:
        await self.redfish.close()
        if self.foreman is not None:
            await self.foreman.close()
