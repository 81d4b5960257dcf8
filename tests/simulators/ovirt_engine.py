"""A stateful fake oVirt engine (aiohttp), faithful enough for the real ovirtsdk4 to drive it.

No oVirt simulator exists anywhere (the SDK's own test server is canned responses and is not
shipped), so this fake keeps real state and answers with the engine's own shapes: XML
documents in the v4 API's element names, ``<fault>`` bodies with the engine's messages and
status codes, and JSON from the SSO service. It covers exactly:

* SSO: ``POST /ovirt-engine/sso/oauth/token`` (grant_type=password, scope ovirt-app-api;
  JSON ``access_token``, or JSON ``error``/``error_code`` for bad credentials) and
  ``POST /ovirt-engine/services/sso-logout`` (revokes the token, JSON reply);
* every ``/ovirt-engine/api`` request needs ``Authorization: Bearer TOKEN`` (else 401);
* ``GET /ovirt-engine/api`` (product info), ``GET /clusters``, ``GET /templates``;
* VMs: ``GET /vms?search=...&max=N`` (search terms ``name=``, ``tag=``, ``cluster=``,
  ``status=`` joined by ``and``, ``*`` wildcards), ``POST /vms`` (from a template by name or
  id, into a cluster by name or id; 201 with the VM ``image_locked``, which turns ``down``
  after ``--lock`` seconds), ``GET /vms/ID``, ``POST /vms/ID/start`` (``powering_up``, then
  ``up`` after ``--boot`` seconds), ``POST /vms/ID/stop`` (``down``), ``DELETE /vms/ID``;
* tags: ``GET/POST /tags``, ``GET/POST /vms/ID/tags``, ``DELETE /vms/ID/tags/TAG_ID``.

Engine rules it enforces, with the engine's messages: 409 for a duplicate VM name
("The VM name is already in use"), 409 to start a locked or running VM, to remove a VM
that is not down, or to stop one that is not running; 404 for an unknown VM (also after
removal), cluster, template or tag. Two knobs stand in for real limits: a cluster's
``vms=N`` is a quota ("Quota has no sufficient cluster resources", 409 on add) and
``running=N`` is its hosts' capacity ("There is no host that satisfies current scheduling
constraints", 409 on start).

Not covered: disks, NICs, hosts, data centers, permissions, async jobs, JSON API bodies,
``follow``/``all_content``, paging beyond ``max``.

    python -m simulators.ovirt_engine --port PORT --user admin@internal \\
        --password-env OVIRT_PASSWORD --cluster Default --cluster Full:running=0 \\
        --template node-template
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import re
import secrets
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Handler

API = "/ovirt-engine/api"
XML = "application/xml"
BLANK = "00000000-0000-0000-0000-000000000000"


@dataclass
class Cluster:
    id: str
    name: str
    vm_quota: int | None = None  # VMs the cluster's quota allows
    running_limit: int | None = None  # VMs its hosts can run


@dataclass
class Vm:
    id: str
    name: str
    cluster: str
    template: str
    comment: str = ""
    description: str = ""
    host_name: str | None = None
    custom_script: str | None = None
    status: str = "image_locked"
    pending: tuple[str, float] | None = None  # (status, at monotonic time)
    tags: set[str] = field(default_factory=set)
    created: float = field(default_factory=time.time)

    def settle(self) -> None:
        if self.pending is not None and time.monotonic() >= self.pending[1]:
            self.status, self.pending = self.pending[0], None


class Engine:
    def __init__(self, *, user: str, password: str, clusters: list[Cluster],
                 templates: list[str], lock: float, boot: float) -> None:
        self.user = user
        self.password = password
        self.tokens: set[str] = set()
        self.clusters = {c.id: c for c in clusters}
        self.templates = {BLANK: "Blank"} | {str(uuid.uuid4()): t for t in templates}
        self.vms: dict[str, Vm] = {}
        self.tags: dict[str, str] = {}  # id -> name
        self.lock = lock
        self.boot = boot
        self.requests = 0

    # -- rendering --------------------------------------------------------------------
    def vm_xml(self, vm: Vm) -> ET.Element:
        vm.settle()
        href = f"{API}/vms/{vm.id}"
        el = ET.Element("vm", href=href, id=vm.id)
        actions = ET.SubElement(el, "actions")
        for rel in ("start", "stop", "shutdown"):
            ET.SubElement(actions, "link", href=f"{href}/{rel}", rel=rel)
        ET.SubElement(el, "name").text = vm.name
        ET.SubElement(el, "comment").text = vm.comment
        ET.SubElement(el, "description").text = vm.description
        ET.SubElement(el, "link", href=f"{href}/tags", rel="tags")
        ET.SubElement(el, "creation_time").text = time.strftime(
            "%Y-%m-%dT%H:%M:%S.000+00:00", time.gmtime(vm.created))
        if vm.host_name or vm.custom_script:
            init = ET.SubElement(el, "initialization")
            if vm.host_name:
                ET.SubElement(init, "host_name").text = vm.host_name
            if vm.custom_script:
                ET.SubElement(init, "custom_script").text = vm.custom_script
        ET.SubElement(el, "status").text = vm.status
        ET.SubElement(el, "cluster", href=f"{API}/clusters/{vm.cluster}", id=vm.cluster)
        ET.SubElement(el, "template", href=f"{API}/templates/{vm.template}", id=vm.template)
        return el

    def tag_xml(self, tag_id: str, vm: Vm | None = None) -> ET.Element:
        href = f"{API}/vms/{vm.id}/tags/{tag_id}" if vm else f"{API}/tags/{tag_id}"
        el = ET.Element("tag", href=href, id=tag_id)
        ET.SubElement(el, "name").text = self.tags[tag_id]
        if vm is not None:
            ET.SubElement(el, "vm", href=f"{API}/vms/{vm.id}", id=vm.id)
        return el

    # -- queries ----------------------------------------------------------------------
    def matches(self, vm: Vm, search: str) -> bool:
        vm.settle()
        for term in re.split(r"\s+and\s+", search.strip(), flags=re.IGNORECASE):
            if not term:
                continue
            key, _, value = term.partition("=")
            key, value = key.strip().lower(), value.strip().strip('"')
            if key == "name":
                ok = fnmatch.fnmatchcase(vm.name, value)
            elif key == "tag":
                ok = any(fnmatch.fnmatchcase(self.tags[t], value) for t in vm.tags)
            elif key == "cluster":
                ok = fnmatch.fnmatchcase(self.clusters[vm.cluster].name, value)
            elif key == "status":
                ok = vm.status == value.lower()
            else:
                raise ValueError(term)
            if not ok:
                return False
        return True


def xml_response(element: ET.Element, status: int = 200) -> web.Response:
    return web.Response(body=ET.tostring(element, encoding="utf-8", xml_declaration=True),
                        status=status, content_type=XML)


def fault(status: int, detail: str, reason: str = "Operation Failed") -> web.Response:
    el = ET.Element("fault")
    ET.SubElement(el, "reason").text = reason
    ET.SubElement(el, "detail").text = detail
    return xml_response(el, status)


def action_done(vm: Vm | None = None) -> web.Response:
    el = ET.Element("action")
    ET.SubElement(el, "status").text = "complete"
    if vm is not None:
        ET.SubElement(el, "vm", href=f"{API}/vms/{vm.id}", id=vm.id)
    return xml_response(el)


def ref(element: ET.Element | None) -> tuple[str | None, str | None]:
    """(id, name) of a reference such as <cluster id="..."/> or <cluster><name>..</name>."""
    if element is None:
        return None, None
    return element.get("id"), element.findtext("name")


def make_app(engine: Engine) -> web.Application:
    routes = web.RouteTableDef()

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        engine.requests += 1
        if request.path.startswith(API):
            header = request.headers.get("Authorization", "")
            if not header.startswith("Bearer ") or header[7:] not in engine.tokens:
                return web.Response(status=401, headers={"WWW-Authenticate": "Bearer"})
        return await handler(request)

    @routes.post("/ovirt-engine/sso/oauth/token")
    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") != "password" or "ovirt-app-api" not in str(form.get("scope")):
            return web.json_response({"error_code": "invalid_request",
                                      "error": "Unsupported grant type or scope."}, status=400)
        if form.get("username") != engine.user or form.get("password") != engine.password:
            return web.json_response(
                {"error_code": "access_denied",
                 "error": f"Cannot authenticate user '{form.get('username')!s}': The username "
                          f"or password is incorrect.."}, status=400)
        value = secrets.token_urlsafe(32)
        engine.tokens.add(value)
        return web.json_response({"access_token": value, "scope": "ovirt-app-api",
                                  "exp": str(int((time.time() + 36000) * 1000)),
                                  "token_type": "bearer"})

    @routes.post("/ovirt-engine/services/sso-logout")
    async def logout(request: web.Request) -> web.Response:
        form = await request.post()
        engine.tokens.discard(str(form.get("token", "")))
        return web.json_response({})

    @routes.get(API)
    async def root(request: web.Request) -> web.Response:
        el = ET.Element("api")
        info = ET.SubElement(el, "product_info")
        ET.SubElement(info, "name").text = "oVirt Engine (gearshift fake)"
        version = ET.SubElement(info, "version")
        ET.SubElement(version, "major").text = "4"
        ET.SubElement(version, "minor").text = "5"
        return xml_response(el)

    @routes.get(API + "/clusters")
    async def clusters(request: web.Request) -> web.Response:
        el = ET.Element("clusters")
        for c in engine.clusters.values():
            ET.SubElement(ET.SubElement(el, "cluster", href=f"{API}/clusters/{c.id}", id=c.id),
                          "name").text = c.name
        return xml_response(el)

    @routes.get(API + "/templates")
    async def templates(request: web.Request) -> web.Response:
        el = ET.Element("templates")
        for tid, name in engine.templates.items():
            ET.SubElement(ET.SubElement(el, "template", href=f"{API}/templates/{tid}", id=tid),
                          "name").text = name
        return xml_response(el)

    @routes.get(API + "/vms")
    async def list_vms(request: web.Request) -> web.Response:
        search = request.query.get("search", "")
        limit = int(request.query.get("max", "-1"))
        try:
            found = [vm for vm in engine.vms.values() if engine.matches(vm, search)]
        except ValueError:
            return fault(400, f"Search error: cannot parse '{search}'")
        if limit >= 0:
            found = found[:limit]
        el = ET.Element("vms")
        for vm in found:
            el.append(engine.vm_xml(vm))
        return xml_response(el)

    @routes.post(API + "/vms")
    async def add_vm(request: web.Request) -> web.Response:
        body = ET.fromstring(await request.read())
        name = body.findtext("name")
        if not name:
            return fault(400, "[VM Name cannot be empty.]", reason="Incomplete parameters")
        cid, cname = ref(body.find("cluster"))
        cluster = next((c for c in engine.clusters.values() if c.id == cid or c.name == cname),
                       None)
        if cluster is None:
            return fault(404, f"Entity not found: Cluster: {'id' if cid else 'name'}="
                              f"{cid or cname}")
        tid, tname = ref(body.find("template"))
        if tid is None and tname is None:
            tid = BLANK
        template = next((t for t, n in engine.templates.items() if t == tid or n == tname), None)
        if template is None:
            return fault(404, f"Entity not found: Template: {'id' if tid else 'name'}="
                              f"{tid or tname}")
        if any(vm.name == name for vm in engine.vms.values()):
            return fault(409, "[Cannot add VM. The VM name is already in use, please choose a "
                              "unique name and try again.]")
        in_cluster = sum(1 for vm in engine.vms.values() if vm.cluster == cluster.id)
        if cluster.vm_quota is not None and in_cluster >= cluster.vm_quota:
            return fault(409, "[Cannot add VM. Quota has no sufficient cluster resources.]")
        vm = Vm(id=str(uuid.uuid4()), name=name, cluster=cluster.id, template=template,
                comment=body.findtext("comment") or "",
                description=body.findtext("description") or "",
                host_name=body.findtext("initialization/host_name"),
                custom_script=body.findtext("initialization/custom_script"),
                pending=("down", time.monotonic() + engine.lock))
        engine.vms[vm.id] = vm
        return xml_response(engine.vm_xml(vm), status=201)

    def get_vm(request: web.Request) -> Vm | web.Response:
        vm = engine.vms.get(request.match_info["id"])
        if vm is None:
            return fault(404, f"Entity not found: {request.match_info['id']}",
                         reason="Resource not found")
        vm.settle()
        return vm

    @routes.get(API + "/vms/{id}")
    async def vm_get(request: web.Request) -> web.Response:
        vm = get_vm(request)
        return vm if isinstance(vm, web.Response) else xml_response(engine.vm_xml(vm))

    @routes.post(API + "/vms/{id}/start")
    async def vm_start(request: web.Request) -> web.Response:
        vm = get_vm(request)
        if isinstance(vm, web.Response):
            return vm
        if vm.status == "image_locked":
            return fault(409, "[Cannot run VM. The disk image is being copied. Please wait for "
                              "the copy operation to complete.]")
        if vm.status != "down":
            return fault(409, "[Cannot run VM. VM is running.]")
        cluster = engine.clusters[vm.cluster]
        for other in engine.vms.values():
            other.settle()
        running = sum(1 for v in engine.vms.values()
                      if v.cluster == cluster.id and v.status in ("powering_up", "up"))
        if cluster.running_limit is not None and running >= cluster.running_limit:
            return fault(409, "[Cannot run VM. There is no host that satisfies current "
                              "scheduling constraints. See below for details:, The host "
                              "host_mixed_1 did not satisfy internal filter Memory because "
                              "its available memory is too low (487 MB) to run the VM.]")
        vm.status, vm.pending = "powering_up", ("up", time.monotonic() + engine.boot)
        return action_done(vm)

    @routes.post(API + "/vms/{id}/stop")
    async def vm_stop(request: web.Request) -> web.Response:
        vm = get_vm(request)
        if isinstance(vm, web.Response):
            return vm
        if vm.status in ("down", "image_locked"):
            return fault(409, "[Cannot stop VM. VM is not running.]")
        vm.status, vm.pending = "down", None
        return action_done(vm)

    @routes.delete(API + "/vms/{id}")
    async def vm_remove(request: web.Request) -> web.Response:
        vm = get_vm(request)
        if isinstance(vm, web.Response):
            return vm
        if vm.status == "image_locked":
            return fault(409, "[Cannot remove VM: VM is locked. Please try again in a few "
                              "minutes.]")
        if vm.status != "down":
            return fault(409, "[Cannot remove VM. VM is running.]")
        del engine.vms[vm.id]
        return action_done()

    @routes.get(API + "/tags")
    async def list_tags(request: web.Request) -> web.Response:
        el = ET.Element("tags")
        for tag_id in engine.tags:
            el.append(engine.tag_xml(tag_id))
        return xml_response(el)

    @routes.post(API + "/tags")
    async def add_tag(request: web.Request) -> web.Response:
        name = ET.fromstring(await request.read()).findtext("name")
        if not name:
            return fault(400, "[Tag name cannot be empty.]", reason="Incomplete parameters")
        if name in engine.tags.values():
            return fault(409, "[Cannot add Tag. Tag name is in use.]")
        tag_id = str(uuid.uuid4())
        engine.tags[tag_id] = name
        return xml_response(engine.tag_xml(tag_id), status=201)

    @routes.get(API + "/vms/{id}/tags")
    async def vm_tags(request: web.Request) -> web.Response:
        vm = get_vm(request)
        if isinstance(vm, web.Response):
            return vm
        el = ET.Element("tags")
        for tag_id in sorted(vm.tags):
            el.append(engine.tag_xml(tag_id, vm))
        return xml_response(el)

    @routes.post(API + "/vms/{id}/tags")
    async def vm_tag(request: web.Request) -> web.Response:
        vm = get_vm(request)
        if isinstance(vm, web.Response):
            return vm
        tid, tname = ref(ET.fromstring(await request.read()))
        tag_id = next((t for t, n in engine.tags.items() if t == tid or n == tname), None)
        if tag_id is None:
            return fault(404, f"Entity not found: Tag: {'id' if tid else 'name'}={tid or tname}")
        if tag_id in vm.tags:
            return fault(409, "[Cannot attach Tag to VM. Tag is already attached to VM.]")
        vm.tags.add(tag_id)
        return xml_response(engine.tag_xml(tag_id, vm), status=201)

    @routes.delete(API + "/vms/{id}/tags/{tag}")
    async def vm_untag(request: web.Request) -> web.Response:
        vm = get_vm(request)
        if isinstance(vm, web.Response):
            return vm
        if request.match_info["tag"] not in vm.tags:
            return fault(404, f"Entity not found: {request.match_info['tag']}")
        vm.tags.discard(request.match_info["tag"])
        return action_done()

    app = web.Application(middlewares=[auth])
    app.add_routes(routes)
    app["engine"] = engine
    return app


def parse_cluster(text: str) -> Cluster:
    name, _, options = text.partition(":")
    limits = dict(item.split("=", 1) for item in options.split(",") if item)
    return Cluster(id=str(uuid.uuid4()), name=name,
                   vm_quota=int(limits["vms"]) if "vms" in limits else None,
                   running_limit=int(limits["running"]) if "running" in limits else None)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m simulators.ovirt_engine")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", default="admin@internal")
    parser.add_argument("--password-env", default="OVIRT_PASSWORD",
                        help="environment variable holding the password")
    parser.add_argument("--cluster", action="append", default=[],
                        help="NAME[:vms=N,running=N] (repeatable)")
    parser.add_argument("--template", action="append", default=[])
    parser.add_argument("--lock", type=float, default=0.2, help="seconds a new VM stays locked")
    parser.add_argument("--boot", type=float, default=0.2, help="seconds from start to up")
    args = parser.parse_args()
    engine = Engine(user=args.user, password=os.environ[args.password_env],
                    clusters=[parse_cluster(c) for c in args.cluster or ["Default"]],
                    templates=args.template, lock=args.lock, boot=args.boot)
    web.run_app(make_app(engine), host="127.0.0.1", port=args.port, print=None,
                handle_signals=True, access_log=None)


if __name__ == "__main__":
    main()
