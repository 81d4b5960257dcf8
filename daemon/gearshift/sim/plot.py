"""``simulate --plot OUT.png``: the picture an SRE pastes into a capacity review.

One figure: a title that sums the run up (scenario, seed, cost, unmet demand, peak nodes,
violations), the fleet's total on top, then every pool. Each demand panel shades the unmet
demand (demand above the active nodes' capacity), so a ten-minute shortfall reads as an
area, not a vertical step; each provider keeps one colour in every panel and in the one
legend. A pool with predictive scaling (``forecast_only`` or ``on``) also gets its forecast
band: for each instant, what the forecast made one time-to-ready earlier said (central to
upper quantile), the forecast the planner orders on, against the demand that came; so a
``forecast_only`` run shows whether the forecast is worth turning on. The figure's size is
bounded: from one pool to forty, pools are laid out as small multiples in more columns and
shorter rows instead of a page-long strip.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gearshift.errors import ConfigError
from gearshift.sim.runner import Sample

WIDTH_IN = 16.0  # inches at DPI: 1600 px wide
MAX_HEIGHT_IN = 24.0  # never taller than 2400 px, whatever the number of pools
DPI = 100
DEMAND, CAPACITY, UNMET, FORECAST = "#222222", "#1f77b4", "#d62728", "#ff7f0e"
FORECAST_LABEL = "forecast one time-to-ready ahead (central to upper quantile)"


@dataclass(frozen=True)
class PlotSummary:
    """What the title says: which run this is and how it went."""

    scenario: str
    seed: int
    cost: float
    unmet_gear_seconds: float
    peak_nodes: int = 0
    violations: int = 0

    @classmethod
    def from_report(cls, report: Mapping[str, Any], *, scenario: str, seed: int) -> PlotSummary:
        violations = report.get("violations", {})
        return cls(scenario=scenario, seed=seed, cost=float(report.get("cost", 0.0)),
                   unmet_gear_seconds=float(report.get("unmet_gear_seconds", 0.0)),
                   peak_nodes=sum(report.get("max_nodes", {}).values()),
                   violations=sum(violations.values()) if isinstance(violations, dict) else 0)

    def title(self) -> str:
        return (f"gearshift simulate: {self.scenario} (seed {self.seed}) | cost "
                f"{self.cost:.2f} | unmet {self.unmet_gear_seconds / 3600:,.1f} gear-hours "
                f"({self.unmet_gear_seconds:,.0f} gear-s) | peak nodes {self.peak_nodes} | "
                f"violations {self.violations}")


def provider_colours(providers: Sequence[str]) -> dict[str, str]:
    """One fixed colour per provider, in the providers file's order.

    Dark2 (8 colours, none of them the demand's black, the capacity's blue or the unmet
    red); more providers than that take tab20b's.
    """
    from matplotlib import colormaps  # noqa: PLC0415

    cmap = colormaps["Dark2" if len(providers) <= 8 else "tab20b"]
    return {name: _hex(cmap(i % cmap.N)) for i, name in enumerate(providers)}


def _hex(rgba: tuple[float, float, float, float]) -> str:
    return "#" + "".join(f"{round(c * 255):02x}" for c in rgba[:3])


@dataclass(frozen=True)
class _Series:
    hours: list[float]
    demand: list[int]
    capacity: list[int]
    nodes: dict[str, list[int]]
    # (hour it is for, central, upper): each sample's forecast moved to the instant it is
    # for, within the run; empty when the pool had none (predictive off).
    forecast: tuple[tuple[float, float, float], ...] = ()


def _series(samples: Sequence[Sample], providers: Sequence[str]) -> _Series:
    end = max((s.t for s in samples), default=0.0)
    band = tuple(((s.t + s.forecast_lead) / 3600, *s.forecast) for s in samples
                 if s.forecast is not None and s.t + s.forecast_lead <= end)
    return _Series(hours=[s.t / 3600 for s in samples], demand=[s.demand for s in samples],
                   capacity=[s.capacity for s in samples],
                   nodes={p: [s.nodes.get(p, 0) for s in samples] for p in providers},
                   forecast=band)


def _fleet(samples: Sequence[Sample], providers: Sequence[str]) -> _Series:
    """Every pool added up, at each sample time."""
    times = sorted({s.t for s in samples})
    index = {t: i for i, t in enumerate(times)}
    demand, capacity = [0] * len(times), [0] * len(times)
    nodes = {p: [0] * len(times) for p in providers}
    for s in samples:
        i = index[s.t]
        demand[i] += s.demand
        capacity[i] += s.capacity
        for p, n in s.nodes.items():
            if p in nodes:
                nodes[p][i] += n
    return _Series(hours=[t / 3600 for t in times], demand=demand, capacity=capacity,
                   nodes=nodes)


def _demand_panel(ax: Any, series: _Series, *, title: str, small: bool) -> None:
    if series.forecast:  # under the demand line, so the demand reads against it
        hours, central, upper = zip(*series.forecast, strict=True)
        ax.fill_between(hours, central, upper, color=FORECAST, alpha=0.3, linewidth=0,
                        label=FORECAST_LABEL, gid="forecast")
        ax.plot(hours, upper, color=FORECAST, linewidth=0.8, gid="forecast-upper")
    ax.step(series.hours, series.demand, where="post", color=DEMAND, linewidth=1.2,
            label="demanded active gears")
    ax.step(series.hours, series.capacity, where="post", color=CAPACITY, linewidth=1.2,
            label="capacity (active nodes)")
    short = [d > c for d, c in zip(series.demand, series.capacity, strict=True)]
    ax.fill_between(series.hours, series.capacity, series.demand, where=short, step="post",
                    color=UNMET, alpha=0.35, linewidth=0, label="unmet demand", gid="unmet")
    ax.set_title(title, fontsize=8 if small else 10, loc="left")
    ax.set_ylim(bottom=0)
    ax.margins(x=0)
    ax.tick_params(labelsize=7 if small else 9)
    if not small:
        ax.set_ylabel("active gears")


def _nodes_panel(ax: Any, series: _Series, colours: Mapping[str, str], *, title: str,
                 small: bool) -> None:
    names = [p for p in colours if any(series.nodes.get(p, []))]
    if names:
        stacks = ax.stackplot(series.hours, [series.nodes[p] for p in names], step="post",
                              colors=[colours[p] for p in names], labels=names, linewidth=0)
        for name, stack in zip(names, stacks, strict=True):
            stack.set_gid(f"provider:{name}")
    ax.set_ylim(bottom=0)
    ax.margins(x=0)
    ax.tick_params(labelsize=7 if small else 9)
    if title:
        ax.set_title(title, fontsize=8 if small else 10, loc="left")
    if not small:
        ax.set_ylabel("nodes")


def _layout(pools: int) -> tuple[int, float]:
    """Columns of pool cells, and each cell's height in inches (demand + nodes strip)."""
    columns = 1 if pools <= 4 else 2 if pools <= 8 else 3 if pools <= 18 else 4 if pools <= 32 else 5
    rows = math.ceil(pools / columns)
    # header (title, legend, fleet total) ~5 in; the rest shared by the rows, 3.2 in at most
    return columns, min(3.2, (MAX_HEIGHT_IN - 5.0) / rows)


def build_figure(samples: Sequence[Sample], *, summary: PlotSummary,
                 providers: Sequence[str]) -> Any:
    """The figure (matplotlib's, Agg backend), not yet saved: tests inspect it."""
    try:
        import matplotlib  # noqa: PLC0415 - optional extra, imported only when plotting

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
        from matplotlib.patches import Patch  # noqa: PLC0415
    except ImportError as exc:
        raise ConfigError(["--plot needs matplotlib: pip install 'gearshift[sim]'"]) from exc
    seen = {p for s in samples for p in s.nodes}
    providers = [*providers, *sorted(seen - set(providers))]
    colours = provider_colours(providers)
    pools = sorted({s.pool for s in samples})
    columns, cell = _layout(len(pools))
    rows = math.ceil(len(pools) / columns)
    # one pool is the whole fleet: its panels are the fleet total, drawn once
    fleet_rows = 0.0 if len(pools) == 1 else 3.4
    height = min(MAX_HEIGHT_IN, 1.0 + fleet_rows + rows * cell + 0.5)
    fig = plt.figure(figsize=(WIDTH_IN, height), dpi=DPI)
    top, bottom = 1 - 1.0 / height, 0.5 / height  # title and legend above, hours below
    small = len(pools) > 4
    if fleet_rows:
        heights = [fleet_rows - 0.9, rows * cell]  # inches; hspace is relative to their mean
        outer = fig.add_gridspec(2, 1, height_ratios=heights, top=top, bottom=bottom,
                                 left=0.06, right=0.99, hspace=0.9 / (sum(heights) / 2))
        fleet = outer[0].subgridspec(1, 2, wspace=0.12)
        total = _fleet(samples, providers)
        _demand_panel(fig.add_subplot(fleet[0]), total, small=False,
                      title=f"fleet total ({len(pools)} pools): demand vs capacity")
        _nodes_panel(fig.add_subplot(fleet[1]), total, colours, small=False,
                     title=f"fleet total ({len(pools)} pools): nodes by provider")
        area = outer[1]
    else:
        area = fig.add_gridspec(1, 1, top=top, bottom=bottom, left=0.06, right=0.99)[0]
    grid = area.subgridspec(rows, columns, hspace=0.55 if small else 0.45, wspace=0.18)
    whole = " (the whole fleet)" if len(pools) == 1 else ""
    for i, pool in enumerate(pools):
        mine = _series([s for s in samples if s.pool == pool], providers)
        if small:  # one cell: demand above, a thin nodes strip below sharing the hours
            inner = grid[i // columns, i % columns].subgridspec(2, 1, height_ratios=[3, 1],
                                                                hspace=0.08)
            demand_ax = fig.add_subplot(inner[0])
            nodes_ax = fig.add_subplot(inner[1], sharex=demand_ax)
            demand_ax.tick_params(labelbottom=False)
            _demand_panel(demand_ax, mine, title=f"pool {pool}", small=True)
            _nodes_panel(nodes_ax, mine, colours, title="", small=True)
        else:
            pair = grid[i, 0].subgridspec(1, 2, wspace=0.12)
            demand_ax = fig.add_subplot(pair[0])
            _demand_panel(demand_ax, mine, small=False,
                          title=f"pool {pool}{whole}: demand vs capacity")
            nodes_ax = fig.add_subplot(pair[1])
            _nodes_panel(nodes_ax, mine, colours, small=False,
                         title=f"pool {pool}{whole}: nodes by provider")
            demand_ax.set_xlabel("hours", fontsize=9)
        if i // columns == rows - 1 or i + columns >= len(pools):
            nodes_ax.set_xlabel("hours", fontsize=8 if small else 9)
    handles = [Patch(color=DEMAND, label="demanded active gears"),
               Patch(color=CAPACITY, label="capacity (active nodes)"),
               Patch(color=UNMET, alpha=0.35, label="unmet demand"),
               *([Patch(color=FORECAST, alpha=0.3, label=FORECAST_LABEL)]
                 if any(s.forecast is not None for s in samples) else []),
               *(Patch(color=colours[p], label=f"nodes on {p}") for p in providers)]
    fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 7), fontsize=9,
               frameon=False, bbox_to_anchor=(0.5, 1 - 0.38 / height))
    fig.suptitle(summary.title(), fontsize=11, y=1 - 0.08 / height, va="top")
    return fig


def plot_timeline(samples: Sequence[Sample], out: Path, *, summary: PlotSummary,
                  providers: Sequence[str]) -> None:
    """Write the figure to ``out`` (PNG); ``providers`` in the providers file's order."""
    import matplotlib.pyplot as plt  # noqa: PLC0415 - build_figure said if it is missing

    fig = build_figure(samples, summary=summary, providers=providers)
    try:
        fig.savefig(out, dpi=DPI)
    finally:
        plt.close(fig)
