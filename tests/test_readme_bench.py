"""The README's benchmark tables show what the bench scripts recorded, figure for figure.

Speed figures depend on the machine, so no test can re-measure them; what can be checked is
that the README shows the run the scripts wrote to bench/results/*.json (the command each
table names), rounded as shown, and no older or hand-edited figure. Re-running a bench
script and forgetting the README fails here; so does editing a figure in one place only.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from conftest import ROOT
from readme import number, table
from test_readme_figures import SIMULATE, shown

RESULTS = ROOT / "bench" / "results"
TIMES = "\N{MULTIPLICATION SIGN}"  # as in the README's column headers


def recorded(name: str) -> Any:
    path = RESULTS / name
    assert path.is_file(), f"{path} is gone: the README's table has nothing behind it"
    return json.loads(path.read_text())


def pair(cell: str) -> list[Any]:
    """``"0.38 / 0.38"`` -> two ``approx`` figures (min, median)."""
    parts = [part.strip() for part in cell.split("/")]
    assert len(parts) == 2, cell
    return [shown(part) for part in parts]


def min_median(figures: dict[str, float], *, scale: float = 1.0) -> list[float]:
    return [figures["min"] * scale, figures["median"] * scale]


def test_the_simulate_table_shows_bench_simulate_runs() -> None:
    runs = {r["example"]: r for r in recorded("simulate.json")["runs"]}
    week = {r["example"]: r for r in recorded("simulate-week.json")["runs"]}
    names = {"flash-crowd": runs["flash-crowd"], "diurnal-week": runs["diurnal-week"],
             "large, 20 pools": runs["large (20 pools)"],
             "large, 20 pools (one run)": week["large (20 pools)"]}
    rows = table(SIMULATE)
    assert [row["example"] for row in rows] == list(names)
    for row in rows:
        run, where = names[row["example"]], f"README simulate table, row {row['example']}"
        assert run["simulated_hours"] == shown(row["simulated"]), where
        assert run["peak_nodes"] == shown(row["peak nodes"]), where
        assert run["cpu_ratio_to_baseline"] == shown(row["CPU ÷ plain pass"]), where
        assert run["reconciles"] == shown(row["reconciles"]), where
        assert run["unmet_gear_seconds"] == shown(row["unmet gear-s"]), where
        assert run["cost"] == shown(row["cost"]), where
        if "/" in row["CPU s min/median"]:
            assert min_median(run["cpu_seconds"]) == pair(row["CPU s min/median"]), where
            assert min_median(run["wall_seconds"]) == pair(row["wall s min/median"]), where
        else:  # one run: min and median are that run
            assert run["runs"] == 1, where
            assert run["cpu_seconds"]["min"] == shown(row["CPU s min/median"]), where
            assert run["wall_seconds"]["min"] == shown(row["wall s min/median"]), where


PLAN = [f"nodes {TIMES} pools", "steady ms", f"{TIMES} pass", "scale-out ms", f"{TIMES} pass",
        "scale-in ms", f"{TIMES} pass"]


def test_the_plan_table_shows_bench_plan() -> None:
    cases = {(c["nodes"], c["pools"], c["shape"]): c for c in recorded("plan.json")["cases"]}
    lines = (ROOT / "README.md").read_text().splitlines()
    at = lines.index("| " + " | ".join(PLAN) + " |")
    rows = []
    for line in lines[at + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    sizes = [tuple(int(number(part)) for part in r[0].split(TIMES)) for r in rows]
    assert set(sizes) == {(n, p) for n, p, _ in cases}, "a size bench/plan.py measured is missing"
    for cells, (nodes, pools) in zip(rows, sizes, strict=True):
        for shape, ms, ratio in (("steady", cells[1], cells[2]), ("scale-out", cells[3], cells[4]),
                                 ("scale-in", cells[5], cells[6])):
            case, where = cases[(nodes, pools, shape)], f"README plan table, {cells[0]} {shape}"
            assert case["plan_cpu_ms"]["median"] == shown(ms), where  # "median CPU time"
            assert case["cpu_ratio"] == shown(ratio), where


PROVIDERS = ["simulator", "create 20 at once", "one by one", "create p50 / p99 (one by one)",
             "destroy 20 at once", "one by one"]
SIMULATORS = {"vcsim": "vsphere", "fake oVirt engine": "ovirt", "moto (EC2)": "ec2",
              "sushy-tools (Redfish)": "redfish"}


def test_the_providers_table_shows_bench_providers() -> None:
    measured = recorded("providers.json")["providers"]
    lines = (ROOT / "README.md").read_text().splitlines()
    at = lines.index("| " + " | ".join(PROVIDERS) + " |")
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in lines[at + 2:at + 2 + len(SIMULATORS)]]
    assert [r[0] for r in rows] == list(SIMULATORS)
    for cells in rows:
        runs, where = measured[SIMULATORS[cells[0]]], f"README providers table, {cells[0]}"
        assert runs["parallel"]["create"]["total_s"] == shown(cells[1]), where
        assert runs["one_by_one"]["create"]["total_s"] == shown(cells[2]), where
        one = runs["one_by_one"]["create"]
        assert [one["p50_s"], one["p99_s"]] == pair(cells[3]), where
        assert runs["parallel"]["destroy"]["total_s"] == shown(cells[4]), where
        assert runs["one_by_one"]["destroy"]["total_s"] == shown(cells[5]), where


MCOLLECTIVE = ["nodes", "broadcast min / median s", "directed min / median s",
               "`mco rpc` min / median s", "broadcast msgs sent + received",
               "directed msgs sent + received"]


def test_the_mcollective_table_shows_bench_mcollective() -> None:
    runs = recorded("mcollective.json")["runs"]
    rows = table(MCOLLECTIVE)
    assert [row["nodes"] for row in rows] == sorted(runs, key=int)
    for row in rows:
        run, where = runs[row["nodes"]], f"README MCollective table, {row['nodes']} nodes"
        for column, kind in ((MCOLLECTIVE[1], "broadcast"), (MCOLLECTIVE[2], "directed"),
                             (MCOLLECTIVE[3], "mco_rpc_baseline")):
            figures = run[kind]
            assert [figures["refresh_s_min"], figures["refresh_s_median"]] \
                == pair(row[column]), (where, column)
        for column, kind in ((MCOLLECTIVE[4], "broadcast"), (MCOLLECTIVE[5], "directed")):
            sent, received = (int(number(p)) for p in row[column].split("+"))
            assert (sent, received) == (run[kind]["messages_sent_per_refresh"],
                                        run[kind]["messages_received_per_refresh"]), where


INGEST = [f"nodes {TIMES} pools", "ingest ÷ raw", "GC policy", "p50 ms", "p99 ms", "max ms",
          "full GCs in the trials (longest ms)"]


@pytest.mark.parametrize("policy", ["on", "off"])
def test_the_ingest_table_shows_bench_ingest(policy: str) -> None:
    runs = {(r["nodes"], r["pools"]): r["summary"] for r in recorded("ingest.json")["runs"]}
    rows, size = [], ""
    for row in table(INGEST):
        size = row[INGEST[0]] or size  # the "off" row leaves the size blank
        if row["GC policy"] == policy:
            rows.append((size, row))
    assert {size for size, _ in rows} == {f"{n:,} {TIMES} {p}".replace(",", " ") for n, p in runs}
    for size, row in rows:
        nodes, pools = (int(number(part)) for part in size.split(TIMES))
        summary, where = runs[(nodes, pools)], f"README ingest table, {size}, GC {policy}"
        if policy == "on":
            assert min_median(summary["ingest_vs_raw"]) == pair(row["ingest ÷ raw"]), where
        trials = summary[f"gc_freeze_{policy}"]
        for column, key in (("p50 ms", "p50_ms"), ("p99 ms", "p99_ms"), ("max ms", "max_ms")):
            assert min_median(trials[key]) == pair(row[column]), (where, column)
        gcs, longest = row["full GCs in the trials (longest ms)"].rstrip(")").split("(")
        assert trials["full_gcs"]["median"] == shown(gcs), where
        assert min_median(trials["full_gc_max_ms"]) == pair(longest), where


FORECAST = ["model", "diurnal-week small / medium: pinball %, coverage",
            "four weeks: pinball %, coverage", "CPU per forecast (median)", "100 pools",
            "install"]
MODELS = {"gearshift seasonal": "gearshift-seasonal",
          "statsforecast 2.1.1 MSTL+AutoETS": "statsforecast-mstl-autoets",
          "statsmodels 0.15.0 Holt-Winters": "statsmodels-holt-winters"}


def span(cell: str) -> list[Any]:
    """``"3.6-5.4 ms"`` or ``"1 256 ms"`` -> [low, high] as ``approx`` figures."""
    parts = cell.split("-") if "-" in cell else [cell, cell]
    return [shown(part.strip()) for part in parts]


def test_the_forecast_table_shows_bench_forecast() -> None:
    results = recorded("forecast.json")["results"]
    weeks = next(k for k in results if k.startswith("bench:four-weeks"))
    rows = table(FORECAST)
    assert [row["model"] for row in rows] == list(MODELS)
    for row in rows:
        model, where = MODELS[row["model"]], f"README forecast table, {row['model']}"
        small, medium, four = (results[k][model] for k in
                               ("diurnal-week:small", "diurnal-week:medium", weeks))
        pinball, coverage = row[FORECAST[1]].split(",")
        assert [small["pinball_rel_pct"], medium["pinball_rel_pct"]] == pair(pinball), where
        assert [small["coverage"], medium["coverage"]] == pair(coverage), where
        pinball, coverage = row[FORECAST[2]].split(",")
        assert four["pinball_rel_pct"] == shown(pinball), where
        assert four["coverage"] == shown(coverage), where
        every = (small, medium, four)
        cpu = [f["cpu_ms_median"] for f in every]
        assert [min(cpu), max(cpu)] == span(row[FORECAST[3]]), where
        pools = [f["cpu_s_per_100_pools"] for f in every]
        assert [min(pools), max(pools)] == span(row[FORECAST[4]]), where


def test_the_fleet_memory_table_shows_bench_fleet_memory() -> None:
    sizes = {s["nodes"]: s for s in recorded("ingest.json")["fleet_memory"]["sizes"]}
    now = {row[""]: row["now"] for row in table(["", "before", "now"])}
    ten, hundred = sizes[10_000], sizes[100_000]
    rss = next(k for k in now if k.startswith("RSS at 10 000 nodes"))
    assert f"(empty daemon {ten['empty_daemon_mb']['median']} MB)" in rss
    assert min_median(ten["rss_mb"]) == pair(now[rss])
    assert [ten["bytes_per_node"]["median"], hundred["bytes_per_node"]["median"]] \
        == pair(now["bytes per node at 10 000 / 100 000"])
    checks = ten["edge_check_ms"]
    quiet = next(k for k in now if k.startswith("edge check 31 s after the last"))
    assert min_median(checks["quiet_after_31s"]) == pair(now[quiet])
    assert checks["one_node_changed"]["median"] == shown(
        now["edge check after one node's facts changed"])
    reload = next(k for k in now if k.startswith("edge check after a policy reload"))
    assert min_median(checks["policy_reload"]) == pair(now[reload])


PREDICTIVE = ["run (seeds 1, 2, 3)", "unmet gear-seconds, reactive",
              "unmet gear-seconds, predictive", "cost, reactive", "cost, predictive",
              "predictive ÷ reactive cost",
              "cost ÷ clairvoyant bound, reactive / predictive",
              "reactive floor, gear-seconds"]


def test_the_predictive_table_shows_bench_predictive() -> None:
    scenarios = recorded("predictive.json")["scenarios"]
    rows = table(PREDICTIVE)
    assert len(rows) == len(scenarios) == 3
    for row, (name, runs) in zip(rows, scenarios.items(), strict=True):
        where = f"README predictive table, {row[PREDICTIVE[0]]}"
        assert row[PREDICTIVE[0]].split(":")[0].split("/")[-1] == name.split(" ")[0], where
        for mode in ("reactive", "predictive"):
            unmet = [shown(c.strip()) for c in row[f"unmet gear-seconds, {mode}"].split("/")]
            cost = [shown(c.strip()) for c in row[f"cost, {mode}"].split("/")]
            assert [r["unmet_gear_seconds"] for r in runs[mode]["runs"]] == unmet, where
            assert [r["cost"] for r in runs[mode]["runs"]] == cost, where
        assert runs["cost_ratio"] == shown(row[PREDICTIVE[5]]), where
        assert [runs["reactive"]["cost_over_bound"], runs["predictive"]["cost_over_bound"]] \
            == pair(row[PREDICTIVE[6]]), where
        assert runs["floor_unmet_gear_seconds"] == shown(row[PREDICTIVE[7]]), where


WARM = ["run (seeds 1, 2, 3)", "unmet gear-seconds, reactive+warm",
        "unmet gear-seconds, predictive+warm", "cost, reactive+warm", "cost, predictive+warm",
        "cost ÷ clairvoyant bound, reactive+warm / predictive+warm"]


def test_the_warm_pool_table_shows_bench_predictive() -> None:
    scenarios = recorded("predictive.json")["scenarios"]
    rows = table(WARM)
    assert len(rows) == len(scenarios) == 3
    for row, (name, runs) in zip(rows, scenarios.items(), strict=True):
        where = f"README warm pool table, {row[WARM[0]]}"
        assert row[WARM[0]].split(":")[0].split("/")[-1] == name.split(" ")[0], where
        for mode in ("reactive+warm", "predictive+warm"):
            unmet = [shown(c.strip()) for c in row[f"unmet gear-seconds, {mode}"].split("/")]
            cost = [shown(c.strip()) for c in row[f"cost, {mode}"].split("/")]
            assert [r["unmet_gear_seconds"] for r in runs[mode]["runs"]] == unmet, where
            assert [r["cost"] for r in runs[mode]["runs"]] == cost, where
        assert [runs["reactive+warm"]["cost_over_bound"],
                runs["predictive+warm"]["cost_over_bound"]] == pair(row[WARM[5]]), where
