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
* **stop** powers it off the same way but keeps the allocation; **start** powers it on
  from its disk (``Reset On``, no Foreman build, no PXE) and waits until it is ``On``.
  An unallocated machine is ``NotFound`` to both. ``list_owned`` reads the allocations
  from the journal and asks each BMC for its ``PowerState`` (``unknown`` when the BMC
  does not answer).

**Where ownership lives.** Which machine is allocated to which key is recorded in the
journal (``records.Allocations``, table ``gearshift_allocations``), written *before* the
machine is powered on, so a restart (or another instance taking over) finds every
allocation, including one whose power-on was interrupted. Each record keeps the
machine's BMC address too, so a machine later removed from the providers file can still
be retired. Redfish's writable ``AssetTag`` would keep the record on the machine itself,
but not every BMC accepts it (sushy-tools, which the tests run against, does not). The
daemon hands the journal over with ``keep_state_in`` before the first call.

Older versions kept the allocations in a JSON state file (``settings.state_file``,
default ``$STATE_DIRECTORY/baremetal-NAME.json``). On first use such a file is imported
into the journal once (an allocation the journal already holds wins) and renamed to
``NAME.json.migrated``.

Redfish and Foreman are plain REST, spoken with aiohttp (every request bounded by
``request_timeout``); the emulator applies power changes 1-11 s late, hence the polling.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import structlog

from gearshift.act.providers.baremetal_rest import Rest, credentials, tls_context
from gearshift.act.providers.base import CreateRequest, Provider, QuotaInfo
from gearshift.act.providers.common import (
    SecretRef,
    parse_settings,
)
from gearshift.act.providers.kind_settings import (
    BareMetalSettings,
    ForemanKindSettings,
)
from gearshift.errors import (
    CapacityUnavailable,
    JournalError,
    NotFound,
    PermanentError,
    ProviderError,
    QuotaExceeded,
    TransientError,
)
from gearshift.model import Machine, PowerState
from gearshift.policy.schema import ProviderSpec
from gearshift.records import Allocation, Allocations

log = structlog.get_logger(component="gearshift.act.baremetal")

T = TypeVar("T")
_POWER = {"On": PowerState.RUNNING, "Off": PowerState.STOPPED,
          "PoweringOn": PowerState.STARTING, "PoweringOff": PowerState.STOPPING}


def read_state_file(path: Path) -> dict[str, Allocation]:
    """The allocations of an old JSON state file, by machine id (FileNotFoundError if none)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return {mid: Allocation(**record) for mid, record in data.get("allocations", {}).items()}


class BareMetalProvider(Provider):
    def __init__(self, spec: ProviderSpec, settings: BareMetalSettings) -> None:
        super().__init__(spec.name)
        self.spec = spec
        self.settings = settings
        username, password = credentials(spec.name, "BMC", settings)
        self.redfish = Rest(spec.name, what="BMC", username=username, password=password,
                             tls=tls_context(settings.insecure, settings.ca_file),
                             timeout=settings.request_timeout)
        self.foreman: Rest | None = None
        if settings.foreman is not None:
            f_user, f_password = credentials(spec.name, "Foreman", settings.foreman)
            self.foreman = Rest(spec.name, what="Foreman", username=f_user, password=f_password,
                                 tls=tls_context(settings.foreman.insecure, settings.foreman.ca_file),
                                 timeout=settings.request_timeout)
        state_dir = Path(os.environ.get("STATE_DIRECTORY", "/var/lib/gearshift").split(":")[0])
        self.state_file = settings.state_file or state_dir / f"baremetal-{spec.name}.json"
        self.call_timeout = settings.power_timeout + 10 * settings.request_timeout
        self._lock = asyncio.Lock()
        self.journal: Allocations | None = None
        self._imported = False  # the old state file was looked for

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

    # -- state ----------------------------------------------------------------------
    def keep_state_in(self, journal: Allocations) -> None:
        self.journal = journal

    def _ledger(self) -> Allocations:
        if self.journal is None:
            raise PermanentError(self.name, "no journal to keep allocations in (the daemon "
                                            "hands it over with keep_state_in)")
        return self.journal

    async def _journaled(self, what: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except JournalError as exc:
            raise TransientError(self.name, f"{what}: the journal failed: {exc}") from None

    async def _load(self) -> dict[str, Allocation]:
        """Every allocation, read from the journal (after importing an old state file)."""
        ledger = self._ledger()
        if not self._imported:
            await self._import_state_file(ledger)
            self._imported = True
        return await self._journaled("read allocations", ledger.allocations(self.name))

    async def _record(self, machine_id: str, allocation: Allocation) -> None:
        await self._journaled("record an allocation",
                              self._ledger().allocate(self.name, {machine_id: allocation}))

    async def _free(self, machine_id: str) -> None:
        await self._journaled("free an allocation", self._ledger().free(self.name, machine_id))

    async def _import_state_file(self, ledger: Allocations) -> None:
        """Move an old JSON state file's allocations into the journal, once."""
        path = self.state_file
        try:
            found = await asyncio.to_thread(read_state_file, path)
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError) as exc:
            raise PermanentError(self.name, f"cannot read the state file {path}: "
                                            f"{type(exc).__name__}") from None
        known = await self._journaled("read allocations", ledger.allocations(self.name))
        new = {mid: a for mid, a in found.items() if mid not in known}
        if new:
            await self._journaled("import the state file", ledger.allocate(self.name, new))
        moved = path.with_name(path.name + ".migrated")
        try:
            await asyncio.to_thread(path.replace, moved)
        except OSError as exc:
            raise PermanentError(self.name, f"cannot rename the imported state file {path}: "
                                            f"{exc.strerror}") from None
        log.info("bare-metal state file imported into the journal", provider=self.name,
                 file=str(path), renamed_to=str(moved), imported=len(new),
                 already_known=len(found) - len(new))

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
                await self._record(*found)
        machine_id, allocation = found
        try:
            await self._power_on(allocation, fresh=fresh, what=f"{what} on {machine_id}")
        except ProviderError:
            if fresh:  # give the machine back: nothing was promised to anyone
                async with self._lock:
                    if (await self._load()).get(machine_id) == allocation:
                        await self._free(machine_id)
            raise
        log.info("machine powered on", provider=self.name, machine=machine_id,
                 node=allocation.name, pool=request.pool)
        return self._machine(machine_id, allocation)

    async def list_owned(self) -> list[Machine]:
        async with self._lock:
            allocations = await self._load()
        ordered = sorted(allocations.items())
        powers = await asyncio.gather(*(self._power_state(a) for _, a in ordered))
        return [replace(self._machine(mid, a), power=power)
                for (mid, a), power in zip(ordered, powers, strict=True)]

    async def _power_state(self, a: Allocation) -> PowerState:
        """What the machine's BMC says now; a BMC that does not answer: unknown (the
        listing itself still works, from the journal)."""
        try:
            state = (await self._system(a, f"power state of {a.name}")).get("PowerState")
        except ProviderError:
            return PowerState.UNKNOWN
        return _POWER.get(str(state), PowerState.UNKNOWN)

    async def _allocated(self, machine_id: str, what: str) -> Allocation:
        async with self._lock:
            allocation = (await self._load()).get(machine_id)
        if allocation is None:
            raise NotFound(self.name, f"{what}: the machine is not allocated")
        return allocation

    async def stop(self, machine_id: str) -> None:
        """Power off as retire does, but keep the allocation (and the disk as it is)."""
        what = f"stop {machine_id}"
        await self._power_off(await self._allocated(machine_id, what), what=what)
        log.info("machine stopped", provider=self.name, machine=machine_id)

    async def start(self, machine_id: str) -> None:
        """Power on from the disk: no Foreman build, no PXE boot (create does those)."""
        what = f"start {machine_id}"
        allocation = await self._allocated(machine_id, what)
        system = await self._system(allocation, what)
        if system.get("PowerState") not in ("On", "PoweringOn"):
            await self._reset(allocation, system, "On", what)
        await self._wait_power(allocation, "On", what)
        log.info("machine started", provider=self.name, machine=machine_id)

    async def destroy(self, machine_id: str) -> None:
        async with self._lock:
            allocation = (await self._load()).get(machine_id)
        if allocation is None:
            return  # not ours, or already back in the pool
        await self._power_off(allocation, what=f"retire {machine_id}")
        async with self._lock:
            if (await self._load()).get(machine_id) == allocation:
                await self._free(machine_id)
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
