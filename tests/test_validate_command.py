"""`gearshift validate` says "ok" only for what it checked: a lone pool file is checked
against the providers file found beside it (as `run` lays them out) or the command says
that references were not checked; an empty file or a folder without pools is an error."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT
from gearshift.errors import ConfigError
from gearshift.policy.check import check_paths
from gearshift.policy.loader import load_policy_set

SMALL = (ROOT / "policies" / "small.yaml").read_text()
PROVIDERS = (ROOT / "policies" / "providers.yaml").read_text()


def validate(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gearshift", "validate", *map(str, paths)],
                          capture_output=True, text=True, check=False, cwd=ROOT, timeout=60)


def test_a_lone_pool_file_is_checked_against_the_providers_file_beside_it(tmp_path: Path) -> None:
    (tmp_path / "providers.yaml").write_text(PROVIDERS)
    pool = tmp_path / "small.yaml"
    pool.write_text(SMALL.replace("provider: rack-a", "provider: rack-z"))
    result = validate(pool)
    assert result.returncode == 1, result
    assert f"{pool}:25:16: placement[0].provider: unknown provider 'rack-z'" in result.stdout


def test_a_pools_folder_is_checked_against_providers_yaml_next_to_it(tmp_path: Path) -> None:
    """/etc/gearshift/policies/ beside /etc/gearshift/providers.yaml: run's default layout."""
    (tmp_path / "providers.yaml").write_text(PROVIDERS)
    pools = tmp_path / "policies"
    pools.mkdir()
    (pools / "small.yaml").write_text(SMALL.replace("blueprint: small-bm", "blueprint: nope"))
    result = validate(pools)
    assert result.returncode == 1
    assert "unknown blueprint 'nope' (known on rack-a: small-bm)" in result.stdout
    (pools / "small.yaml").write_text(SMALL)
    result = validate(pools)
    assert result.returncode == 0, result
    assert f"references checked against {tmp_path / 'providers.yaml'}" in result.stderr


def test_without_a_providers_file_it_says_plainly_that_references_were_not_checked(
        tmp_path: Path) -> None:
    pool = tmp_path / "policies" / "small.yaml"
    pool.parent.mkdir()
    pool.write_text(SMALL.replace("provider: rack-a", "provider: rack-z"))
    result = validate(pool)
    assert result.returncode == 0
    assert "were NOT checked: no providers file given and none found" in result.stderr
    assert str(tmp_path / "providers.yaml") in result.stderr
    checked = check_paths([pool])
    assert not checked.references_checked and checked.pools == 1


def test_the_shipped_examples_validate_as_the_readme_shows() -> None:
    for path in (ROOT / "policies", ROOT / "policies/small.yaml",
                 ROOT / "policies/examples/flash-crowd/pools"):
        result = validate(path)
        assert result.returncode == 0, result
        assert "NOT checked" not in result.stderr
        assert result.stderr.startswith(f"ok: {path}"), result.stderr


def test_an_empty_file_is_an_error_for_validate_and_for_loading(tmp_path: Path) -> None:
    empty = tmp_path / "small.yaml"
    empty.write_text("# nothing yet\n\n")
    result = validate(empty)
    assert result.returncode == 1
    assert result.stdout.startswith(f"{empty}:1:1: empty: no YAML document")
    try:
        load_policy_set([tmp_path])
    except ConfigError as exc:
        assert exc.problems == [f"{empty}:1:1: empty: no YAML document (expected kind: Pool "
                                f"or kind: Providers)"]
    else:
        raise AssertionError("an empty policy file loaded")


def test_a_folder_without_pools_is_an_error_that_points_below(tmp_path: Path) -> None:
    assert validate(tmp_path).stdout == (f"{tmp_path}:1:1: no pool here: a policies folder "
                                         f"holds *.yaml files with kind: Pool\n")
    scenario = tmp_path / "scenario"
    shutil.copytree(ROOT / "policies/examples/scenarios/quota-spill", scenario)
    result = validate(scenario)
    assert result.returncode == 1
    assert f"(folders below with YAML files: {scenario / 'pools'})" in result.stdout
    assert validate(scenario / "pools").returncode == 0


def test_a_providers_file_alone_is_still_valid() -> None:
    result = validate(ROOT / "policies/providers.yaml")
    assert result.returncode == 0, result
    assert "0 pools" in result.stderr and "NOT checked" not in result.stderr
