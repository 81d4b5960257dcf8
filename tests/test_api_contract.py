"""The HTTP API against its OpenAPI document: schemathesis on a live daemon, with and without
the token, plus the document's coverage of the routes and the body rules it promises."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from builders import policy_set, pool
from gearshift.api.openapi import openapi_document
from gearshift.api.server import ApiServer
from gearshift.clock import ManualClock
from gearshift.observe.requests import parse_capacity_request
from live import TOKEN, LiveDaemon, start_daemon
from test_reconciler import Rig


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory,
           mosquitto: tuple[str, int]) -> Iterator[LiveDaemon]:
    live = start_daemon(tmp_path_factory.mktemp("api"), mosquitto, demand=60)
    live.wait_ready()
    yield live
    assert live.stop() == 0, live.log.read_text()[-3000:]


def schemathesis(daemon: LiveDaemon, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st is not None, "schemathesis is a dev dependency: pip install -e '.[dev]'"
    return subprocess.run(
        [st, "run", f"{daemon.url}/v1/openapi.json", "--checks", "all", "--max-examples", "25",
         "--seed", "7", "--workers", "1", "--request-timeout", "10", "--no-color",
         "--suppress-health-check", "too_slow", *args],
        capture_output=True, text=True, check=False, timeout=600, cwd=tmp_path,
        env={"PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path),
             "SCHEMATHESIS_HOOKS": ""})


def assert_every_operation_tested(output: str) -> None:
    """None skipped: all operations but the document itself (schemathesis leaves that out)."""
    operations = sum(len(item) for item in openapi_document(pools=[], max_body=1)["paths"].values())
    selected = re.search(r"Selected: (\d+)/(\d+)", output)
    tested = re.search(r"Tested: (\d+)", output)
    assert selected and tested, output[-3000:]
    assert int(tested.group(1)) == int(selected.group(1)) == operations - 1, output[-3000:]


@pytest.mark.slow  # ~4 s of generated requests
def test_schemathesis_without_the_token(daemon: LiveDaemon, tmp_path: Path) -> None:
    result = schemathesis(daemon, tmp_path)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert_every_operation_tested(result.stdout)


@pytest.mark.slow  # ~4 s of generated requests
def test_schemathesis_with_the_token(daemon: LiveDaemon, tmp_path: Path) -> None:
    har = tmp_path / "calls.har"
    result = schemathesis(daemon, tmp_path, "--header", f"Authorization: Bearer {TOKEN}",
                          "--report", "har", "--report-har-path", str(har))
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert_every_operation_tested(result.stdout)
    assert "Authentication failed" not in result.stdout, result.stdout[-3000:]
    # The token got the fuzzing past auth into the real handlers, both ways.
    answers = Counter((e["request"]["method"], e["request"]["url"].split("/v1/")[-1],
                       e["response"]["status"])
                      for e in json.loads(har.read_text())["log"]["entries"])
    assert answers[("POST", "capacity-requests", 201)] >= 5, answers
    assert answers[("POST", "capacity-requests", 422)] >= 5, answers
    assert answers[("POST", "pools/small/pause", 200)] >= 1, answers
    assert not [k for k in answers if k[2] >= 500], answers
    # Malformed requests (schemathesis probes a NUL in a header) are one log line each,
    # without the request's text (which could carry the token) and without a traceback.
    text = daemon.log.read_text()
    assert TOKEN not in text
    assert "Traceback" not in text, text[-3000:]
    assert all(line.startswith("{") for line in text.splitlines()), text[-3000:]


def test_the_document_lists_exactly_the_served_routes() -> None:
    rig = Rig(policy_set(pool()), demand=60, clock=ManualClock())
    api = ApiServer(rig.reconciler, rig.metrics, token=TOKEN)
    served = {(route.method, route.resource.canonical) for route in api.app.router.routes()
              if route.method != "HEAD" and route.resource is not None}
    document = openapi_document(pools=["small"], max_body=65536)
    documented = {(method.upper(), path) for path, item in document["paths"].items()
                  for method in item}
    assert served == documented


def test_live_document_names_the_pools_and_the_body_limit(daemon: LiveDaemon) -> None:
    document = daemon.json("/v1/openapi.json")
    assert document["openapi"] == "3.1.0"
    body = document["paths"]["/v1/capacity-requests"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["properties"]["pool"]["enum"] == [
        "small"]
    assert "65536 bytes" in document["info"]["description"]


def post(daemon: LiveDaemon, path: str, body: bytes, token: str | None = TOKEN) -> int:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(daemon.url + path, data=body, headers=headers,
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_live_mutations_auth_and_body_limit(daemon: LiveDaemon) -> None:
    good = json.dumps({"pool": "small", "gears": 30, "ttl": "5m", "reason": "test"}).encode()
    assert post(daemon, "/v1/capacity-requests", good, token=None) == 401
    assert post(daemon, "/v1/capacity-requests", good, token="wrong") == 403
    assert post(daemon, "/v1/capacity-requests", good) == 201
    padded = json.dumps({"pool": "small", "gears": 1, "reason": "x" * 70_000}).encode()
    assert post(daemon, "/v1/capacity-requests", padded) == 413
    assert post(daemon, "/v1/pools/small/pause", b"") == 200
    assert daemon.json("/v1/status")["pools"]["small"]["paused"] is True
    assert post(daemon, "/v1/pools/small/resume", b"") == 200
    assert daemon.json("/v1/status")["pools"]["small"]["paused"] is False


# The keys /v1/status had while server.py built it by hand, as a live daemon (this
# module's fixture, before the models) sent them; order included. Pools, providers and
# operations are keyed by name; their entries' keys are listed.
OLD_STATUS_KEYS = ["pools", "leader", "facts_fresh", "last_reconcile", "providers",
                   "policy_errors", "decisions", "leadership", "operations", "recoveries",
                   "untrusted"]
OLD_STATUS_PARTS = {
    "pools": ["nodes", "active_density", "desired_nodes", "degraded", "paused", "min", "max",
              "band", "summary"],
    "providers": ["name", "available", "why_unavailable", "boot_time", "capacity_error_at",
                  "capacity_error", "nodes"],
    "operations": ["count", "oldest_age_seconds", "phases"],
}
OLD_STATUS_NESTED = {
    "leadership": ["holder", "token", "terms", "journal"],
    "recoveries": ["performed", "incomplete"],
    "untrusted": ["nodes", "counts", "refused", "disputed"],
}


def test_live_status_keeps_every_key_it_had(daemon: LiveDaemon) -> None:
    status = daemon.json("/v1/status")
    assert list(status) == OLD_STATUS_KEYS
    for part, keys in OLD_STATUS_PARTS.items():
        assert status[part], part
        for name, entry in status[part].items():
            assert list(entry) == keys, (part, name)
    for part, keys in OLD_STATUS_NESTED.items():
        assert list(status[part]) == keys, part
    assert list(status["pools"]["small"]["nodes"]) == ["active", "booting", "draining",
                                                       "unknown", "parked"]  # new: last
    assert list(status["pools"]["small"]["band"]) == ["scale_up_above", "target",
                                                      "scale_down_below"]
    assert set(status["operations"]) == {"create", "drain"}
    assert status["leadership"]["journal"] == "memory"
    assert status["recoveries"]["performed"] >= 1


def test_live_bodies_validate_against_the_generated_schemas(daemon: LiveDaemon) -> None:
    """/v1/status, /healthz and /readyz as served fit the schemas generated from the models
    (schemathesis checks this too, but only on the bodies it happens to fetch)."""
    import jsonschema  # type: ignore[import-untyped]  # no stubs installed

    components = daemon.json("/v1/openapi.json")["components"]
    for path, name in (("/v1/status", "Status"), ("/healthz", "Health"),
                       ("/readyz", "Ready")):
        jsonschema.Draft202012Validator(
            {"$ref": f"#/components/schemas/{name}", "components": components}
        ).validate(daemon.json(path))


@pytest.mark.parametrize(("body", "problem"), [
    ({"pool": "small", "gears": 5}, None),
    ({"pool": "small", "gears": 5.0, "ttl": "1h30m", "reason": "deploy"}, None),
    ([], "JSON object"),
    ({"pool": "nope", "gears": 5}, "pool"),
    ({"pool": "small"}, "gears"),
    ({"pool": "small", "gears": True}, "gears"),
    ({"pool": "small", "gears": 0}, "gears"),
    ({"pool": "small", "gears": 100_001}, "gears"),
    ({"pool": "small", "gears": "5"}, "gears"),
    ({"pool": "small", "gears": 5, "ttl": ""}, "ttl"),
    ({"pool": "small", "gears": 5, "ttl": "10"}, "ttl"),
    ({"pool": "small", "gears": 5, "ttl": 600}, "ttl"),
    ({"pool": "small", "gears": 5, "ttl": "9" * 5000 + "d"}, "ttl"),
    ({"pool": "small", "gears": 5, "reason": 7}, "reason"),
    ({"pool": "small", "gears": 5, "reason": "x" * 201}, "reason"),
    ({"pool": "small", "gears": 5, "extra": 1}, "unknown field"),
])
def test_capacity_request_bodies(body: Any, problem: str | None) -> None:
    if problem is None:
        pool_name, gears, ttl, _ = parse_capacity_request(body, pools={"small"})
        assert (pool_name, gears) == ("small", 5)
        assert ttl == (5400 if "ttl" in body else 1800)
        return
    with pytest.raises((TypeError, ValueError), match=problem):
        parse_capacity_request(body, pools={"small"})


def test_a_week_caps_the_ttl() -> None:
    _, _, ttl, _ = parse_capacity_request({"pool": "small", "gears": 1, "ttl": "99999d"},
                                          pools={"small"})
    assert ttl == 7 * 86400


def test_the_documented_plan_schema_takes_every_action_kind() -> None:
    """The served Plan schema (generated from api_models) accepts a plan holding every action
    kind, drains with their node candidates included, and refuses an unknown kind."""
    import jsonschema

    from gearshift.explain import plan_to_dict
    from test_cli import _every_kind_plan

    document = openapi_document(pools=["small"], max_body=65536)
    plan = plan_to_dict(_every_kind_plan())  # type: ignore[arg-type]
    assert {a["kind"] for a in plan["actions"]} == {"scale_out", "drain", "cancel_drain",
                                                    "retire", "abandon", "destroy_again"}
    validator = jsonschema.Draft202012Validator(
        {"$ref": "#/components/schemas/Plan", "components": document["components"]})
    validator.validate(plan)
    plan["actions"][1]["kind"] = "explode"
    assert not validator.is_valid(plan)
