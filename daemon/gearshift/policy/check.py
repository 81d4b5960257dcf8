"""What ``gearshift validate`` checks beyond loading: that it checked what the SRE thinks.

Loading a lone pool file succeeds without any providers file, so its placements' providers
and blueprints would go unchecked and the command would still say "ok". Here the providers
file is looked for next to the pools, where ``run`` expects it (``/etc/gearshift/policies``
beside ``/etc/gearshift/providers.yaml``, or ``policies/`` holding ``providers.yaml`` as
this repository does); when none is found the result says plainly that references were not
checked. A folder given that holds no pool is a problem too (a wrong path, not a valid
set), as is an empty file (``loader``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gearshift import safeyaml
from gearshift.policy.loader import KindSettings, _files_in, _parse, _set_problems
from gearshift.redact import redact

PROVIDERS_NAMES = ("providers.yaml", "providers.yml")


@dataclass(frozen=True)
class CheckResult:
    """The problems found, and what the pools' references were checked against."""

    problems: list[str]
    pools: int
    # the providers file found next to the pools and checked against; None: none was needed
    # (one was given) or none was found (then ``unchecked`` says where it was looked for)
    found_providers: Path | None = None
    unchecked: tuple[Path, ...] = ()

    @property
    def references_checked(self) -> bool:
        return not self.unchecked


def providers_candidates(paths: Sequence[Path]) -> list[Path]:
    """Where ``run``'s layout puts the providers file for these pool paths, nearest first.

    A folder: inside it, then beside it. A file: beside it, then beside its folder.
    """
    candidates: list[Path] = []
    for path in paths:
        base = path if path.is_dir() else path.parent
        for folder in (base, base.parent):
            for name in PROVIDERS_NAMES:
                candidate = folder / name
                if candidate not in candidates:
                    candidates.append(candidate)
    return candidates


def check_paths(paths: Sequence[Path], *, kinds: KindSettings | None = None,
                max_bytes: int = safeyaml.MAX_YAML_BYTES) -> CheckResult:
    """Validate ``paths`` as a set, with the providers file found next to them if none is given."""
    problems: list[str] = []
    files = _files_in(paths, problems)
    pools, providers = _parse(files, problems, max_bytes=max_bytes)
    found: Path | None = None
    unchecked: tuple[Path, ...] = ()
    if pools and not providers:
        candidates = providers_candidates(paths)
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            unchecked = tuple(candidates)
        else:
            _, providers = _parse([found], problems, max_bytes=max_bytes)
    problems.extend(_set_problems(pools, providers, kinds))
    for path in paths:
        if path.is_dir() and not any(doc.file.parent == path for _, doc in pools):
            inner = sorted(str(sub) for sub in path.iterdir()
                           if sub.is_dir() and any(sub.glob("*.y*ml")))
            hint = f" (folders below with YAML files: {', '.join(inner)})" if inner else ""
            problems.append(f"{path}:1:1: no pool here: a policies folder holds *.yaml files "
                            f"with kind: Pool{hint}")
    return CheckResult(problems=[redact(p) for p in problems], pools=len(pools),
                       found_providers=found, unchecked=unchecked)
