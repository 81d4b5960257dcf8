"""Policy and provider files: every shipped file validates; every mistake is pinned to
its FILE:LINE:COL."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from conftest import ROOT
from gearshift.act.providers.kind_settings import (
    KIND_SETTINGS,
    Ec2BlueprintSettings,
    Ec2Settings,
    ForemanSettings,
    MachineSpec,
    OvirtSettings,
    VSphereSettings,
)
from gearshift.act.providers.registry import KINDS
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
                   "drain-cancelled", "flash-big", "rebalance", "urgent-week", "monday-ramp",
                   "monday-onprem")),
]


@pytest.mark.parametrize("paths", POLICY_SETS, ids=lambda p: str(p[0].relative_to(ROOT))
                         if p[0].is_relative_to(ROOT) else "demo")
def test_shipped_policies_validate(paths: list[Path]) -> None:
    assert validate_paths(paths, kinds=KIND_SETTINGS) == []
    assert load_policy_set(paths).pools


# Daemon configs shipped beside the policies they name (test_cli runs the README's plan
# line with this one; here it must load as settings).
EXAMPLE_CONFIGS = [ROOT / "policies/examples/plan/config.yaml"]


def test_every_yaml_file_under_policies_belongs_to_a_checked_set() -> None:
    checked = {f.resolve() for paths in POLICY_SETS for p in paths
               for f in ([p] if p.is_file() else p.glob("*.yaml"))}
    shipped = {f.resolve() for f in (ROOT / "policies").rglob("*.yaml")}
    assert shipped <= checked | {c.resolve() for c in EXAMPLE_CONFIGS}


@pytest.mark.parametrize("config", EXAMPLE_CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_example_configs_load_as_settings(config: Path) -> None:
    from gearshift.settings import load_settings

    settings = load_settings(config)
    assert settings.policies_dir == Path("policies")


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
    ("unknown blueprint", "{provider: rack-a, blueprint: small-bm}",
     "{provider: rack-a, blueprint: small-bmx}", "14:35",
     "unknown blueprint 'small-bmx' (known on rack-a: "),
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
    up = schema["$defs"]["Cooldown"]["properties"]["up"]
    # one Duration everywhere: "90s"-style strings (never the empty string) or seconds
    assert [form["type"] for form in up["anyOf"]] == ["string", "number"]
    pattern = re.compile(up["anyOf"][0]["pattern"])
    assert pattern.search("1h30m") and pattern.search("1.5s")
    assert not pattern.search("") and not pattern.search("10")


def test_durations_are_strings_or_seconds_in_policies_and_settings() -> None:
    from gearshift.policy.schema import Cooldown
    from gearshift.settings import ReconcileSettings

    assert Cooldown.model_validate({"up": "1m30s", "down": 90}) == Cooldown(up=90.0, down=90.0)
    assert ReconcileSettings.model_validate({"interval": "1m"}).interval == 60.0
    assert ReconcileSettings.model_validate({"interval": 60}).interval == 60.0
    for bad in ("", "10", -1, True, float("nan")):
        with pytest.raises(ValueError, match="invalid duration"):
            Cooldown.model_validate({"up": bad})


# -- each provider kind's own settings: --------------------------------------------------
# The blueprint comes first so its settings sit on line 8 whatever the kind; the provider's
# settings start on line 14.
KIND_FILE = """\
apiVersion: gearshift/v1
kind: Providers
blueprints:
  - name: b1
    provider: p1
    node_profile: small
    template: t1
    settings: {blueprint}
providers:
  - name: p1
    kind: {kind}
    quota: {{max_nodes: 3}}
    settings:
{settings}"""

FOREMAN_BLOCK = ("      foreman:\n"
                 "        url: https://foreman.example\n"
                 "        username: gearshift\n"
                 "        password_file: /nonexistent/foreman.token\n")
# Credentials are named, never read: the variable is unset and the file does not exist.
KIND_SETTINGS_OK = {
    "vsphere": ("      url: https://vcenter.example/sdk\n"
                "      username: svc-gearshift\n"
                "      password_env: GS_TEST_UNSET_PASSWORD\n"
                "      cluster: C1\n",
                "{cpus: 2, memory_mb: 4096}"),
    "ovirt": ("      url: https://engine.example/ovirt-engine/api\n"
              "      username_env: GS_TEST_UNSET_USER\n"
              "      password_file: /nonexistent/ovirt.pw\n"
              "      cluster: Default\n"
              "      insecure: true\n",
              "{cpus: 2}"),
    "ec2": ("      region: eu-west-1\n"
            "      subnet_id: subnet-0abc\n"
            "      credentials_file: /nonexistent/aws.credentials\n",
            "{launch_template_name: lt-small, spot: true}"),
    "redfish": ("      machines:\n"
                "        - bmc: https://10.0.0.11\n"
                "          system: /redfish/v1/Systems/1\n"
                "      power_off: ForceOff\n",
                "{}"),
    "foreman": ("      machines:\n"
                "        - {bmc: https://10.0.0.11, hostname: node1.example}\n"
                + FOREMAN_BLOCK, "{}"),
}


def kind_file(tmp_path: Path, kind: str, old: str = "", new: str = "", *,
              blueprint: str | None = None) -> Path:
    settings, blueprint_ok = KIND_SETTINGS_OK[kind]
    assert old in settings, (kind, old)
    text = KIND_FILE.format(kind=kind, settings=settings.replace(old, new, 1),
                            blueprint=blueprint or blueprint_ok)
    path = tmp_path / "providers.yaml"
    path.write_text(text)
    return path


def allowed(model: type[BaseModel]) -> str:
    return ", ".join(sorted(model.model_fields))


# (case, kind, text replaced in the provider's settings, its replacement,
#  or a blueprint's settings, LINE:COL, message after "FILE:LINE:COL: ")
KIND_MISTAKES: list[tuple[str, str, str, str, str | None, str, str]] = [
    ("vsphere bad key", "vsphere", "cluster: C1", "clustr: C1", None, "17:7",
     f"provider p1 (kind vsphere): settings.clustr: unknown key 'clustr' "
     f"(allowed here: {allowed(VSphereSettings)})"),
    ("vsphere wrong type", "vsphere", "cluster: C1", "workers: many", None, "17:16",
     "provider p1 (kind vsphere): settings.workers: Input should be a valid integer, "
     "unable to parse string as an integer"),
    ("vsphere bad url", "vsphere", "https://vcenter.example/sdk", "vcenter.example", None,
     "14:12", "provider p1 (kind vsphere): settings.url: 'vcenter.example' is not an "
     "http(s) URL such as https://vcenter/sdk"),
    ("vsphere no password", "vsphere", "      password_env: GS_TEST_UNSET_PASSWORD\n", "",
     None, "14:7", "provider p1 (kind vsphere): settings: give exactly one of password_env "
     "or password_file"),
    ("ovirt bad key", "ovirt", "insecure: true", "insecrue: true", None, "18:7",
     f"provider p1 (kind ovirt): settings.insecrue: unknown key 'insecrue' "
     f"(allowed here: {allowed(OvirtSettings)})"),
    ("ovirt wrong type", "ovirt", "insecure: true", "start_timeout: soon", None, "18:22",
     "provider p1 (kind ovirt): settings.start_timeout: invalid duration 'soon': use a "
     "number with a unit, e.g. 90s, 10m, 2h, 1h30m, 1d"),
    ("ovirt missing key", "ovirt", "      cluster: Default\n", "", None, "14:7",
     "provider p1 (kind ovirt): settings: missing required key 'cluster'"),
    ("ovirt username twice", "ovirt", "      cluster", "      username: gs@internal\n"
     "      cluster", None, "14:7", "provider p1 (kind ovirt): settings: give the username "
     "once, as one of username, username_env, username_file"),
    ("ec2 bad key", "ec2", "subnet_id:", "subnet:", None, "15:7",
     f"provider p1 (kind ec2): settings.subnet: unknown key 'subnet' "
     f"(allowed here: {allowed(Ec2Settings)})"),
    ("ec2 wrong type", "ec2", "subnet_id: subnet-0abc", "spot: maybe", None, "15:13",
     "provider p1 (kind ec2): settings.spot: Input should be a valid boolean, unable to "
     "interpret input"),
    ("redfish nested bad key", "redfish", "system:", "sytem:", None, "16:11",
     f"provider p1 (kind redfish): settings.machines[0].sytem: unknown key 'sytem' "
     f"(allowed here: {allowed(MachineSpec)})"),
    ("redfish wrong value", "redfish", "ForceOff", "PowerOff", None, "17:18",
     "provider p1 (kind redfish): settings.power_off: String should match pattern "
     "'^(GracefulShutdown|ForceOff)$'"),
    ("redfish wrong type", "redfish", "      machines:\n        - bmc: https://10.0.0.11\n"
     "          system: /redfish/v1/Systems/1\n", "      machines: https://10.0.0.11\n", None,
     "14:17", "provider p1 (kind redfish): settings.machines: Input should be a valid list"),
    ("foreman bad key", "foreman", "username: gearshift", "usernme: gearshift", None, "18:9",
     f"provider p1 (kind foreman): settings.foreman.usernme: unknown key 'usernme' "
     f"(allowed here: {allowed(ForemanSettings)})"),
    ("foreman without foreman", "foreman", FOREMAN_BLOCK, "", None, "14:7",
     "provider p1 (kind foreman): settings.foreman: give Foreman's url (and credentials)"),
    ("vsphere blueprint bad key", "vsphere", "", "", "{cpu: 2}", "8:16",
     "blueprint b1 (provider p1, kind vsphere): settings.cpu: unknown key 'cpu' "
     "(allowed here: annotation, cpus, memory_mb)"),
    ("vsphere blueprint bad value", "vsphere", "", "", "{cpus: 0}", "8:22",
     "blueprint b1 (provider p1, kind vsphere): settings.cpus: Input should be greater than "
     "or equal to 1"),
    ("ovirt blueprint wrong type", "ovirt", "", "", "{memory_mb: lots}", "8:27",
     "blueprint b1 (provider p1, kind ovirt): settings.memory_mb: Input should be a valid "
     "integer, unable to parse string as an integer"),
    ("ec2 blueprint bad key", "ec2", "", "", "{launch_template: lt-small}", "8:16",
     f"blueprint b1 (provider p1, kind ec2): settings.launch_template: unknown key "
     f"'launch_template' (allowed here: {allowed(Ec2BlueprintSettings)})"),
    ("ec2 blueprint two templates", "ec2", "", "",
     "{launch_template_id: lt-0abc, launch_template_name: lt-small}", "8:15",
     "blueprint b1 (provider p1, kind ec2): settings: give launch_template_id or "
     "launch_template_name, not both"),
]


@pytest.mark.parametrize(("case", "kind", "old", "new", "blueprint", "where", "message"),
                         KIND_MISTAKES, ids=[m[0] for m in KIND_MISTAKES])
def test_each_kind_settings_mistake_is_reported_at_its_line_and_column(
        tmp_path: Path, case: str, kind: str, old: str, new: str, blueprint: str | None,
        where: str, message: str) -> None:
    path = kind_file(tmp_path, kind, old, new, blueprint=blueprint)
    assert validate_paths([path], kinds=KIND_SETTINGS) == [f"{path}:{where}: {message}"]


@pytest.mark.parametrize("kind", sorted(KIND_SETTINGS_OK))
def test_valid_kind_settings_pass_without_credentials_or_network(
        tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("validate tried to reach the network")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.delenv("GS_TEST_UNSET_PASSWORD", raising=False)
    monkeypatch.delenv("GS_TEST_UNSET_USER", raising=False)
    assert validate_paths([kind_file(tmp_path, kind)], kinds=KIND_SETTINGS) == []


def test_every_real_kind_has_its_settings_models() -> None:
    assert set(KIND_SETTINGS.providers) == set(KINDS) - {"simulated"}
    assert set(KIND_SETTINGS.blueprints) == {"vsphere", "ovirt", "ec2"}


def test_kind_settings_are_checked_only_once_the_file_s_shape_is_right(tmp_path: Path) -> None:
    path = kind_file(tmp_path, "vsphere", "cluster: C1", "clustr: C1")
    path.write_text(path.read_text().replace("quota: {max_nodes: 3}", "quota: {}"))
    (problem,) = validate_paths([path], kinds=KIND_SETTINGS)
    assert "missing required key 'max_nodes'" in problem


def test_validate_command_checks_kind_settings_without_any_sdk(tmp_path: Path) -> None:
    """The SDKs are optional extras: a CI job without them still gets every settings
    problem, because the settings models import no SDK."""
    providers = tmp_path / "providers.yaml"
    providers.write_text(
        "apiVersion: gearshift/v1\nkind: Providers\nproviders:\n"
        "  - {name: vc, kind: vsphere, quota: {max_nodes: 1}, settings: {url: x}}\n"
        "  - {name: ov, kind: ovirt, quota: {max_nodes: 1}, settings: {cluster: [C1]}}\n"
        "  - {name: aws, kind: ec2, quota: {max_nodes: 1}, settings: {regoin: us-east-1}}\n")
    without_sdks = ("import sys\n"
                    "for sdk in ('pyVmomi', 'pyVim', 'ovirtsdk4', 'aiobotocore', 'botocore'):\n"
                    "    sys.modules[sdk] = None  # `import sdk` now raises ImportError\n"
                    "from gearshift.cli import main\n"
                    "sys.exit(main(sys.argv[1:]))\n")
    result = subprocess.run([sys.executable, "-c", without_sdks, "validate", str(providers)],
                            capture_output=True, text=True, check=False, cwd=ROOT)
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == [
        f"{providers}:4:70: provider vc (kind vsphere): settings.url: 'x' is not an http(s) "
        f"URL such as https://vcenter/sdk",
        f"{providers}:5:62: provider ov (kind ovirt): settings: missing required key 'url'",
        f"{providers}:5:72: provider ov (kind ovirt): settings.cluster: Input should be a "
        f"valid string",
        f"{providers}:6:61: provider aws (kind ec2): settings: missing required key 'region'",
        f"{providers}:6:62: provider aws (kind ec2): settings.regoin: unknown key 'regoin' "
        f"(allowed here: {allowed(Ec2Settings)})",
    ]


def test_a_drain_budget_is_a_number_of_nodes_or_a_share_of_the_pool() -> None:
    from gearshift.policy.schema import PoolPolicy, ScaleIn
    from gearshift.policy.share import ShareOfPool, nodes_of

    assert ScaleIn.model_validate({"max_concurrent_drains": 3}).max_concurrent_drains == 3
    share = ScaleIn.model_validate({"max_concurrent_drains": "10%"}).max_concurrent_drains
    assert share == ShareOfPool(10.0)
    # Rounded up, never below one node; a whole number of nodes stays what it is.
    assert [nodes_of(share, pool_size=n) for n in (0, 1, 10, 11, 200)] == [1, 1, 1, 2, 20]
    assert nodes_of(4, pool_size=200) == 4
    # Unset or null: the larger of two nodes and 10% of the pool, rounded up.
    assert ScaleIn().max_concurrent_drains is None
    assert ScaleIn.model_validate({"max_concurrent_drains": None}).max_concurrent_drains is None
    assert [nodes_of(None, pool_size=n) for n in (0, 1, 10, 20, 21, 30, 31, 200)] == [
        2, 2, 2, 2, 3, 3, 4, 20]
    dumped = ScaleIn.model_validate({"max_concurrent_drains": "12.5%"}).model_dump()
    assert dumped["max_concurrent_drains"] == "12.5%"  # written back as it was read
    for bad in (0, -1, True, 2.5, "0%", "101%", "10", "ten", "10 %", "%", "1e3%"):
        with pytest.raises(ValueError, match=r"invalid (node count|share)"):
            ScaleIn.model_validate({"max_concurrent_drains": bad})
    schema = PoolPolicy.model_json_schema(by_alias=True)
    forms = schema["$defs"]["ScaleIn"]["properties"]["max_concurrent_drains"]["anyOf"]
    assert [form["type"] for form in forms] == ["integer", "string", "null"]
    assert re.compile(forms[1]["pattern"]).search("10%")
    assert not re.compile(forms[1]["pattern"]).search("10")
