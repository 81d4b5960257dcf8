"""vSphere: a node is a VM cloned from a template, and it carries gearshift's marks itself.

* **create**: find the VM already made for this idempotency key (a retry or a restart
  finds it and only makes sure it is powered on); otherwise clone the blueprint's template
  into the configured resource pool (or the cluster's, or the template's own) and folder,
  then power it on, waiting on each task with a deadline.
* **first boot** and **ownership**: the clone spec writes the owner marks and cloud-init's
  guestinfo into the VM's extraConfig, so no crash leaves an unmarked VM behind
  (``vsphere_clone`` says what and why).
* **destroy**: power off, then destroy; a VM that is already gone is fine, a VM without
  our owner mark is never touched.
* **stop** / **start**: ``PowerOffVM_Task`` / ``PowerOnVM_Task``, waiting for the task; the
  VM and its disks stay. The listing's ``power`` is ``runtime.powerState``.

pyvmomi is blocking: every call runs on the provider's own threads (``common.Blocking``),
with a socket timeout (``request_timeout``) on every SOAP request and a deadline
(``task_timeout``) on every task. Finding things in the inventory (property-collector
reads, the clone's datacenter, template, pool, folder and datastore) is in
``vsphere_places``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

import structlog
from pyVim import connect as _connect
from pyVmomi import vim as _vim
from pyVmomi import vmodl as _vmodl

from gearshift.act.providers import vsphere_clone, vsphere_errors
from gearshift.act.providers.base import CreateRequest, Provider, QuotaInfo
from gearshift.act.providers.common import (
    Blocking,
    SecretRef,
    Slots,
    parse_settings,
    plain_or_secret,
    reveal,
)
from gearshift.act.providers.kind_settings import VSphereSettings
from gearshift.act.providers.vsphere_inventory import connect_options
from gearshift.act.providers.vsphere_places import Places, retrieve, retrieve_one
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

log = structlog.get_logger(component="gearshift.act.vsphere")
T = TypeVar("T")

# pyVmomi's classes are generated at import time and untyped: treat them as Any here.
vim: Any = _vim
vmodl: Any = _vmodl
SmartConnect: Any = _connect.SmartConnect
Disconnect: Any = _connect.Disconnect
# runtime.powerState; a suspended VM runs no more than a powered-off one (PowerOn resumes it)
_POWER = {"poweredOn": PowerState.RUNNING, "poweredOff": PowerState.STOPPED,
          "suspended": PowerState.STOPPED}

class VSphereProvider(Provider):
    def __init__(self, spec: ProviderSpec, settings: VSphereSettings) -> None:
        super().__init__(spec.name)
        self.spec = spec
        self.settings = settings
        name = spec.name
        self.username = plain_or_secret(provider=name, what="username", value=settings.username,
                                        env=settings.username_env, file=settings.username_file)
        self.password = SecretRef(provider=name, what="password", env=settings.password_env,
                                  file=settings.password_file)
        self.slots = Slots(name, max_nodes=spec.quota.max_nodes)
        self.blocking = Blocking(name, workers=settings.workers, timeout=settings.request_timeout)
        # A create waits for two tasks and a handful of requests.
        self.call_timeout = 2 * settings.task_timeout + 10 * settings.request_timeout
        self._si: Any = None
        self._lock = threading.Lock()
        self.places = Places(settings, provider=name)

    @classmethod
    def from_spec(cls, spec: ProviderSpec) -> VSphereProvider:
        settings = parse_settings(spec, VSphereSettings)
        provider = cls(spec, settings)
        for ref in (provider.username, provider.password):
            if isinstance(ref, SecretRef):
                ref.check()
        return provider

    # -- plumbing (all of it runs on the provider's threads) --------------------------
    def _secrets(self) -> list[str | None]:
        try:
            return [reveal(self.username), self.password.get().get_secret_value()]
        except ConfigError:
            return []

    def _connect(self) -> Any:
        with self._lock:
            if self._si is not None:
                return self._si
            self._si = SmartConnect(**connect_options(self.settings), user=reveal(self.username),
                                    pwd=self.password.get().get_secret_value())
            return self._si

    def _session(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(service_instance)``, logging in again once if the session expired."""
        try:
            return fn(self._connect())
        except vim.fault.NotAuthenticated:
            with self._lock:
                self._si = None
            return fn(self._connect())

    def _error(self, exc: BaseException, what: str) -> ProviderError:
        return vsphere_errors.classify(exc, what, provider=self.name, secrets=self._secrets())

    async def _run(self, fn: Callable[[], T], *, what: str, timeout: float | None = None) -> T:
        def guarded() -> T:
            try:
                return fn()
            except BaseException as exc:
                raise self._error(exc, what) from None
        return await self.blocking(guarded, what=what, timeout=timeout)

    def _wait(self, task: Any, what: str) -> Any:
        """Wait for a task until it ends or ``task_timeout`` passes."""
        deadline = time.monotonic() + self.settings.task_timeout
        pause = 0.05
        while True:
            info = task.info
            if info.state == vim.TaskInfo.State.success:
                return info.result
            if info.state == vim.TaskInfo.State.error:
                raise info.error or vmodl.fault.SystemError(msg=f"{what} failed")
            if time.monotonic() >= deadline:
                raise TransientError(self.name, f"{what}: task still running after "
                                                f"{self.settings.task_timeout:g}s")
            time.sleep(pause)
            pause = min(pause * 2, 2.0)

    def _ours(self, marks: dict[str, str]) -> bool:
        return vsphere_clone.is_ours(marks, owner=self.settings.owner, provider=self.name)

    def _machine(self, vm: Any, name: str, marks: dict[str, str]) -> Machine:
        return vsphere_clone.machine_from_marks(marks, provider=self.name, machine_id=vm._moId,
                                                name=name)

    def _owned(self, si: Any) -> list[tuple[Any, Machine, str]]:
        dc = self.places.datacenter(si)
        owned = []
        for vm, props in retrieve(si, dc.vmFolder, vim.VirtualMachine,
                                  ["name", "config.extraConfig", "runtime.powerState"]):
            marks = vsphere_clone.marks_of(props.get("config.extraConfig"))
            if not self._ours(marks):
                continue
            state = str(props.get("runtime.powerState", ""))
            machine = replace(self._machine(vm, props.get("name", vm._moId), marks),
                              power=_POWER.get(state, PowerState.UNKNOWN))
            owned.append((vm, machine, state))
        return owned

    def _power_on(self, si: Any, vm: Any, state: str, what: str) -> None:
        if state == vim.VirtualMachine.PowerState.poweredOn:
            return
        with contextlib.suppress(vim.fault.InvalidPowerState):  # powered on meanwhile
            self._wait(vm.PowerOnVM_Task(), f"{what}: power on")

    # -- the contract -----------------------------------------------------------------
    def _create(self, request: CreateRequest) -> Machine:
        what = f"create {request.name}"
        blueprint = request.blueprint
        extra = vsphere_clone.blueprint_settings(blueprint, provider=self.name)

        def clone(si: Any) -> Machine:
            template = self.places.template(si, blueprint.template or "")
            marks = vsphere_clone.owner_marks(
                owner=self.settings.owner, provider=self.name, key=request.key,
                pool=request.pool, blueprint=blueprint.name, created=time.time())
            options = vsphere_clone.clone_options(marks, name=request.name,
                                                  user_data=blueprint.user_data)
            config = vim.vm.ConfigSpec(
                extraConfig=[vim.option.OptionValue(key=k, value=v) for k, v in options.items()],
                annotation=extra.annotation or f"made by gearshift for pool {request.pool}")
            if extra.cpus:
                config.numCPUs = extra.cpus
            if extra.memory_mb:
                config.memoryMB = extra.memory_mb
            spec = vim.vm.CloneSpec(
                location=vim.vm.RelocateSpec(pool=self.places.pool(si, template),
                                             datastore=self.places.datastore(si)),
                powerOn=False, template=False, config=config)
            fresh = True
            try:
                vm = self._wait(template.CloneVM_Task(folder=self.places.folder(si),
                                                      name=request.name, spec=spec),
                                f"{what}: clone")
            except vim.fault.DuplicateName:
                fresh = False
                # A clone from an earlier attempt finished meanwhile: use it if it is ours.
                mine = [(v, m) for v, m, _ in self._owned(si) if m.key == request.key]
                if not mine:
                    raise PermanentError(self.name, f"{what}: a VM named {request.name} "
                                                    f"exists and is not gearshift's") from None
                vm = mine[0][0]
            try:
                self._power_on(si, vm, "", what)
            except Exception as exc:
                if fresh and isinstance(self._error(exc, what),
                                        CapacityUnavailable | QuotaExceeded):
                    # no room to run it: leave nothing behind that nobody asked for
                    with contextlib.suppress(Exception):
                        self._wait(vm.Destroy_Task(), f"{what}: remove the clone")
                raise
            return self._machine(vm, request.name, marks)

        return self._session(clone)

    async def create(self, request: CreateRequest) -> Machine:
        existing = await self._run(lambda: self._session(
            lambda si: [(vm, m, state) for vm, m, state in self._owned(si)
                        if m.key == request.key]), what=f"find {request.name}")
        if existing:
            vm, machine, state = existing[0]
            await self._run(lambda: self._session(
                lambda si: self._power_on(si, vm, state, f"create {request.name}")),
                what=f"power on {request.name}", timeout=self.call_timeout)
            return machine
        async with self.slots.claim(self.list_owned):
            machine = await self._run(lambda: self._create(request), what=f"create {request.name}",
                                      timeout=self.call_timeout)
        log.info("vm created", provider=self.name, vm=machine.machine_id, name=machine.name,
                 pool=request.pool)
        return machine

    async def list_owned(self) -> list[Machine]:
        owned = await self._run(lambda: self._session(self._owned), what="list VMs")
        return self.slots.counted([machine for _, machine, _ in owned])

    def _ours_by_id(self, si: Any, machine_id: str, what: str) -> tuple[Any, str] | None:
        """The VM ``machine_id`` and its power state (None: gone); not ours: refused."""
        vm = vim.VirtualMachine(machine_id, si._stub)
        try:
            props = retrieve_one(si, vm, vim.VirtualMachine,
                                 ["config.extraConfig", "runtime.powerState"])
        except vmodl.fault.ManagedObjectNotFound:
            return None
        if not props:
            return None
        if not self._ours(vsphere_clone.marks_of(props.get("config.extraConfig"))):
            raise vsphere_clone.not_ours(what, owner=self.settings.owner, provider=self.name)
        return vm, str(props.get("runtime.powerState", ""))

    def _power_off(self, si: Any, vm: Any, state: str, what: str) -> None:
        if state != vim.VirtualMachine.PowerState.poweredOff:
            with contextlib.suppress(vim.fault.InvalidPowerState):  # off meanwhile
                self._wait(vm.PowerOffVM_Task(), f"{what}: power off")

    async def _find(self, machine_id: str, what: str) -> tuple[Any, str] | None:
        """Look the VM up within request_timeout (as create does): only tasks take long."""
        return await self._run(lambda: self._session(
            lambda si: self._ours_by_id(si, machine_id, what)), what=what)

    async def destroy(self, machine_id: str) -> None:
        what = f"destroy {machine_id}"

        def destroy(si: Any, vm: Any, state: str) -> bool:
            self._power_off(si, vm, state, what)
            try:
                self._wait(vm.Destroy_Task(), what)
            except vmodl.fault.ManagedObjectNotFound:
                return False
            return True

        try:
            found = await self._find(machine_id, what)
            if found is None:
                return
            gone = await self._run(lambda: self._session(lambda si: destroy(si, *found)),
                                   what=what, timeout=self.call_timeout)
        except NotFound:
            return  # vanished while we were at it
        if gone:
            self.slots.released()
            log.info("vm destroyed", provider=self.name, vm=machine_id)

    async def _power(self, machine_id: str, *, on: bool) -> None:
        """PowerOnVM_Task / PowerOffVM_Task (disks kept), waiting for the task."""
        what = f"{'start' if on else 'stop'} {machine_id}"
        found = await self._find(machine_id, what)
        if found is None:
            raise NotFound(self.name, f"{what}: no such VM")
        change = self._power_on if on else self._power_off
        await self._run(lambda: self._session(lambda si: change(si, *found, what)), what=what,
                        timeout=self.call_timeout)
        log.info("vm powered on" if on else "vm powered off", provider=self.name, vm=machine_id)

    async def stop(self, machine_id: str) -> None:
        await self._power(machine_id, on=False)

    async def start(self, machine_id: str) -> None:
        await self._power(machine_id, on=True)

    async def quota(self) -> QuotaInfo:
        return QuotaInfo(max_nodes=self.spec.quota.max_nodes, used=len(await self.list_owned()))

    async def close(self) -> None:
        si, self._si = self._si, None
        if si is not None:
            with contextlib.suppress(ProviderError, OSError, vmodl.MethodFault):
                await self.blocking(lambda: Disconnect(si), what="log out",
                                    timeout=min(5.0, self.settings.request_timeout))
        self.blocking.close()

