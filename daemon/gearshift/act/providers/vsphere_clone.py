"""What a vSphere clone gets besides the SDK call: owner marks, first boot, VM settings.

* **ownership**: the clone spec itself writes ``gearshift.owner``, ``gearshift.provider``
  (this provider's name, so two providers on one vCenter never claim each other's VMs),
  ``gearshift.key``, ``gearshift.pool``, ``gearshift.blueprint`` and ``gearshift.created``
  into the VM's extraConfig. The marks are part of the clone, so no crash can leave an
  unmarked VM behind, and ``list_owned`` (one property-collector read) finds every VM
  after a restart. Custom attributes or vAPI tags would need a second call after the clone.
* **first boot**: the host name and the blueprint's ``user_data`` go into the VM's
  ``guestinfo.metadata`` / ``guestinfo.userdata`` (base64), which cloud-init's VMware
  datasource reads on first boot; no customisation spec is needed in the vCenter.
* **VM settings**: the blueprint's ``settings`` (annotation, CPUs, memory), checked when
  the clone is made; a bad one is a permanent error.

Plain strings and dicts, no pyVmomi: the driver (``vsphere.py``) turns them into a clone
spec; only it and its SDK helpers (``vsphere_places``, ``vsphere_errors``) import the SDK.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from typing import Any

from gearshift.act.providers.kind_settings import VSphereBlueprintSettings
from gearshift.errors import PermanentError
from gearshift.model import Machine
from gearshift.policy.schema import Blueprint

MARK = "gearshift."  # extraConfig keys: gearshift.owner, gearshift.key, ...
OWNER, PROVIDER, KEY, POOL, BLUEPRINT, CREATED = (
    MARK + k for k in ("owner", "provider", "key", "pool", "blueprint", "created"))


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def blueprint_settings(blueprint: Blueprint, *, provider: str) -> VSphereBlueprintSettings:
    """The blueprint's vSphere settings; ``PermanentError`` when it names no template or
    its settings are not valid."""
    if not blueprint.template:
        raise PermanentError(provider, f"blueprint {blueprint.name} names no template")
    try:
        return VSphereBlueprintSettings.model_validate(blueprint.settings)
    except ValueError as exc:
        raise PermanentError(provider, f"blueprint {blueprint.name} settings: "
                                       f"{str(exc).splitlines()[0]}") from None


def owner_marks(*, owner: str, provider: str, key: str, pool: str, blueprint: str,
                created: float) -> dict[str, str]:
    """The marks that make a VM gearshift's (this owner's, this provider's)."""
    return {OWNER: owner, PROVIDER: provider, KEY: key, POOL: pool, BLUEPRINT: blueprint,
            CREATED: f"{created:.0f}"}


def clone_options(marks: dict[str, str], *, name: str, user_data: str | None) -> dict[str, str]:
    """The extraConfig a clone gets: ``marks`` plus cloud-init's guestinfo for ``name``."""
    metadata = {"instance-id": name, "local-hostname": name}
    options = {**marks, "guestinfo.metadata": b64(json.dumps(metadata)),
               "guestinfo.metadata.encoding": "base64"}
    if user_data:
        options.update({"guestinfo.userdata": b64(user_data),
                        "guestinfo.userdata.encoding": "base64"})
    return options


def marks_of(extra_config: Iterable[Any] | None) -> dict[str, str]:
    """gearshift's marks among a VM's extraConfig option values (``key``/``value``)."""
    return {o.key: str(o.value) for o in extra_config or [] if o.key.startswith(MARK)}


def not_ours(what: str, *, owner: str, provider: str) -> PermanentError:
    """The refusal to ``what`` a VM that does not carry this owner's and provider's marks."""
    return PermanentError(provider, f"refusing to {what}: it does not carry "
                                    f"{OWNER}={owner} and {PROVIDER}={provider}")


def is_ours(marks: dict[str, str], *, owner: str, provider: str) -> bool:
    """Do ``marks`` say this owner's and this provider's? (Never touch a VM otherwise.)"""
    return marks.get(OWNER) == owner and marks.get(PROVIDER) == provider


def machine_from_marks(marks: dict[str, str], *, provider: str, machine_id: str,
                       name: str) -> Machine:
    """The ``Machine`` a VM with ``marks`` is."""
    created = marks.get(CREATED)
    return Machine(provider=provider, machine_id=machine_id, name=name,
                   blueprint=marks.get(BLUEPRINT), pool=marks.get(POOL),
                   created_at=float(created) if created else None, key=marks.get(KEY))
