"""Each provider kind validates its own ``settings:`` and credentials at start-up, and the
registry says exactly which extra a missing SDK needs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import ROOT
from gearshift.act.providers.baremetal import BareMetalProvider
from gearshift.act.providers.ec2 import Ec2Provider
from gearshift.act.providers.ovirt import OvirtProvider
from gearshift.act.providers.registry import build_provider
from gearshift.act.providers.vsphere import VSphereProvider
from gearshift.errors import ConfigError
from gearshift.policy.schema import ProviderSpec

VALID: dict[str, dict[str, Any]] = {
    "vsphere": {"url": "https://vcenter.example/sdk", "username": "svc-gearshift",
                "password_env": "GS_SETTINGS_PW", "cluster": "C1"},
    "ovirt": {"url": "https://engine.example/ovirt-engine/api", "username": "gs@internal",
              "password_env": "GS_SETTINGS_PW", "cluster": "Default"},
    "ec2": {"region": "eu-west-1", "subnet_id": "subnet-0abc", "spot": True},
    "redfish": {"machines": [{"bmc": "https://10.0.0.11", "system": "/redfish/v1/Systems/1"}]},
    "foreman": {"machines": [{"name": "r1", "bmc": "https://10.0.0.11",
                              "hostname": "node1.example"}],
                "foreman": {"url": "https://foreman.example", "username": "gearshift",
                            "password_env": "GS_SETTINGS_PW"}},
}
CLASSES = {"vsphere": VSphereProvider, "ovirt": OvirtProvider, "ec2": Ec2Provider,
           "redfish": BareMetalProvider, "foreman": BareMetalProvider}


def spec(kind: str, settings: dict[str, Any], name: str = "p1") -> ProviderSpec:
    return ProviderSpec.model_validate({"name": name, "kind": kind, "quota": {"max_nodes": 3},
                                        "settings": settings})


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GS_SETTINGS_PW", "hunter2-settings")


@pytest.mark.parametrize("kind", sorted(VALID))
async def test_valid_settings_build_the_kind_s_provider(kind: str) -> None:
    provider = build_provider(spec(kind, VALID[kind]))
    assert type(provider) is CLASSES[kind]
    assert provider.name == "p1"
    await provider.close()


@pytest.mark.parametrize("kind", sorted(VALID))
def test_a_misspelt_key_is_refused_naming_provider_and_key(kind: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_provider(spec(kind, {**VALID[kind], "regoin": "x"}, name="rack-b"))
    assert caught.value.problems == [
        f"provider rack-b (kind {kind}): settings.regoin: Extra inputs are not permitted"]


@pytest.mark.parametrize(("kind", "drop", "field"), [
    ("vsphere", "url", "settings.url"), ("ovirt", "cluster", "settings.cluster"),
    ("ec2", "region", "settings.region"), ("redfish", "machines", "settings.machines")])
def test_a_missing_required_setting_is_named(kind: str, drop: str, field: str) -> None:
    settings = {k: v for k, v in VALID[kind].items() if k != drop}
    with pytest.raises(ConfigError) as caught:
        build_provider(spec(kind, settings))
    assert caught.value.problems == [f"provider p1 (kind {kind}): {field}: Field required"]


@pytest.mark.parametrize(("kind", "settings", "message"), [
    ("vsphere", {**VALID["vsphere"], "url": "vcenter.example"}, "is not an http(s) URL"),
    ("vsphere", {**VALID["vsphere"], "url": "https://root:pw@vc/sdk"},
     "put no credentials in the URL"),
    ("vsphere", {k: v for k, v in VALID["vsphere"].items() if k != "password_env"},
     "give exactly one of password_env or password_file"),
    ("ovirt", {**VALID["ovirt"], "request_timeout": "soon"}, "invalid duration"),
    ("redfish", {"machines": [{"bmc": "https://a", "system": "/redfish/v1/Systems/1"},
                              {"bmc": "https://a", "system": "/redfish/v1/Systems/1"}]},
     "machine names must be unique: a:1 appear twice"),
    ("redfish", {"machines": [{"bmc": "https://a", "system": "/Systems/1"}]},
     "is not a Redfish system path"),
    ("redfish", {**VALID["redfish"], "username": "root"},
     "give both a user name and a password (or token), or neither"),
    ("foreman", {"machines": VALID["foreman"]["machines"]},
     "settings.foreman: give Foreman's url"),
    ("ovirt", {**VALID["ovirt"], "username_env": "GS_SETTINGS_USER"},
     "settings: give the username once, as one of username, username_env, username_file"),
    ("redfish", {**VALID["redfish"], "username": "root", "password_env": "GS_SETTINGS_PW",
                 "password_file": "/nonexistent/bmc.pw"},
     "settings: give the password once, as one of password_env, password_file"),
])
def test_bad_settings_get_a_clear_message(kind: str, settings: dict[str, Any],
                                          message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_provider(spec(kind, settings))
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(f"provider p1 (kind {kind}): ")
    assert message in caught.value.problems[0]


def test_an_unset_password_variable_is_refused_at_start_naming_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GS_SETTINGS_PW")
    with pytest.raises(ConfigError) as caught:
        build_provider(spec("ovirt", VALID["ovirt"]))
    assert caught.value.problems == [
        "provider p1: the password from environment variable GS_SETTINGS_PW is empty or unset"]


def test_a_missing_password_file_is_refused_at_start_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pw"
    settings = {**VALID["vsphere"], "password_file": str(missing)}
    del settings["password_env"]
    with pytest.raises(ConfigError) as caught:
        build_provider(spec("vsphere", settings))
    assert caught.value.problems == [
        f"provider p1: cannot read the password from file {missing}: No such file or directory"]


def test_a_password_file_is_read_and_stripped(tmp_path: Path) -> None:
    secret = tmp_path / "vc.pw"
    secret.write_text("s3cret-from-file\n")
    settings = {**VALID["vsphere"], "password_file": str(secret)}
    del settings["password_env"]
    provider = build_provider(spec("vsphere", settings))
    assert isinstance(provider, VSphereProvider)
    assert provider.password.get().get_secret_value() == "s3cret-from-file"
    assert "s3cret" not in repr(provider.password)


def test_ec2_needs_an_existing_credentials_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"credentials_file .* does not exist"):
        build_provider(spec("ec2", {**VALID["ec2"], "credentials_file": str(tmp_path / "x")}))


@pytest.mark.parametrize(("kind", "sdk", "extra"), [
    ("vsphere", "pyVmomi", "vsphere"), ("ovirt", "ovirtsdk4", "ovirt"),
    ("ec2", "aiobotocore", "ec2")])
def test_a_missing_sdk_names_the_extra_to_install(kind: str, sdk: str, extra: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, sdk, None)  # makes `import sdk` raise ImportError
    with pytest.raises(ConfigError) as caught:
        build_provider(spec(kind, VALID[kind], name="dc1"))
    assert caught.value.problems == [
        f"provider dc1 (kind {kind}) needs the {sdk} SDK: pip install 'gearshift[{extra}]'"]


def test_the_example_providers_file_builds_once_its_credentials_exist(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    document = yaml.safe_load((ROOT / "policies" / "providers.yaml").read_text())
    specs = {p["name"]: ProviderSpec.model_validate(p) for p in document["providers"]}
    monkeypatch.delenv("GS_VSPHERE_USER", raising=False)
    with pytest.raises(ConfigError) as caught:
        build_provider(specs["vsphere-dc1"])
    assert caught.value.problems == ["provider vsphere-dc1: the username from environment "
                                     "variable GS_VSPHERE_USER is empty or unset"]
    assert isinstance(build_provider(specs["rack-a"]), BareMetalProvider)
    assert isinstance(build_provider(specs["ec2-east"]), Ec2Provider)
