"""Policy and provider files: every shipped file validates; every mistake is pinned to
its FILE:LINE:COL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from gearshift.demo import demo_policy_dir
from gearshift.errors import ConfigError
from gearshift.policy.loader import load_policy_set, validate_paths

PROVIDERS = ROOT / "policies" / "providers.yaml"

POLICY_SETS = [
    [ROOT / "policies"],
    [ROOT / "policies/examples/flash-crowd/pools", ROOT / "policies/examples/flash-crowd/providers.yaml"],
    [ROOT / "policies/examples/diurnal-week/pools",
     ROOT / "policies/examples/diurnal-week/providers.yaml"],
    [demo_policy_dir()],
    *([ROOT / f"policies/examples/scenarios/{name}/pools",
       ROOT / f"policies/examples/scenarios/{name}/providers.yaml"]
      for name in ("quota-spill", "ec2-capacity", "preemption", "burst-return", "slow-drain",
                   "drain-cancelled")),
]


@pytest.mark.parametrize("paths", POLICY_SETS, ids=lambda p: str(p[0].relative_to(ROOT))
                         if p[0].is_relative_to(ROOT) else "demo")
def test_shipped_policies_validate(paths: list[Path]) -> None:
    assert validate_paths(paths) == []
    assert load_policy_set(paths).pools


def test_every_yaml_file_under_policies_belongs_to_a_checked_set() -> None:
    checked = {f.resolve() for paths in POLICY_SETS for p in paths
               for f in ([p] if p.is_file() else p.glob("*.yaml"))}
    shipped = {f.resolve() for f in (ROOT / "policies").rglob("*.yaml")}
    assert shipped <= checked


def test_architecture_example_reads_as_written() -> None:
    policies = load_policy_set([ROOT / "policies"])
    small = policies.pool("small")
    assert small is not None
    assert (small.size.min, small.size.max) == (2, 40)
    assert small.cooldown.down == 600
    assert small.stabilization.down == 900
    assert small.schedules[0].duration == 36000
    assert [p.provider for p in small.placement] == ["rack-a", "vsphere-dc1", "ec2-east"]
    assert small.placement[2].burst_only
    assert policies.providers is not None
    assert policies.providers.provider("rack-a").boot_time == 480  # type: ignore[union-attr]


GOOD = """\
apiVersion: gearshift/v1
kind: Pool
name: small
selector:
  node_profile: small
size: {min: 2, max: 40}
density:
  scale_up_above: 0.80
  scale_down_below: 0.45
cooldown: {up: 60s, down: 10m}
schedules:
  - {cron: "0 8 * * 1-5", duration: 10h, min: 10}
placement:
  - {provider: rack-a, blueprint: small-bm}
"""

# (what is wrong, the text replaced, its replacement, expected line:col, words in message)
MISTAKES = [
    ("unknown key", "  node_profile: small\n", "  node_profile: small\n  colour: red\n",
     "6:3", "unknown key 'colour'"),
    ("min > max", "size: {min: 2, max: 40}", "size: {min: 50, max: 40}", "6:22",
     "max (40) must not be below min (50)"),
    ("bad duration", "cooldown: {up: 60s,", "cooldown: {up: 60 s,", "10:16", "invalid duration"),
    ("unknown provider", "{provider: rack-a, blueprint: small-bm}",
     "{provider: rack-b, blueprint: small-bm}", "14:16", "unknown provider 'rack-b'"),
    ("down >= up", "  scale_down_below: 0.45", "  scale_down_below: 0.85", "9:21",
     "scale_down_below (0.85) must be below scale_up_above (0.8)"),
    ("bad cron", '"0 8 * * 1-5"', '"0 25 * * 1-5"', "12:12", "hour: '25' is outside 0-23"),
    ("bad cron field count", '"0 8 * * 1-5"', '"0 8 * *"', "12:12", "must have 5 fields"),
    ("schedule too long", "duration: 10h", "duration: 100000000d", "12:37", "at most 366d"),
    ("missing key", "size: {min: 2, max: 40}\n", "", "1:1", "missing required key 'size'"),
    ("wrong type", "size: {min: 2, max: 40}", "size: {min: two, max: 40}", "6:13",
     "valid integer"),
    ("duplicate key", "kind: Pool\n", "kind: Pool\nkind: Pool\n", "3:1", "duplicate key 'kind'"),
    ("yaml syntax", "size: {min: 2, max: 40}", "size: {min: 2, max: 40", "7:8", "YAML syntax"),
    ("unknown kind", "kind: Pool", "kind: Poll", "2:7", "expected one of Pool, Providers"),
]


@pytest.mark.parametrize(("case", "old", "new", "where", "words"), MISTAKES,
                         ids=[m[0] for m in MISTAKES])
def test_each_mistake_is_reported_at_its_line_and_column(
        tmp_path: Path, case: str, old: str, new: str, where: str, words: str) -> None:
    assert old in GOOD, case
    policy = tmp_path / "small.yaml"
    policy.write_text(GOOD.replace(old, new, 1))
    problems = validate_paths([policy, PROVIDERS])
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{policy}:{where}: "), problems[0]
    assert words in problems[0]


def test_good_file_is_valid(tmp_path: Path) -> None:
    (tmp_path / "small.yaml").write_text(GOOD)
    assert validate_paths([tmp_path, PROVIDERS]) == []


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    policy = tmp_path / "small.yaml"
    policy.write_text(GOOD.replace("size: {min: 2, max: 40}", "size: {min: 50, max: 40}")
                      .replace("60s", "soon"))
    assert len(validate_paths([policy])) == 2


def test_blueprint_of_the_wrong_profile_is_refused(tmp_path: Path) -> None:
    policy = tmp_path / "small.yaml"
    policy.write_text(GOOD.replace("node_profile: small", "node_profile: large"))
    (problem,) = validate_paths([policy, PROVIDERS])
    assert problem.startswith(f"{policy}:14:35: ")
    assert "makes 'small' nodes but the pool selects node_profile 'large'" in problem


def test_a_bad_set_loads_nothing(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(GOOD)
    (tmp_path / "b.yaml").write_text(GOOD.replace("name: small", "name: other")
                                     .replace("60s", "x"))
    with pytest.raises(ConfigError) as caught:
        load_policy_set([tmp_path, PROVIDERS])
    assert len(caught.value.problems) == 1


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gearshift", *args], capture_output=True,
                          text=True, check=False, cwd=ROOT)


def test_validate_command_exit_codes_and_output(tmp_path: Path) -> None:
    ok = run_cli("validate", "policies")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == ""
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("60s", "60 s"))
    result = run_cli("validate", str(bad), "policies/providers.yaml")
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{bad}:10:16: cooldown.up: invalid duration '60 s': use a number with a unit, "
        "e.g. 90s, 10m, 2h, 1h30m, 1d"]


def test_schema_command_prints_json_schema() -> None:
    result = run_cli("schema", "--kind", "pool")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert schema["additionalProperties"] is False
    assert {"apiVersion", "selector", "size", "placement"} <= set(schema["properties"])
    assert schema["$defs"]["Cooldown"]["properties"]["up"]["type"] == "string"
