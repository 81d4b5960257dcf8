"""oVirt / RHV: a node is a VM made from a template in one cluster, tagged as gearshift's.

* **create**: look the VM up by name (the engine keeps VM names unique); if it is there and
  carries this request's idempotency key, it is ours from an earlier attempt; otherwise add
  it from the blueprint's template into the cluster, with the host name and the blueprint's
  ``user_data`` as cloud-init initialization. Then tag it, wait until the engine has
  finished copying its disks (``image_locked`` → ``down``), and start it with cloud-init. A
  start refused for lack of capacity removes the new VM again, so nothing is left behind.
* **ownership**: the VM's ``comment`` holds ``gearshift:owner=...;provider=...;key=...;
  pool=...;blueprint=...`` from the moment it is added (atomic with the add; ``provider``
  keeps two providers on one engine apart), and the ``owner_tag``
  tag marks it for ``list_owned`` (one search: ``tag=gearshift``). A VM added just before a
  crash and not yet tagged is found again by name on the retry and tagged then.
* **destroy**: stop it if it runs, then remove it; unknown or gone is fine, a VM without
  our owner mark is never touched.
* **stop** / **start**: ``vm stop`` (waits until ``down``; the disks stay) / ``vm start``
  without cloud-init (returns once the engine took it, as create does).

The oVirt SDK (pycurl) is blocking: every call runs on the provider's threads through
``ovirt_engine`` (the SSO token, a connection per thread, a renewal on an expired token).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import ovirtsdk4 as sdk
import structlog
from ovirtsdk4 import types

from gearshift.act.providers.base import CreateRequest, Provider, QuotaInfo
from gearshift.act.providers.common import SecretRef, Slots, parse_settings, plain_or_secret
from gearshift.act.providers.kind_settings import OvirtBlueprintSettings, OvirtSettings
from gearshift.act.providers.ovirt_engine import OvirtEngine
from gearshift.errors import (
    CapacityUnavailable,
    NotFound,
    PermanentError,
    QuotaExceeded,
    TransientError,
)
from gearshift.model import Machine, PowerState
from gearshift.policy.schema import ProviderSpec

log = structlog.get_logger(component="gearshift.act.ovirt")

MARK = "gearshift:"
_POWER = {"up": PowerState.RUNNING, "migrating": PowerState.RUNNING,
          "down": PowerState.STOPPED, "suspended": PowerState.STOPPED,
          "image_locked": PowerState.STARTING, "wait_for_launch": PowerState.STARTING,
          "powering_up": PowerState.STARTING, "reboot_in_progress": PowerState.STARTING,
          "powering_down": PowerState.STOPPING}


def _marks(comment: str | None) -> dict[str, str]:
    if not comment or not comment.startswith(MARK):
        return {}
    return dict(part.split("=", 1) for part in comment[len(MARK):].split(";") if "=" in part)


class OvirtProvider(Provider):
    def __init__(self, spec: ProviderSpec, settings: OvirtSettings) -> None:
        super().__init__(spec.name)
        self.spec = spec
        self.settings = settings
        self.username = plain_or_secret(provider=spec.name, what="username",
                                        value=settings.username, env=settings.username_env,
                                        file=settings.username_file)
        self.password = SecretRef(provider=spec.name, what="password",
                                  env=settings.password_env, file=settings.password_file)
        self.slots = Slots(spec.name, max_nodes=spec.quota.max_nodes)
        self.engine = OvirtEngine(spec.name, settings, username=self.username,
                                  password=self.password)
        self.call_timeout = settings.start_timeout + 20 * settings.request_timeout
        self._tag_ready = False

    @classmethod
    def from_spec(cls, spec: ProviderSpec) -> OvirtProvider:
        provider = cls(spec, parse_settings(spec, OvirtSettings))
        for ref in (provider.username, provider.password):
            if isinstance(ref, SecretRef):
                ref.check()
        return provider

    # -- helpers on the SDK (provider threads) ----------------------------------------
    def _machine(self, vm: Any) -> Machine:
        marks = _marks(vm.comment)
        created = vm.creation_time.timestamp() if vm.creation_time else None
        return Machine(provider=self.name, machine_id=vm.id, name=vm.name,
                       blueprint=marks.get("blueprint"), pool=marks.get("pool"),
                       created_at=created, key=marks.get("key"),
                       power=_POWER.get(str(vm.status.value) if vm.status else "",
                                        PowerState.UNKNOWN))

    def _ours(self, vm: Any) -> bool:
        marks = _marks(vm.comment)
        return marks.get("owner") == self.settings.owner_tag and marks.get("provider") == self.name

    def _ensure_tag(self, system: Any) -> None:
        if self._tag_ready:
            return
        tags = system.tags_service()
        if not any(t.name == self.settings.owner_tag for t in tags.list()):
            try:
                tags.add(types.Tag(name=self.settings.owner_tag,
                                   description="VMs made by gearshift"))
            except sdk.Error as exc:
                if getattr(exc, "code", None) != 409:  # made meanwhile
                    raise
        self._tag_ready = True

    def _tag(self, system: Any, vm_id: str) -> None:
        self._ensure_tag(system)
        tags = system.vms_service().vm_service(vm_id).tags_service()
        if any(t.name == self.settings.owner_tag for t in tags.list()):
            return
        try:
            tags.add(types.Tag(name=self.settings.owner_tag))
        except sdk.Error as exc:
            if getattr(exc, "code", None) != 409:
                raise

    def _wait_status(self, service: Any, done: Callable[[str], bool], what: str) -> str:
        deadline = time.monotonic() + self.settings.start_timeout
        pause = 0.05
        while True:
            status = str(service.get().status.value)
            if done(status):
                return status
            if time.monotonic() >= deadline:
                raise TransientError(self.name, f"{what}: still {status} after "
                                                f"{self.settings.start_timeout:g}s")
            time.sleep(pause)
            pause = min(pause * 2, 2.0)

    def _start(self, system: Any, vm_id: str, what: str, *, fresh: bool) -> None:
        service = system.vms_service().vm_service(vm_id)
        status = self._wait_status(service, lambda s: s != "image_locked", what)
        if status in ("up", "powering_up", "reboot_in_progress"):
            return
        try:
            service.start(use_cloud_init=True)
        except sdk.Error as exc:
            error = self.engine.error(exc, f"{what}: start")
            if "vm is running" in error.message.lower():
                return
            if fresh and isinstance(error, CapacityUnavailable | QuotaExceeded):
                service.remove()  # leave nothing behind that nobody asked for
            raise error from None

    def _create(self, system: Any, request: CreateRequest) -> Machine:
        what = f"create {request.name}"
        blueprint = request.blueprint
        if not blueprint.template:
            raise PermanentError(self.name, f"blueprint {blueprint.name} names no template")
        try:
            extra = OvirtBlueprintSettings.model_validate(blueprint.settings)
        except ValueError as exc:
            raise PermanentError(self.name, f"blueprint {blueprint.name} settings: "
                                            f"{str(exc).splitlines()[0]}") from None
        vms = system.vms_service()
        found = vms.list(search=f"name={request.name}")
        fresh = False
        if found:
            vm = found[0]
            if _marks(vm.comment).get("key") != request.key or not self._ours(vm):
                raise PermanentError(self.name, f"{what}: a VM with that name exists and is "
                                                f"not this request's")
        else:
            comment = (f"{MARK}owner={self.settings.owner_tag};provider={self.name};"
                       f"key={request.key};pool={request.pool};blueprint={blueprint.name}")
            spec = types.Vm(
                name=request.name, comment=comment,
                description=f"gearshift node for pool {request.pool}",
                cluster=types.Cluster(name=self.settings.cluster),
                template=types.Template(name=blueprint.template),
                initialization=types.Initialization(host_name=request.name,
                                                    custom_script=blueprint.user_data))
            if extra.memory_mb:
                spec.memory = extra.memory_mb * 1024 * 1024
            if extra.cpus:
                spec.cpu = types.Cpu(topology=types.CpuTopology(sockets=extra.cpus, cores=1,
                                                                 threads=1))
            try:
                vm = vms.add(spec)
                fresh = True
            except sdk.NotFoundError as exc:
                raise PermanentError(self.name, f"{what}: the template {blueprint.template!r} "
                                                f"or cluster {self.settings.cluster!r} does not "
                                                f"exist ({self.engine.error(exc, what).message})") from None
            except sdk.Error as exc:
                if "already in use" not in str(exc):
                    raise
                return self._create(system, request)  # an earlier attempt's add won the race
        self._tag(system, vm.id)
        self._start(system, vm.id, what, fresh=fresh)
        return self._machine(vm)

    # -- the contract -----------------------------------------------------------------
    async def create(self, request: CreateRequest) -> Machine:
        owned = await self.list_owned()
        existing = next((m for m in owned if m.key == request.key), None)
        if existing is not None:
            await self.engine.run(lambda system: self._start(system, existing.machine_id,
                                                              f"create {request.name}", fresh=False),
                                   what=f"start {request.name}", timeout=self.call_timeout)
            return existing
        async with self.slots.claim(self.list_owned):
            machine = await self.engine.run(lambda system: self._create(system, request),
                                             what=f"create {request.name}", timeout=self.call_timeout)
        log.info("vm created", provider=self.name, vm=machine.machine_id, name=machine.name,
                 pool=request.pool)
        return machine

    async def list_owned(self) -> list[Machine]:
        vms = await self.engine.run(lambda system: system.vms_service().list(
            search=f"tag={self.settings.owner_tag}"), what="list VMs")
        return self.slots.counted([self._machine(vm) for vm in vms if self._ours(vm)])

    def _ours_by_id(self, system: Any, machine_id: str, what: str) -> Any | None:
        """The VM's service once it is no longer image_locked (None: gone); not ours: refused."""
        service = system.vms_service().vm_service(machine_id)
        try:
            vm = service.get()
        except sdk.NotFoundError:
            return None
        if not self._ours(vm):
            raise PermanentError(self.name, f"refusing to {what}: it is not marked as made by "
                                            f"gearshift ({self.settings.owner_tag})")
        return service

    def _stop(self, service: Any, what: str) -> None:
        """Power the VM off (``vm stop``: its disks stay) and wait until it is down."""
        if self._wait_status(service, lambda s: s != "image_locked", what) == "down":
            return
        try:
            service.stop()
        except sdk.Error as exc:
            if "not running" not in str(exc):
                raise
        self._wait_status(service, lambda s: s == "down", what)

    def _destroy(self, system: Any, machine_id: str) -> bool:
        what = f"destroy {machine_id}"
        service = self._ours_by_id(system, machine_id, what)
        if service is None:
            return False
        self._stop(service, what)
        try:
            service.remove()
        except sdk.NotFoundError:
            return False
        return True

    async def destroy(self, machine_id: str) -> None:
        try:
            gone = await self.engine.run(lambda system: self._destroy(system, machine_id),
                                          what=f"destroy {machine_id}", timeout=self.call_timeout)
        except NotFound:
            return
        if gone:
            self.slots.released()
            log.info("vm destroyed", provider=self.name, vm=machine_id)

    def _power(self, system: Any, machine_id: str, *, on: bool) -> None:
        what = f"{'start' if on else 'stop'} {machine_id}"
        service = self._ours_by_id(system, machine_id, what)
        if service is None:
            raise NotFound(self.name, f"{what}: no such VM")
        if not on:
            self._stop(service, what)
            return
        status = self._wait_status(service, lambda s: s != "image_locked", what)
        if _POWER.get(status) in (PowerState.RUNNING, PowerState.STARTING):
            return
        try:
            service.start()  # no cloud-init: the VM resumes as it was
        except sdk.Error as exc:
            if "vm is running" not in str(exc).lower():
                raise

    async def stop(self, machine_id: str) -> None:
        await self.engine.run(lambda system: self._power(system, machine_id, on=False),
                               what=f"stop {machine_id}", timeout=self.call_timeout)
        log.info("vm stopped", provider=self.name, vm=machine_id)

    async def start(self, machine_id: str) -> None:
        await self.engine.run(lambda system: self._power(system, machine_id, on=True),
                               what=f"start {machine_id}", timeout=self.call_timeout)
        log.info("vm started", provider=self.name, vm=machine_id)

    async def quota(self) -> QuotaInfo:
        return QuotaInfo(max_nodes=self.spec.quota.max_nodes, used=len(await self.list_owned()))

    async def close(self) -> None:
        await self.engine.close()
