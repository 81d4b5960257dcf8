"""Installing gearshift is quiet and its metadata is consistent.

A newcomer's first `sh .ci/bootstrap` printed setuptools' deprecation of the
``project.license`` table three times and, in test mode, "aiobotocore has no boto3 extra"
(aiobotocore 3 dropped it). Noise like that hides the warnings that matter, so: the
license is an SPDX string, every extra the requirements ask for exists in the installed
distribution, building the metadata warns about nothing, and pip finds no conflict.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirements() -> list[Requirement]:
    project = PYPROJECT["project"]
    lines = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        lines += extra
    return [Requirement(line) for line in lines]


def test_license_is_an_spdx_string_and_setuptools_is_new_enough_to_read_it() -> None:
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    setuptools = next(Requirement(r) for r in PYPROJECT["build-system"]["requires"]
                      if Requirement(r).name == "setuptools")
    assert not setuptools.specifier.contains("76.9"), "SPDX license strings need setuptools 77"
    assert metadata.metadata("gearshift")["License-Expression"] == "Apache-2.0"


def test_every_extra_asked_for_exists_in_the_installed_distribution() -> None:
    """pip only warns ("X has no Y extra") and installs without it: this test fails instead."""
    for requirement in _requirements():
        if not requirement.extras or canonicalize_name(requirement.name) == "gearshift":
            continue
        provided = {canonicalize_name(e) for e in
                    metadata.metadata(requirement.name).get_all("Provides-Extra") or []}
        missing = {canonicalize_name(e) for e in requirement.extras} - provided
        assert not missing, f"{requirement}: {requirement.name} has no extra {missing}"


def test_installed_versions_meet_pyproject_and_boto3_matches_aiobotocore_s_botocore() -> None:
    for requirement in _requirements():
        if canonicalize_name(requirement.name) == "gearshift":
            continue
        installed = metadata.version(requirement.name)
        assert requirement.specifier.contains(installed, prereleases=True), \
            f"{requirement.name} {installed} is not {requirement}"
    botocore = Version(metadata.version("botocore"))
    for user in ("aiobotocore", "boto3"):
        wanted = next(Requirement(r) for r in metadata.requires(user) or []
                      if Requirement(r).name == "botocore" and not Requirement(r).marker)
        assert wanted.specifier.contains(botocore), f"{user} wants {wanted}, botocore is {botocore}"


def test_pip_check_finds_no_conflict() -> None:
    result = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True,
                            text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_building_the_metadata_prints_no_deprecation_warning() -> None:
    """What pip shows on install: the build backend's own warnings (isolated build)."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-v", "--dry-run", "--no-deps",
         "--constraint", str(ROOT / "constraints.txt"), str(ROOT)],
        capture_output=True, text=True, check=False, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    # the machine's own pip configuration may name missing local indexes: not ours
    lines = [line for line in (result.stdout + result.stderr).splitlines()
             if "is ignored: it is neither a file nor a directory" not in line]
    noisy = [line for line in lines if "Deprecat" in line or "has no" in line]
    assert not noisy, "\n".join(noisy)
