"""What each driver does beyond the common contract, checked on its simulator's own state."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import ovirtsdk4 as sdk
import pytest
from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim

from gearshift.act.providers.base import Provider
from gearshift.act.providers.ec2 import Ec2Provider
from gearshift.act.providers.guard import GuardedProvider, GuardSettings
from gearshift.act.providers.registry import build_provider
from gearshift.clock import InstantClock
from gearshift.errors import CapacityUnavailable, PermanentError, TransientError
from gearshift.policy.schema import ProviderSpec
from gearshift.records import Allocation
from gearshift.store.journal import MemoryJournal
from providers.conftest import (
    SECRETS,
    BareMetalHarness,
    Ec2Harness,
    OvirtHarness,
    VSphereHarness,
    new_key,
)
from simulators import moto as moto_sim

pytestmark = pytest.mark.peer("provider simulators")


# -- vSphere ------------------------------------------------------------------------------
def _vms(url: str) -> dict[str, Any]:
    """name -> (moId, pool name, power state, extraConfig) straight from vcsim."""
    parts = urlsplit(url)
    si = SmartConnect(host=parts.hostname, port=parts.port, user="gearshift",
                      pwd=SECRETS["vsphere"], disableSslCertValidation=True)
    try:
        content = si.RetrieveContent()
        view = content.viewManager.CreateContainerView(content.rootFolder,
                                                       [vim.VirtualMachine], True)
        found = {}
        for vm in view.view:
            if vm.config.template:
                continue
            found[vm.name] = {"id": vm._moId, "pool": vm.resourcePool.parent.name,
                              "power": vm.runtime.powerState,
                              "extra": {o.key: o.value for o in vm.config.extraConfig}}
        return found
    finally:
        Disconnect(si)


async def test_vsphere_clones_into_the_cluster_with_marks_and_cloud_init(
        vcsim: Any, tmp_path: Path) -> None:
    harness = VSphereHarness("vsphere", tmp_path, sim=vcsim)
    provider = harness.provider()
    request = harness.request(new_key())
    machine = await provider.create(request)
    vm = (await asyncio.to_thread(_vms, vcsim.url))[request.name]
    assert vm["id"] == machine.machine_id
    assert vm["pool"] == "DC0_C0"  # settings.cluster's root resource pool
    assert vm["power"] == "poweredOn"
    extra = vm["extra"]
    assert extra["gearshift.owner"] == "gearshift"
    assert extra["gearshift.provider"] == provider.name
    assert extra["gearshift.key"] == request.key
    metadata = json.loads(base64.b64decode(extra["guestinfo.metadata"]))
    assert metadata == {"instance-id": request.name, "local-hostname": request.name}
    assert base64.b64decode(extra["guestinfo.userdata"]).decode() == "#cloud-config\n"
    assert extra["guestinfo.userdata.encoding"] == "base64"

    other = harness.provider()  # another provider on the same vCenter sees none of it
    assert await other.list_owned() == []
    with pytest.raises(PermanentError, match="refusing to destroy"):
        await other.destroy(machine.machine_id)
    await provider.destroy(machine.machine_id)
    assert request.name not in await asyncio.to_thread(_vms, vcsim.url)
    await harness.close()


async def test_vsphere_never_destroys_a_vm_it_did_not_make(vcsim: Any, tmp_path: Path) -> None:
    harness = VSphereHarness("vsphere", tmp_path, sim=vcsim)
    foreign = (await asyncio.to_thread(_vms, vcsim.url))["DC0_H0_VM0"]
    with pytest.raises(PermanentError, match=r"does not carry gearshift\.owner"):
        await harness.provider().destroy(foreign["id"])
    assert "DC0_H0_VM0" in await asyncio.to_thread(_vms, vcsim.url)
    await harness.close()


# -- oVirt --------------------------------------------------------------------------------
def _engine_vm(url: str, name: str) -> Any:
    conn = sdk.Connection(url=f"{url}/ovirt-engine/api", username="gearshift@internal",
                          password=SECRETS["ovirt"], timeout=10)
    try:
        vms = conn.system_service().vms_service()
        found = vms.list(search=f"name={name}")
        if not found:
            return None
        vm = found[0]
        tags = [t.name for t in vms.vm_service(vm.id).tags_service().list()]
        return vm, tags
    finally:
        conn.close()


async def test_ovirt_makes_a_tagged_running_vm_from_the_template(
        ovirt_engine: Any, tmp_path: Path) -> None:
    harness = OvirtHarness("ovirt", tmp_path, sim=ovirt_engine)
    provider = harness.provider()
    request = harness.request(new_key())
    machine = await provider.create(request)
    vm, tags = await asyncio.to_thread(_engine_vm, ovirt_engine.url, request.name)
    assert vm.id == machine.machine_id
    assert vm.status.value in ("powering_up", "up")
    assert tags == ["gearshift"]
    assert vm.comment == (f"gearshift:owner=gearshift;provider={provider.name};"
                          f"key={request.key};pool=small;blueprint={request.blueprint.name}")
    assert vm.initialization.host_name == request.name
    assert vm.initialization.custom_script == "#cloud-config\n"
    await provider.destroy(machine.machine_id)
    assert await asyncio.to_thread(_engine_vm, ovirt_engine.url, request.name) is None
    await harness.close()


async def test_ovirt_removes_a_vm_it_could_not_start_for_lack_of_capacity(
        ovirt_engine: Any, tmp_path: Path) -> None:
    harness = OvirtHarness("ovirt", tmp_path, sim=ovirt_engine)
    provider, request = await harness.capacity_case()
    with pytest.raises(CapacityUnavailable, match="no host that satisfies"):
        await provider.create(request)
    assert await asyncio.to_thread(_engine_vm, ovirt_engine.url, request.name) is None
    await harness.close()


async def test_ovirt_fetches_a_new_token_when_the_engine_forgets_it(
        ovirt_engine: Any, tmp_path: Path) -> None:
    harness = OvirtHarness("ovirt", tmp_path, sim=ovirt_engine)
    provider = harness.provider()
    assert await provider.list_owned() == []
    token = provider.engine.token  # type: ignore[attr-defined]
    async with aiohttp.ClientSession() as session, session.post(
            f"{ovirt_engine.url}/ovirt-engine/services/sso-logout", data={"token": token}):
        pass  # the engine revokes it behind the provider's back (as on expiry)
    assert await provider.list_owned() == []
    assert provider.engine.token != token  # type: ignore[attr-defined]
    await harness.close()


# -- EC2 ----------------------------------------------------------------------------------
async def test_ec2_launches_with_the_key_as_client_token_and_tags_at_launch(
        moto_server: Any, tmp_path: Path) -> None:
    harness = Ec2Harness("ec2", tmp_path, sim=moto_server)
    provider = harness.provider(subnet_id=None)
    sent: list[dict[str, list[str]]] = []
    client = await provider.client()  # type: ignore[attr-defined]

    def record(request: Any, **_: Any) -> None:
        sent.append(parse_qs(request.body.decode() if isinstance(request.body, bytes)
                             else str(request.body)))

    client.meta.events.register("before-send.ec2.RunInstances", record)
    request = harness.request(new_key(), harness.blueprint(settings={"spot": True}))
    machine = await provider.create(request)
    assert sent[0]["ClientToken"] == [request.key]
    assert sent[0]["InstanceMarketOptions.MarketType"] == ["spot"]
    assert base64.b64decode(sent[0]["UserData"][0]) == b"#cloud-config\n"
    tags = {sent[0][f"TagSpecification.1.Tag.{i}.Key"][0]:
            sent[0][f"TagSpecification.1.Tag.{i}.Value"][0] for i in range(1, 7)}
    assert tags == {"Name": request.name, "gearshift-owner": "gearshift",
                    "gearshift-provider": provider.name, "gearshift-key": request.key,
                    "gearshift-pool": "small", "gearshift-blueprint": request.blueprint.name}
    described = await client.describe_instances(InstanceIds=[machine.machine_id])
    instance = described["Reservations"][0]["Instances"][0]
    assert instance.get("InstanceLifecycle") == "spot"
    assert instance["InstanceType"] == "m5.large"
    await provider.destroy(machine.machine_id)
    await harness.close()


async def test_ec2_launch_template_blueprint(moto_server: Any, tmp_path: Path) -> None:
    harness = Ec2Harness("ec2", tmp_path, sim=moto_server)
    provider = harness.provider()
    client = await provider.client()  # type: ignore[attr-defined]
    template = f"gs-{new_key()[:8]}"
    await client.create_launch_template(LaunchTemplateName=template, LaunchTemplateData={
        "ImageId": "ami-12c6146b", "InstanceType": "t3.small"})
    blueprint = harness.blueprint(image=None, instance_type=None,
                                  settings={"launch_template_name": template})
    machine = await provider.create(harness.request(new_key(), blueprint))
    described = await client.describe_instances(InstanceIds=[machine.machine_id])
    assert described["Reservations"][0]["Instances"][0]["InstanceType"] == "t3.small"
    await provider.destroy(machine.machine_id)
    await harness.close()


@pytest.mark.parametrize(("code", "error"), [
    ("RequestLimitExceeded", TransientError), ("Unsupported", PermanentError),
    ("AuthFailure", PermanentError)])
async def test_ec2_error_codes_are_classified(moto_server: Any, tmp_path: Path, code: str,
                                              error: type[Exception]) -> None:
    harness = Ec2Harness("ec2", tmp_path, sim=moto_server)
    provider = harness.provider()
    moto_sim.inject(await provider.client(), code)  # type: ignore[attr-defined]
    with pytest.raises(error, match=code):
        await provider.create(harness.request(new_key()))
    assert await provider.list_owned() == []
    await harness.close()


async def test_ec2_throttling_is_retried_by_the_guard_until_it_passes(
        moto_server: Any, tmp_path: Path) -> None:
    harness = Ec2Harness("ec2", tmp_path, sim=moto_server)
    provider = harness.provider()
    assert isinstance(provider, Ec2Provider)
    moto_sim.inject(await provider.client(), "RequestLimitExceeded", times=2)
    guard = GuardedProvider(provider, clock=InstantClock(), settings=GuardSettings(
        retry_attempts=5, retry_initial=0.01, retry_max=0.01))
    machine = await guard.create(harness.request(new_key()))
    assert [m.machine_id for m in await provider.list_owned()] == [machine.machine_id]
    await provider.destroy(machine.machine_id)
    await harness.close()


# -- bare metal ---------------------------------------------------------------------------
async def _get(url: str, *, user: str, password: str) -> Any:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    async with aiohttp.ClientSession() as session, session.get(
            url, headers={"Authorization": f"Basic {token}"}) as response:
        return await response.json()


@pytest.mark.slow  # ~12 s; test_bare_metal_quota_below_the_pool_size stays fast
async def test_foreman_marks_the_host_for_build_and_the_bmc_boots_pxe_once(
        sushy: Any, foreman: Any, tmp_path: Path) -> None:
    harness = BareMetalHarness("foreman", tmp_path, sim=sushy, foreman=foreman)
    spec = harness.spec(machines=1)
    provider: Provider = build_provider(spec)
    provider.keep_state_in(harness.journal)
    machine_spec = spec.settings["machines"][0]
    request = harness.request(new_key())
    machine = await provider.create(request)
    assert machine.machine_id == machine_spec["name"]

    host = await _get(f"{foreman.url}/api/hosts/{machine_spec['name']}", user="gearshift",
                      password=SECRETS["foreman"])
    assert host["build"] is True
    system = await _get(sushy.url + machine_spec["system"], user="gearshift",
                        password=SECRETS["bmc"])
    assert system["PowerState"] == "On"
    assert system["Boot"]["BootSourceOverrideTarget"] == "Pxe"

    # a restart: the journal says which machine belongs to which key
    state = await harness.journal.allocations(spec.name)
    assert state[machine.machine_id].key == request.key
    await provider.close()
    reborn = build_provider(spec)
    reborn.keep_state_in(harness.journal)
    assert [m.key for m in await reborn.list_owned()] == [request.key]
    assert (await reborn.create(request)).machine_id == machine.machine_id  # no second one
    await reborn.destroy(machine.machine_id)
    system = await _get(sushy.url + machine_spec["system"], user="gearshift",
                        password=SECRETS["bmc"])
    assert system["PowerState"] == "Off"
    assert await harness.journal.allocations(spec.name) == {}
    await reborn.close()


async def test_an_old_bare_metal_state_file_is_imported_into_the_journal_once(
        tmp_path: Path) -> None:
    spec = ProviderSpec.model_validate({
        "name": "rack", "kind": "redfish", "quota": {"max_nodes": 4}, "boot_time": "2m",
        "settings": {"state_file": str(tmp_path / "state.json"),
                     "machines": [{"bmc": "http://127.0.0.1:9", "name": "m1"}]}})
    old: dict[str, Any] = {"key": "op-1", "name": "n1", "pool": "small", "blueprint": "bm", "bmc":
           "http://10.0.0.9", "system": "/redfish/v1/Systems/9", "foreman_host": None,
           "allocated_at": 5.0}
    state_file = tmp_path / "state.json"
    state_file.write_text(json.dumps({"version": 1, "allocations": {
        "gone-from-the-file": old, "m1": {**old, "key": "op-2", "name": "n2"}}}))
    journal = MemoryJournal()
    known = Allocation(**{**old, "key": "op-9"})
    await journal.allocate("rack", {"m1": known})  # the journal's record wins
    provider = build_provider(spec)
    provider.keep_state_in(journal)
    owned = await provider.list_owned()
    assert sorted((m.machine_id, m.key) for m in owned) == [("gone-from-the-file", "op-1"),
                                                             ("m1", "op-9")]
    assert not state_file.exists()
    assert json.loads((tmp_path / "state.json.migrated").read_text())["allocations"]
    assert (await provider.quota()).used == 2  # read again: nothing imported twice
    assert (await journal.allocations("rack"))["gone-from-the-file"] == Allocation(**old)
    unbound = build_provider(spec)  # a journal is required: never a silent in-memory record
    with pytest.raises(PermanentError, match="no journal"):
        await unbound.list_owned()


async def test_bare_metal_quota_below_the_pool_size(sushy: Any, tmp_path: Path) -> None:
    harness = BareMetalHarness("redfish", tmp_path, sim=sushy)
    provider = harness.provider(max_nodes=0, machines=2)
    assert (await provider.quota()).max_nodes == 0
    provider = harness.provider(max_nodes=9, machines=2)
    assert (await provider.quota()).max_nodes == 2  # the pool is smaller than the quota
    await harness.close()

