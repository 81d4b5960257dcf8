"""Simulators for every provider kind, started once per session, and one harness per kind.

A harness knows how to build its kind's provider against its simulator (each test gets its
own provider name, so ownership marks keep tests apart on a shared simulator), and how to
make that simulator answer with a real quota error, a real capacity error, bad
credentials, or silence. The contract suite runs the same tests over every harness.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from ovirtsdk4 import types as ovirt_types

from gearshift.act.providers.base import CreateRequest, Provider
from gearshift.act.providers.registry import build_provider
from gearshift.policy.schema import Blueprint, ProviderSpec
from gearshift.store.journal import MemoryJournal
from simulators import BlackHole, MissingPeer, Peer
from simulators import moto as moto_sim
from simulators import ovirt as ovirt_sim
from simulators import redfish as redfish_sim
from simulators import vcsim as vcsim_sim

KINDS = ["vsphere", "ovirt", "ec2", "redfish", "foreman"]

# Secrets the simulators are started with; the secrets test greps for every one of them.
SECRETS = {
    "vsphere": "vc-pw-7f3a9c41e2",
    "ovirt": "ov-pw-5b8e22d07a",
    "ec2": "ec2SecretKey9d4f1a6b3c",
    "bmc": "bmc-pw-3c9e7a1f55",
    "foreman": "fm-token-8a2d6e4b90",
}
ENV = {"GS_TEST_VSPHERE_PW": SECRETS["vsphere"], "GS_TEST_OVIRT_PW": SECRETS["ovirt"],
       "GS_TEST_BMC_PW": SECRETS["bmc"], "GS_TEST_FOREMAN_PW": SECRETS["foreman"]}
BMC_MACHINES = 120  # sushy systems for the whole session; tests take disjoint slices of 4


def _peer(start: Any) -> Any:
    try:
        return start()
    except MissingPeer as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session", autouse=True)
def _secret_env() -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in ENV}
    os.environ.update(ENV)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def vcsim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[vcsim_sim.Vcsim]:
    log = tmp_path_factory.mktemp("vcsim") / "vcsim.log"
    sim = _peer(lambda: vcsim_sim.start(username="gearshift", password=SECRETS["vsphere"],
                                        no_capacity=("DC0_H0_VM1",), log=log))
    yield sim
    sim.stop()


@pytest.fixture(scope="session")
def ovirt_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    directory = tmp_path_factory.mktemp("ovirt")
    peer = _peer(lambda: ovirt_sim.start(
        password=SECRETS["ovirt"], directory=directory,
        clusters=("Default", "Full:running=0", "Limited:vms=0")))
    yield peer
    peer.stop()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    peer = _peer(lambda: moto_sim.start(directory=tmp_path_factory.mktemp("moto")))
    yield peer
    peer.stop()


@pytest.fixture(scope="session")
def sushy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[redfish_sim.Sushy]:
    sim = _peer(lambda: redfish_sim.start_sushy(
        directory=tmp_path_factory.mktemp("sushy"), machines=BMC_MACHINES, username="gearshift",
        password=SECRETS["bmc"]))
    yield sim
    sim.stop()


@pytest.fixture(scope="session")
def foreman(tmp_path_factory: pytest.TempPathFactory, sushy: redfish_sim.Sushy) -> Iterator[Peer]:
    peer = _peer(lambda: redfish_sim.start_foreman(
        directory=tmp_path_factory.mktemp("foreman"), user="gearshift",
        password=SECRETS["foreman"], hosts=[name for name, _ in sushy.systems]))
    yield peer
    peer.stop()


@pytest.fixture(scope="session")
def blackhole() -> Iterator[BlackHole]:
    hole = BlackHole()
    yield hole
    hole.close()


_slices = itertools.count()


@dataclass
class Harness:
    """Builds one kind's providers against its simulator and provokes its errors."""

    kind: str
    tmp: Path
    nodes: int = 3  # how many the contract test makes at once
    made: list[Provider] = field(default_factory=list)

    def spec(self, *, name: str | None = None, max_nodes: int = 20, **settings: Any
             ) -> ProviderSpec:
        raise NotImplementedError

    def provider(self, *, name: str | None = None, max_nodes: int = 20,
                 **settings: Any) -> Provider:
        provider = build_provider(self.spec(name=name, max_nodes=max_nodes, **settings))
        self.made.append(provider)
        return provider

    def blueprint(self, **overrides: Any) -> Blueprint:
        data: dict[str, Any] = {"name": f"{self.kind}-small", "provider": "p",
                                "node_profile": "small", "user_data": "#cloud-config\n"}
        data.update(self.blueprint_fields())
        data.update(overrides)
        return Blueprint.model_validate(data)

    def blueprint_fields(self) -> dict[str, Any]:
        return {}

    def request(self, key: str, blueprint: Blueprint | None = None) -> CreateRequest:
        return CreateRequest(key=key, name=f"{self.kind}-{key}", pool="small",
                             blueprint=blueprint or self.blueprint())

    unknown_id = "no-such-machine"

    async def quota_case(self) -> tuple[Provider, CreateRequest]:
        """A provider and request whose create the provider answers with a quota error."""
        return self.provider(max_nodes=0), self.request(new_key())

    async def capacity_case(self) -> tuple[Provider, CreateRequest]:
        raise NotImplementedError

    def unreachable(self, hole: BlackHole) -> Provider:
        raise NotImplementedError

    async def bad_credentials(self) -> Provider:
        """A provider whose simulator refuses its credentials."""
        raise NotImplementedError

    async def foreign(self, provider: Provider) -> str:
        """The id of a machine on ``provider``'s simulator that gearshift did not make (a
        bare-metal pool: one of its racked machines that gearshift has not allocated)."""
        raise NotImplementedError

    async def close(self) -> None:
        for provider in self.made:
            await provider.close()


def new_key() -> str:
    return uuid.uuid4().hex


def _name(kind: str, name: str | None) -> str:
    return name or f"{kind}-{uuid.uuid4().hex[:8]}"


def _spec(kind: str, name: str | None, max_nodes: int, settings: dict[str, Any]
          ) -> ProviderSpec:
    return ProviderSpec.model_validate({"name": _name(kind, name), "kind": kind,
                                        "quota": {"max_nodes": max_nodes},
                                        "boot_time": "2m", "settings": settings})


@dataclass
class VSphereHarness(Harness):
    sim: Any = None

    def spec(self, *, name: str | None = None, max_nodes: int = 20, **settings: Any
             ) -> ProviderSpec:
        base = {"url": self.sim.url, "username": "gearshift",
                "password_env": "GS_TEST_VSPHERE_PW", "insecure": True, "cluster": "DC0_C0",
                "request_timeout": "10s", "task_timeout": "30s"}
        return _spec("vsphere", name, max_nodes, {**base, **settings})

    def blueprint_fields(self) -> dict[str, Any]:
        return {"template": "DC0_C0_RP0_VM0", "settings": {"cpus": 2, "memory_mb": 2048}}

    unknown_id = "vm-424242"

    async def capacity_case(self) -> tuple[Provider, CreateRequest]:
        # vcsim fails every clone of DC0_H0_VM1 with InsufficientResourcesFault
        return self.provider(), self.request(new_key(), self.blueprint(template="DC0_H0_VM1"))

    def unreachable(self, hole: BlackHole) -> Provider:
        return self.provider(url=f"https://127.0.0.1:{hole.port}/sdk", request_timeout="0.5s")

    async def foreign(self, provider: Provider) -> str:
        # vcsim's own VMs (the template among them) carry no gearshift marks
        p: Any = provider
        moid: str = await p._run(lambda: p._session(
            lambda si: p.places.template(si, "DC0_C0_RP0_VM0")._moId), what="find a foreign VM")
        return moid

    async def bad_credentials(self) -> Provider:
        os.environ["GS_TEST_WRONG_PW"] = "not-the-password"
        return self.provider(password_env="GS_TEST_WRONG_PW")


@dataclass
class OvirtHarness(Harness):
    sim: Any = None

    def spec(self, *, name: str | None = None, max_nodes: int = 20, **settings: Any
             ) -> ProviderSpec:
        base = {"url": f"{self.sim.url}/ovirt-engine/api", "username": "gearshift@internal",
                "password_env": "GS_TEST_OVIRT_PW", "cluster": "Default",
                "request_timeout": "10s", "start_timeout": "30s"}
        return _spec("ovirt", name, max_nodes, {**base, **settings})

    def blueprint_fields(self) -> dict[str, Any]:
        return {"template": "node-template", "settings": {"memory_mb": 4096}}

    unknown_id = "9a1b2c3d-0000-4000-8000-000000000000"

    async def quota_case(self) -> tuple[Provider, CreateRequest]:
        # the engine's own quota: cluster Limited allows no VMs
        return self.provider(cluster="Limited"), self.request(new_key())

    async def capacity_case(self) -> tuple[Provider, CreateRequest]:
        # the engine's scheduler: cluster Full has no host that can run a VM
        return self.provider(cluster="Full"), self.request(new_key())

    def unreachable(self, hole: BlackHole) -> Provider:
        return self.provider(url=f"{hole.url}/ovirt-engine/api", request_timeout="0.5s")

    async def foreign(self, provider: Provider) -> str:
        # a VM someone else added to the engine: no gearshift comment
        p: Any = provider
        vm = await p.engine.run(lambda system: system.vms_service().add(ovirt_types.Vm(
            name=f"theirs-{new_key()[:8]}", cluster=ovirt_types.Cluster(name="Default"),
            template=ovirt_types.Template(name="node-template"))), what="add a foreign VM")
        return str(vm.id)

    async def bad_credentials(self) -> Provider:
        os.environ["GS_TEST_WRONG_PW"] = "not-the-password"
        return self.provider(password_env="GS_TEST_WRONG_PW")


@dataclass
class Ec2Harness(Harness):
    sim: Any = None

    def spec(self, *, name: str | None = None, max_nodes: int = 20, **settings: Any
             ) -> ProviderSpec:
        credentials = self.tmp / "aws-credentials"
        if not credentials.exists():
            credentials.write_text("[default]\naws_access_key_id = AKIAGEARSHIFTTEST01\n"
                                   f"aws_secret_access_key = {SECRETS['ec2']}\n")
        base = {"region": "us-east-1", "endpoint_url": self.sim.url,
                "credentials_file": str(credentials), "request_timeout": "10s"}
        return _spec("ec2", name, max_nodes, {**base, **settings})

    def blueprint_fields(self) -> dict[str, Any]:
        return {"image": "ami-12c6146b", "instance_type": "m5.large"}

    unknown_id = "i-0123456789abcdef0"

    async def _injected(self, code: str) -> tuple[Provider, CreateRequest]:
        provider = self.provider()
        moto_sim.inject(await provider.client(), code)  # type: ignore[attr-defined]
        return provider, self.request(new_key())

    async def quota_case(self) -> tuple[Provider, CreateRequest]:
        return await self._injected("InstanceLimitExceeded")

    async def capacity_case(self) -> tuple[Provider, CreateRequest]:
        return await self._injected("InsufficientInstanceCapacity")

    def unreachable(self, hole: BlackHole) -> Provider:
        return self.provider(endpoint_url=hole.url, request_timeout="0.5s")

    async def foreign(self, provider: Provider) -> str:
        client = await provider.client()  # type: ignore[attr-defined]
        made = await client.run_instances(ImageId="ami-12c6146b", InstanceType="m5.large",
                                          MinCount=1, MaxCount=1)  # untagged: not ours
        return str(made["Instances"][0]["InstanceId"])

    async def bad_credentials(self) -> Provider:
        # moto accepts any key, so EC2's own AuthFailure answer is injected
        provider, _ = await self._injected("AuthFailure")
        return provider


@dataclass
class BareMetalHarness(Harness):
    sim: Any = None
    foreman: Any = None
    nodes: int = 3
    journal: MemoryJournal = field(default_factory=MemoryJournal)  # where allocations live

    def provider(self, *, name: str | None = None, max_nodes: int = 20,
                 **settings: Any) -> Provider:
        provider = super().provider(name=name, max_nodes=max_nodes, **settings)
        provider.keep_state_in(self.journal)
        return provider

    def machines(self, count: int) -> list[dict[str, Any]]:
        start = next(_slices) * 4
        if start + count > BMC_MACHINES:
            pytest.fail("the session's sushy has too few machines for this test run")
        return [{"name": name, "bmc": self.sim.url, "system": system}
                for name, system in self.sim.systems[start:start + count]]

    def spec(self, *, name: str | None = None, max_nodes: int = 20, machines: int = 4,
             **settings: Any) -> ProviderSpec:
        name = _name(self.kind, name)
        base: dict[str, Any] = {
            "machines": self.machines(machines), "username": "gearshift",
            "password_env": "GS_TEST_BMC_PW", "state_file": str(self.tmp / f"{name}.json"),
            "request_timeout": "5s", "power_timeout": "40s", "poll_interval": "0.5s",
            "power_off": "ForceOff"}
        if self.kind == "foreman":
            base["foreman"] = {"url": self.foreman.url, "username": "gearshift",
                               "password_env": "GS_TEST_FOREMAN_PW"}
        return _spec(self.kind, name, max_nodes, {**base, **settings})

    async def capacity_case(self) -> tuple[Provider, CreateRequest]:
        provider = self.provider(machines=1)
        await provider.create(self.request(new_key()))  # the pool's only machine
        return provider, self.request(new_key())

    def unreachable(self, hole: BlackHole) -> Provider:
        spec = self.spec(request_timeout="0.5s")
        settings = dict(spec.settings)
        settings["machines"] = [{**m, "bmc": hole.url} for m in settings["machines"]]
        provider = build_provider(spec.model_copy(update={"settings": settings}))
        provider.keep_state_in(self.journal)
        self.made.append(provider)
        return provider

    async def bad_credentials(self) -> Provider:
        os.environ["GS_TEST_WRONG_PW"] = "not-the-password"
        return self.provider(password_env="GS_TEST_WRONG_PW")

    async def foreign(self, provider: Provider) -> str:
        # A racked machine of the pool that gearshift has not allocated: free for the next
        # create, maybe being worked on by hand; nothing but create may power it.
        p: Any = provider
        owned = {m.machine_id for m in await provider.list_owned()}
        return next(m.id for m in p.settings.machines if m.id not in owned)


# Contract cases over ~10 s each (sushy-tools and the Foreman simulator boot and power
# machines in real time). Their kinds keep fast cases in `pytest -m "not slow"`.
SLOW_CASES = {
    "test_create_list_recreate_destroy[redfish]",  # ~22 s
    "test_create_list_recreate_destroy[foreman]",  # ~19 s
    "test_no_capacity_is_capacity_unavailable_and_leaves_nothing[redfish]",  # ~16 s
    "test_no_capacity_is_capacity_unavailable_and_leaves_nothing[foreman]",  # ~13 s
    "test_secrets_appear_in_no_log_metric_error_or_status[foreman]",  # ~20 s
    "test_stop_keeps_the_machine_and_start_brings_it_back[redfish]",  # ~38 s
    "test_stop_keeps_the_machine_and_start_brings_it_back[foreman]",  # ~16 s
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.name in SLOW_CASES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(params=KINDS)
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    kind: str = request.param
    made: Harness
    if kind == "vsphere":
        made = VSphereHarness(kind, tmp_path, sim=request.getfixturevalue("vcsim"))
    elif kind == "ovirt":
        made = OvirtHarness(kind, tmp_path, sim=request.getfixturevalue("ovirt_engine"))
    elif kind == "ec2":
        made = Ec2Harness(kind, tmp_path, sim=request.getfixturevalue("moto_server"))
    else:
        made = BareMetalHarness(kind, tmp_path, sim=request.getfixturevalue("sushy"),
                                foreman=request.getfixturevalue("foreman")
                                if kind == "foreman" else None)
    yield made
    await made.close()
