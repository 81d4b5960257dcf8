"""The Grafana dashboard and the Prometheus rules cannot rot.

* every metric a panel, a dashboard variable or an alert/recording rule queries exists in
  a real /metrics exposition of the running daemon (tests/sim_daemon.py -> daemon.serve);
* promtool: `check rules` clean, `test rules` green, every alert covered by a unit test,
  the example scrape config valid;
* a real Prometheus scrapes the live daemon with the example config and the rules: the
  rules evaluate without errors, every dashboard query executes, and a healthy fleet
  fires no alert.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import ROOT, need
from gearshift.sim.broker import free_port, wait_for_port
from live import LiveDaemon, start_daemon
from promql import exposed_names, grafana_to_promql, label_values_metric, metric_names

DASHBOARD = ROOT / "deploy" / "grafana" / "gearshift.json"
PROMETHEUS = ROOT / "deploy" / "prometheus"


def dashboard_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from dashboard_panels(panel.get("panels", []))


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in dashboard_panels(dashboard["panels"])
               for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            query = query["query"] if isinstance(query, dict) else query
            queries.append(label_values_metric(query))
    return queries


def rule_exprs() -> dict[str, str]:
    rules = yaml.safe_load((PROMETHEUS / "rules.yml").read_text())
    return {rule.get("alert") or rule["record"]: rule["expr"]
            for group in rules["groups"] for rule in group["rules"]}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory,
           mosquitto: tuple[str, int]) -> Iterator[LiveDaemon]:
    live = start_daemon(tmp_path_factory.mktemp("dash"), mosquitto, demand=60, interval="1s")
    live.wait_ready()
    yield live
    assert live.stop() == 0, live.log.read_text()[-3000:]


@pytest.mark.parametrize(("expr", "names"), [
    ('sum by (pool, state) (gearshift_pool_nodes{job="$job",state!="draining"})',
     {"gearshift_pool_nodes"}),
    ("histogram_quantile(0.95, sum by (provider, le) (rate(a_bucket{x=~\"a|b\"}[$__rate_interval])))",
     {"a_bucket"}),
    ("time() - max(b_seconds{instance=~\"$instance\"}) > 300", {"b_seconds"}),
    ("x > on (job, pool) y{limit=\"max\"} and on (job) z", {"x", "y", "z"}),
    ("count(m == 0) or vector(0)", {"m"}),
    ("sum without (state) (n offset 5m) / ignoring(op) group_left(provider) o", {"n", "o"}),
    ("time() - (last > 0 or start) > 1e3", {"last", "start"}),
    ("gearshift:pool_nodes:sum", {"gearshift:pool_nodes:sum"}),
    ('absent(p{job="gearshift"})', {"p"}),
])
def test_metric_name_extraction(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_dashboard_is_importable_and_covers_what_operators_watch() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "gearshift" and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in dashboard_panels(dashboard["panels"])]
    assert len(ids) == len(set(ids))
    queried = set().union(*(metric_names(q) for q in dashboard_queries()))
    for must in ("gearshift_pool_active_density", "gearshift_pool_density_threshold",
                 "gearshift_pool_nodes", "gearshift_provider_nodes", "gearshift_actions_total",
                 "gearshift_provider_call_seconds_bucket", "gearshift_provider_calls_total",
                 "gearshift_operations_in_flight", "gearshift_provider_available"):
        assert must in queried, must
    # Density is drawn against the band in the same panel.
    density = next(p for p in dashboard_panels(dashboard["panels"])
                   if "gearshift_pool_active_density" in json.dumps(p.get("targets", [])))
    assert "gearshift_pool_density_threshold" in json.dumps(density["targets"])


def test_every_queried_metric_exists_in_the_daemons_exposition(daemon: LiveDaemon) -> None:
    exposed = exposed_names(daemon.get("/metrics")[1].decode())
    recorded = {name for name in rule_exprs() if ":" in name}
    missing = {}
    for query in dashboard_queries():
        unknown = metric_names(query) - exposed
        if unknown:
            missing[query] = unknown
    for name, expr in rule_exprs().items():
        unknown = metric_names(expr) - exposed - recorded - {"up"}
        if unknown:
            missing[name] = unknown
    assert not missing, f"queried but not exposed by the daemon: {missing}"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([need("promtool"), *args], capture_output=True, text=True,
                          check=False, cwd=PROMETHEUS, timeout=120)


def test_promtool_check_rules_is_clean() -> None:
    result = promtool("check", "rules", "rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 18 rules found" in result.stdout
    assert "WARNING" not in (result.stdout + result.stderr).upper()


def test_promtool_rule_unit_tests_pass_and_cover_every_alert() -> None:
    tests = sorted(str(p.relative_to(PROMETHEUS)) for p in (PROMETHEUS / "tests").glob("*.yml"))
    assert tests
    result = promtool("test", "rules", *tests)
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = {name for name in rule_exprs() if ":" not in name}
    tested: set[str] = set()
    fired: set[str] = set()
    for path in tests:
        for group in yaml.safe_load((PROMETHEUS / path).read_text())["tests"]:
            for case in group.get("alert_rule_test", []):
                tested.add(case["alertname"])
                if case.get("exp_alerts"):
                    fired.add(case["alertname"])
    assert alerts == tested == fired, (alerts - fired, tested - alerts)
    assert len(alerts) >= 8


def test_example_scrape_config_is_valid() -> None:
    result = promtool("check", "config", "scrape.example.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((PROMETHEUS / "scrape.example.yml").read_text())
    assert config["scrape_configs"][0]["job_name"] == "gearshift"
    assert config["scrape_configs"][0]["static_configs"][0]["targets"] == ["127.0.0.1:9310"]


def api(url: str, path: str, **params: str) -> Any:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"{url}{path}{query}", timeout=10) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]


@pytest.mark.slow  # ~10 s: a real Prometheus scrapes and evaluates the rules
def test_a_real_prometheus_scrapes_the_daemon_with_the_rules(daemon: LiveDaemon,
                                                             tmp_path: Path) -> None:
    binary = need("prometheus")
    config = yaml.safe_load((PROMETHEUS / "scrape.example.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(PROMETHEUS / "rules.yml")]
    job = config["scrape_configs"][0]
    job["scrape_interval"], job["scrape_timeout"] = "1s", "1s"
    job["static_configs"][0]["targets"] = [daemon.url.removeprefix("http://")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
        deadline = time.monotonic() + 60
        while True:  # the port opens before the TSDB is ready (the API answers 503 until then)
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "prometheus.log").read_text()[-3000:]
            time.sleep(0.2)
        while True:  # three scrapes, so rate() has points to work with
            result = api(url, "/api/v1/query", query='count_over_time(up{job="gearshift"}[1m])')
            if result["result"] and float(result["result"][0]["value"][1]) >= 3:
                break
            assert time.monotonic() < deadline, (tmp_path / "prometheus.log").read_text()[-3000:]
            time.sleep(0.5)
        assert api(url, "/api/v1/query", query='up{job="gearshift"}')["result"][0]["value"][1] == "1"
        time.sleep(2)  # a rule evaluation after those scrapes
        for group in api(url, "/api/v1/rules")["groups"]:
            for rule in group["rules"]:
                assert rule["health"] == "ok", rule
        nodes = api(url, "/api/v1/query", query='gearshift:pool_nodes:sum{pool="small"}')
        assert [r["value"][1] for r in nodes["result"]] == ["2"]
        values = {"job": "gearshift", "instance": ".*", "pool": "small",
                  "datasource": "prometheus"}
        for query in dashboard_queries():
            api(url, "/api/v1/query", query=grafana_to_promql(query, values=values))
        density = api(url, "/api/v1/query", query=grafana_to_promql(
            'gearshift_pool_active_density{job="$job",pool=~"$pool"}', values=values))
        assert float(density["result"][0]["value"][1]) == pytest.approx(0.5)
        firing = [a for a in api(url, "/api/v1/alerts")["alerts"] if a["state"] == "firing"]
        assert firing == [], firing
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
