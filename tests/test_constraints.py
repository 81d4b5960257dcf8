"""constraints.txt pins every runtime dependency pyproject.toml declares, within its floor.

The image and CI install with ``-c constraints.txt``; a dependency missing from it would
install unpinned (stompman once was), and a pin below a floor would not install at all.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_EXTRAS = ("demo", "sim", "vsphere", "ovirt", "ec2", "postgres")  # all of them but dev


def _pins() -> dict[str, str]:
    pins = {}
    for raw in (ROOT / "constraints.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[str(canonicalize_name(name))] = version
    return pins


def test_every_runtime_dependency_is_pinned_within_its_floor() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [*project["dependencies"]]
    for extra in RUNTIME_EXTRAS:
        declared += project["optional-dependencies"][extra]
    pins = _pins()
    for line in declared:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not pinned in constraints.txt"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} is not {line}"
