"""Where the vSphere driver finds things: property-collector reads and the clone's places.

``retrieve`` and ``retrieve_one`` read properties with the property collector, one call
for any number of objects (walking objects one by one costs a SOAP round trip each).
``Places`` resolves what the settings name (the datacenter, a template, the resource
pool, the VM folder, the datastore) once and keeps the answer: they do not move while
gearshift runs, and a create should not spend its deadline looking them up again.

Apart from the driver (``vsphere.py``: what a node is, and the provider contract) because
looking up the inventory is the same whatever the call. The name matching itself is in
``vsphere_inventory`` (no SDK); this module makes the SDK calls, so it is on the
SDK-confinement contract's list next to the driver. Everything here runs on the
provider's threads.
"""

from __future__ import annotations

from typing import Any

from pyVmomi import vim as _vim
from pyVmomi import vmodl as _vmodl

from gearshift.act.providers.kind_settings import VSphereSettings
from gearshift.act.providers.vsphere_inventory import Found, one_datacenter, one_named
from gearshift.errors import PermanentError

# pyVmomi's classes are generated at import time and untyped: treat them as Any here.
vim: Any = _vim
vmodl: Any = _vmodl


def retrieve(si: Any, root: Any, kind: Any, paths: list[str], recursive: bool = True) -> Found:
    """Every ``kind`` object below ``root`` with the properties ``paths``, in one call."""
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(root, [kind], recursive)
    try:
        pc = vmodl.query.PropertyCollector
        spec = pc.FilterSpec(
            objectSet=[pc.ObjectSpec(obj=view, skip=True, selectSet=[pc.TraversalSpec(
                name="view", path="view", skip=False, type=vim.view.ContainerView)])],
            propSet=[pc.PropertySpec(type=kind, pathSet=paths)])
        found = content.propertyCollector.RetrieveContents([spec]) or []
    finally:
        view.DestroyView()
    return [(o.obj, {p.name: p.val for p in o.propSet}) for o in found]


def retrieve_one(si: Any, obj: Any, kind: Any, paths: list[str]) -> dict[str, Any]:
    """The properties ``paths`` of the one object ``obj``."""
    pc = vmodl.query.PropertyCollector
    spec = pc.FilterSpec(objectSet=[pc.ObjectSpec(obj=obj, skip=False)],
                         propSet=[pc.PropertySpec(type=kind, pathSet=paths)])
    found = si.RetrieveContent().propertyCollector.RetrieveContents([spec]) or []
    return {p.name: p.val for o in found for p in o.propSet}


class Places:
    """The inventory objects provider ``provider``'s settings name, looked up once each."""

    def __init__(self, settings: VSphereSettings, *, provider: str) -> None:
        self.settings = settings
        self.provider = provider
        self._places: dict[str, Any] = {}

    def datacenter(self, si: Any) -> Any:
        if "dc" in self._places:
            return self._places["dc"]
        content = si.RetrieveContent()
        found = retrieve(si, content.rootFolder, vim.Datacenter, ["name"])
        self._places["dc"] = one_datacenter(found, self.settings.datacenter,
                                            provider=self.provider)
        return self._places["dc"]

    def _find_one(self, si: Any, root: Any, kind: Any, name: str, what: str) -> Any:
        return one_named(retrieve(si, root, kind, ["name"]), name, provider=self.provider,
                         what=what)

    def template(self, si: Any, name: str) -> Any:
        key = f"template:{name}"
        if key not in self._places:
            dc = self.datacenter(si)
            self._places[key] = self._find_one(si, dc.vmFolder, vim.VirtualMachine, name,
                                               "template")
        return self._places[key]

    def pool(self, si: Any, template: Any) -> Any:
        s = self.settings
        if s.resource_pool is None and s.cluster is None:
            props = dict(retrieve_one(si, template, vim.VirtualMachine, ["resourcePool"]))
            if props.get("resourcePool") is not None:
                return props["resourcePool"]
            raise PermanentError(self.provider, "the template has no resource pool (it is a "
                                                "template): set settings.cluster or "
                                                "resource_pool")
        if "pool" not in self._places:
            dc = self.datacenter(si)
            if s.resource_pool is not None:
                self._places["pool"] = self._find_one(si, dc.hostFolder, vim.ResourcePool,
                                                      s.resource_pool, "resource pool")
            else:
                assert s.cluster is not None
                cluster = self._find_one(si, dc.hostFolder, vim.ClusterComputeResource,
                                         s.cluster, "cluster")
                self._places["pool"] = dict(retrieve_one(
                    si, cluster, vim.ClusterComputeResource, ["resourcePool"]))["resourcePool"]
        return self._places["pool"]

    def folder(self, si: Any) -> Any:
        if "folder" not in self._places:
            dc = self.datacenter(si)
            if self.settings.folder is None:
                self._places["folder"] = dc.vmFolder
            else:
                path = f"{dc.name}/vm/{self.settings.folder.strip('/')}"
                folder = si.RetrieveContent().searchIndex.FindByInventoryPath(path)
                if folder is None:
                    raise PermanentError(self.provider, f"VM folder {self.settings.folder!r} "
                                                        f"not found")
                self._places["folder"] = folder
        return self._places["folder"]

    def datastore(self, si: Any) -> Any:
        if self.settings.datastore is None:
            return None
        if "datastore" not in self._places:
            dc = self.datacenter(si)
            self._places["datastore"] = self._find_one(si, dc.datastoreFolder, vim.Datastore,
                                                       self.settings.datastore, "datastore")
        return self._places["datastore"]
