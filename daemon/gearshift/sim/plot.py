"""``simulate --plot OUT.png``: demand against capacity per pool, and nodes by provider."""

from __future__ import annotations

from pathlib import Path

from gearshift.errors import ConfigError
from gearshift.sim.runner import Sample


def plot_timeline(samples: list[Sample], out: Path, *, title: str) -> None:
    try:
        import matplotlib  # noqa: PLC0415 - optional extra, imported only when plotting

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError as exc:
        raise ConfigError(["--plot needs matplotlib: pip install 'gearshift[sim]'"]) from exc
    pools = sorted({s.pool for s in samples})
    fig, axes = plt.subplots(len(pools), 2, figsize=(14, 3.5 * len(pools)), squeeze=False)
    for row, pool in enumerate(pools):
        mine = [s for s in samples if s.pool == pool]
        hours = [s.t / 3600 for s in mine]
        left, right = axes[row][0], axes[row][1]
        left.plot(hours, [s.demand for s in mine], label="demanded active gears", color="tab:red")
        left.step(hours, [s.capacity for s in mine], where="post",
                  label="capacity (active nodes)", color="tab:blue")
        left.set_title(f"pool {pool}: demand vs capacity")
        left.set_xlabel("hours")
        left.set_ylabel("active gears")
        left.legend(loc="upper left")
        providers = sorted({p for s in mine for p in s.nodes})
        right.stackplot(hours, [[s.nodes.get(p, 0) for s in mine] for p in providers],
                        labels=providers, step="post")
        right.set_title(f"pool {pool}: nodes by provider")
        right.set_xlabel("hours")
        right.set_ylabel("nodes")
        right.legend(loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
