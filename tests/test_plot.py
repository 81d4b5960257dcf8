"""`simulate --plot`: one picture from one pool to forty, bounded in size, with the unmet
demand shaded, a fleet total, one colour per provider in every panel and a title that says
which run it was and how it went."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from matplotlib.image import imread

from gearshift.sim.plot import MAX_HEIGHT_IN, PlotSummary, build_figure, plot_timeline
from gearshift.sim.runner import Sample

PROVIDERS = ["rack-a", "vsphere-dc1", "ec2-east"]
SUMMARY = PlotSummary(scenario="flash-crowd", seed=1, cost=5.69, unmet_gear_seconds=475_200,
                      peak_nodes=38, violations=0)


def samples(pools: int, *, hours: float = 7.0, step: float = 300.0) -> list[Sample]:
    """Each pool: demand jumps at 1 h, capacity follows 20 min later (a shortfall)."""
    out = []
    for p in range(pools):
        t = 0.0
        while t <= hours * 3600:
            spike = 3600 <= t < 3 * 3600
            demand = 400 + 60 * p + (1400 if spike else 0)
            capacity = 660 + 60 * p + (1600 if 4800 <= t < 3.5 * 3600 else 0)
            nodes = {"rack-a": 11 + p % 3, "vsphere-dc1": 19 if 4800 <= t < 3.5 * 3600 else 0}
            if p % 7 == 3:
                nodes["ec2-east"] = 2
            out.append(Sample(t=t, pool=f"pool-{p:02d}", demand=demand, capacity=capacity,
                              nodes=nodes))
            t += step
    return out


def _keep(fig_path: Path) -> None:
    """GEARSHIFT_PLOT_DIR=/some/dir keeps the PNGs to look at."""
    keep = os.environ.get("GEARSHIFT_PLOT_DIR")
    if keep:
        Path(keep, fig_path.name).write_bytes(fig_path.read_bytes())


@pytest.mark.parametrize("pools", [1, 5, pytest.param(40, marks=pytest.mark.slow)])  # 40: ~10 s
def test_bounded_png_with_title_legend_and_panels_apart_from_one_pool_to_forty(
        tmp_path: Path, pools: int) -> None:
    fig = build_figure(samples(pools), summary=SUMMARY, providers=PROVIDERS)
    renderer = fig.canvas.get_renderer()
    fig.canvas.draw()
    title = fig._suptitle.get_window_extent(renderer)
    legend = fig.legends[0].get_window_extent(renderer)
    assert title.y0 >= legend.y1 - 1, (title, legend)  # the title sits above the legend
    for ax in fig.axes:
        box = ax.get_tightbbox(renderer)
        assert box.y1 <= legend.y0 + 1, (ax.get_title(), box, legend)  # all panels below it
        assert box.y0 >= 0 and box.x0 >= 0 and box.x1 <= fig.bbox.x1 + 1, ax.get_title()
    out = tmp_path / f"plot-{pools}.png"
    fig.savefig(out, dpi=100)
    _keep(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, _ = imread(out).shape
    assert width == 1600
    assert 400 <= height <= MAX_HEIGHT_IN * 100, height  # 20 pools once made 1400x7000 px


def test_plot_timeline_writes_the_png(tmp_path: Path) -> None:
    out = tmp_path / "plot.png"
    plot_timeline(samples(2), out, summary=SUMMARY, providers=PROVIDERS)
    assert imread(out).shape[1] == 1600


def test_one_colour_per_provider_everywhere_unmet_shaded_and_a_fleet_total() -> None:
    fig = build_figure(samples(12), summary=SUMMARY, providers=PROVIDERS)
    colours: dict[str, set[tuple[float, ...]]] = {}
    unmet_panels = 0
    for ax in fig.axes:
        for collection in ax.collections:
            gid = collection.get_gid() or ""
            if gid.startswith("provider:"):
                colours.setdefault(gid, set()).add(tuple(collection.get_facecolor()[0][:3]))
            unmet_panels += gid == "unmet" and len(collection.get_paths()) > 0
    assert set(colours) == {f"provider:{p}" for p in PROVIDERS}
    assert all(len(c) == 1 for c in colours.values()), colours  # same colour in every panel
    assert len({next(iter(c)) for c in colours.values()}) == 3  # and distinct providers
    legend = {t.get_text() for t in fig.legends[0].get_texts()}
    assert {"unmet demand", "nodes on rack-a", "nodes on ec2-east"} <= legend
    assert unmet_panels == 12 + 1  # every pool and the fleet total shade their shortfall
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert "fleet total (12 pools): demand vs capacity" in titles
    assert fig._suptitle.get_text() == (
        "gearshift simulate: flash-crowd (seed 1) | cost 5.69 | unmet 132.0 gear-hours "
        "(475,200 gear-s) | peak nodes 38 | violations 0")


def test_the_fleet_total_adds_the_pools_up() -> None:
    fig = build_figure(samples(3), summary=SUMMARY, providers=PROVIDERS)
    fleet = next(ax for ax in fig.axes if ax.get_title(loc="left").startswith("fleet total")
                 and "demand" in ax.get_title(loc="left"))
    demand_line = fleet.get_lines()[0]
    assert max(demand_line.get_ydata()) == sum(400 + 60 * p + 1400 for p in range(3))


def test_a_predictive_pool_draws_its_forecast_band_where_it_was_for() -> None:
    """Each sample's forecast (made one time-to-ready ahead) is drawn at the instant it is
    for, against the demand that came; pools without a forecast get no band."""
    plain = samples(2)
    lead = 600.0
    forecast = [Sample(t=s.t, pool=s.pool, demand=s.demand, capacity=s.capacity, nodes=s.nodes,
                       forecast=(1000.0 + s.t / 60, 1200.0 + s.t / 60), forecast_lead=lead)
                if s.pool == "pool-01" else s for s in plain]
    fig = build_figure(forecast, summary=SUMMARY, providers=PROVIDERS)
    demand_panels = {ax.get_title(loc="left"): ax for ax in fig.axes
                     if "demand" in ax.get_title(loc="left")}
    banded = {title for title, ax in demand_panels.items()
              if any(c.get_gid() == "forecast" and len(c.get_paths()) > 0
                     for c in ax.collections)}
    assert banded == {"pool pool-01: demand vs capacity"}
    ax = demand_panels["pool pool-01: demand vs capacity"]
    (upper,) = [line for line in ax.get_lines() if line.get_gid() == "forecast-upper"]
    made = [s.t for s in plain if s.pool == "pool-01" and s.t + lead <= 7 * 3600]
    assert list(upper.get_xdata()) == [(t + lead) / 3600 for t in made]  # moved by the lead
    assert list(upper.get_ydata()) == [1200.0 + t / 60 for t in made]
    (band,) = [c for c in ax.collections if c.get_gid() == "forecast"]
    ys = band.get_paths()[0].vertices[:, 1]
    assert min(ys) == 1000.0 and max(ys) == 1200.0 + made[-1] / 60  # central to upper
    legend = {t.get_text() for t in fig.legends[0].get_texts()}
    assert "forecast one time-to-ready ahead (central to upper quantile)" in legend
    # Without a forecast anywhere: no band, no legend entry.
    fig = build_figure(plain, summary=SUMMARY, providers=PROVIDERS)
    assert not any(c.get_gid() == "forecast" for ax in fig.axes for c in ax.collections)
    assert not any("forecast" in t.get_text() for t in fig.legends[0].get_texts())
