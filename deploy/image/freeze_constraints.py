"""Print the pins for ``constraints.txt``: gearshift's runtime dependencies, every extra but dev.

The image installs ``.[EXTRAS]`` with ``-c constraints.txt``, so what it ships is what the
test suite ran against, not whatever PyPI has that day. ``pip freeze`` alone would pin the
test tools too (pytest, moto, mypy...); this walks the requirement graph from
``gearshift[demo,sim,vsphere,ovirt,ec2,postgres]`` through the *installed* distributions
and prints only what that graph reaches, as ``name==version``.

Regenerate after changing dependencies (from a checkout whose .venv has ``.[dev]``):

    .venv/bin/pip install -U -e ".[dev]"
    .venv/bin/python deploy/image/freeze_constraints.py > constraints.txt
"""

from __future__ import annotations

import sys
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

EXTRAS = ("demo", "sim", "vsphere", "ovirt", "ec2", "postgres")


def reachable(root: str, extras: tuple[str, ...]) -> dict[str, str]:
    """Installed name -> version for everything ``root[extras]`` needs, root excluded."""
    found: dict[str, str] = {}
    todo: list[tuple[str, frozenset[str]]] = [(root, frozenset(extras))]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, wanted = todo.pop()
        if (name, wanted) in seen:
            continue
        seen.add((name, wanted))
        dist = metadata.distribution(name)
        if canonicalize_name(name) != canonicalize_name(root):
            found[canonicalize_name(dist.metadata["Name"])] = dist.version
        for line in dist.requires or []:
            requirement = Requirement(line)
            active = requirement.marker is None or any(
                requirement.marker.evaluate({"extra": extra}) for extra in ("", *wanted))
            if active:
                todo.append((requirement.name, frozenset(requirement.extras)))
    return found


def main() -> int:
    pins = reachable("gearshift", EXTRAS)
    print("# gearshift's runtime dependencies with every extra but dev, pinned to the versions")
    print("# the test suite ran with. Regenerate: see deploy/image/freeze_constraints.py.")
    for name in sorted(pins):
        print(f"{name}=={pins[name]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
