"""Build the providers named in the providers file, failing early and clearly.

Each kind lives in its own module and its SDK in its own extra, so a user who runs only
EC2 never installs pyvmomi or compiles the oVirt SDK. A kind whose extra is missing fails
at start-up with the exact ``pip install`` line to run.
"""

from __future__ import annotations

import importlib

from gearshift.act.providers.base import Provider
from gearshift.errors import ConfigError
from gearshift.policy.schema import ProviderSpec

# kind -> (module, class, the extra that brings its SDK, the SDK's import name)
KINDS: dict[str, tuple[str, str, str | None, str | None]] = {
    "vsphere": ("gearshift.act.providers.vsphere", "VSphereProvider", "vsphere", "pyVmomi"),
    "ovirt": ("gearshift.act.providers.ovirt", "OvirtProvider", "ovirt", "ovirtsdk4"),
    "ec2": ("gearshift.act.providers.ec2", "Ec2Provider", "ec2", "aiobotocore"),
    "redfish": ("gearshift.act.providers.baremetal", "BareMetalProvider", None, None),
    "foreman": ("gearshift.act.providers.baremetal", "BareMetalProvider", None, None),
    "simulated": ("gearshift.act.providers.simulated", "SimulatedWorldProvider", None, None),
}


def build_provider(spec: ProviderSpec) -> Provider:
    if spec.kind == "simulated" and "url" not in spec.settings:
        raise ConfigError([f"provider {spec.name}: kind simulated exists only in "
                           f"`gearshift simulate` and `gearshift demo`, or with settings.url "
                           f"(a world server: python -m gearshift.sim.server)"])
    module_name, class_name, extra, sdk = KINDS[spec.kind]
    if sdk is not None:
        try:
            importlib.import_module(sdk)
        except ImportError as exc:
            raise ConfigError([f"provider {spec.name} (kind {spec.kind}) needs the {sdk} SDK: "
                               f"pip install 'gearshift[{extra}]'"]) from exc
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise ConfigError([f"provider {spec.name}: kind {spec.kind} is not available in "
                           f"this version of gearshift"]) from exc
    cls = getattr(module, class_name)
    provider: Provider = cls.from_spec(spec)
    return provider
