"""Write the example demand traces under policies/examples/ (deterministic: fixed seeds).

    python bench/make_traces.py
    python bench/make_traces.py --large DIR   # the large fleet, into DIR (not committed)

flash-crowd: one pool, steady, then triples within three minutes, holds, decays.
diurnal-week: two pools over a week, weekday peaks at 14:00 UTC, quieter weekends,
sized for a fleet of about 200 nodes at peak.
large (``write_large``): 20 pools of the diurnal-week shape, peaks spread over the day,
about 2 000 nodes at peak; pools, providers and trace are written together, and
bench/simulate.py makes them in a temporary directory when it runs (nothing committed).
scenarios/urgent-week: a web pool that jumps each weekday at 09:00 (urgent: its nodes go
to the fast, dear vSphere) and a night batch pool on the shared rack that runs late on
Tuesdays and Thursdays (web spills to vSphere until the rack frees up at 11:00).
scenarios/monday-ramp: the diurnal-week pools over two weeks and a Monday, each weekday
ramping from night level to peak in 20 minutes at 08:00 (predictive scaling's case:
bench/predictive.py and bench/compare.py warm up on the two weeks, simulate the Monday).
scenarios/monday-onprem: the same weeks with a 10-minute ramp, for a fleet without cloud
(its fastest node takes 4 minutes: the one Monday where no reactive autoscaler can keep up).
"""

from __future__ import annotations

import csv
import math
import random
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "policies" / "examples"


def write(path: Path, rows: list[tuple[int, str, int]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["t", "pool", "active_gears"])
        writer.writerows(rows)
    print(f"{path}: {len(rows)} rows")


def flash_crowd() -> list[tuple[int, str, int]]:
    points = [(0, 400), (3600, 700), (3660, 1100), (3720, 1500), (3780, 1800),
              (7200, 1700), (8100, 1400), (9000, 1100), (10800, 700), (12600, 450),
              (21600, 450)]
    return [(t, "small", gears) for t, gears in points]


def diurnal_week() -> list[tuple[int, str, int]]:
    rng = random.Random(7)
    rows = []
    for t in range(0, 7 * 86400, 600):
        day, second = divmod(t, 86400)
        hour = second / 3600
        weekend = day >= 5  # the trace starts on a Monday
        shape = 0.5 - 0.5 * math.cos(2 * math.pi * (hour - 2) / 24)  # low at 02:00, high at 14:00
        scale = 0.6 if weekend else 1.0
        for pool, base, peak in (("small", 1800, 5000), ("medium", 500, 1400)):
            gears = base + (peak - base) * shape * scale
            rows.append((t, pool, max(0, int(gears * rng.uniform(0.97, 1.03)))))
    return rows


LARGE_POOLS = 20


def large_fleet(pools: int = LARGE_POOLS) -> list[tuple[int, str, int]]:
    """Demand of ``pools`` pools over a week: each pool a diurnal-week "small" pool
    (1400-3900 active gears, ~100 nodes at peak), scaled 0.8-1.2x, its peak shifted by up
    to 6 h (users in other time zones)."""
    rng = random.Random(11)
    shapes = [(f"p{i:02d}", rng.uniform(0.8, 1.2), rng.uniform(-3.0, 3.0)) for i in range(pools)]
    rows = []
    for t in range(0, 7 * 86400, 600):
        day, second = divmod(t, 86400)
        weekend = day >= 5  # the trace starts on a Monday
        for pool, scale, shift in shapes:
            hour = second / 3600 - shift
            shape = 0.5 - 0.5 * math.cos(2 * math.pi * (hour - 2) / 24)
            base, peak = 1400 * scale, 3900 * scale
            gears = base + (peak - base) * shape * (0.6 if weekend else 1.0)
            rows.append((t, pool, max(0, int(gears * rng.uniform(0.97, 1.03)))))
    return rows


LARGE_PROVIDERS = """apiVersion: gearshift/v1
kind: Providers
providers:
  - name: rack-a
    kind: redfish
    quota: {{max_nodes: 1200}}
    cost_per_hour: 0.02
    boot_time: 8m
    settings: {{machines: [{{bmc: "https://10.0.0.11", system: "/redfish/v1/Systems/1"}}]}}
    simulation: {{boot_jitter: 1m, failure_rate: 0.01}}
  - name: vsphere-dc1
    kind: vsphere
    quota: {{max_nodes: 1200}}
    cost_per_hour: 0.06
    boot_time: 3m
    settings: {{url: "https://vcenter.example/sdk", username_env: GS_VSPHERE_USER,
                password_file: /etc/gearshift/vsphere.pw}}
    simulation: {{boot_jitter: 30s, failure_rate: 0.02}}
  - name: ec2-east
    kind: ec2
    quota: {{max_nodes: 2000}}
    cost_per_hour: 0.19
    boot_time: 2m
    settings: {{region: us-east-1}}
    simulation: {{boot_jitter: 30s, failure_rate: 0.05}}
blueprints:
{blueprints}
"""

LARGE_POOL = """apiVersion: gearshift/v1
kind: Pool
name: {pool}
priority: 100
selector: {{node_profile: {pool}}}
size: {{min: 10, max: 150}}
density: {{scale_up_above: 0.80, scale_down_below: 0.50, target: 0.65}}
headroom_gears: 120
step: {{max_up: 10, max_down: 4}}
cooldown: {{up: 60s, down: 5m}}
stabilization: {{down: 15m}}
scale_in: {{strategy: fewest_gears, drain_timeout: 20m, max_concurrent_drains: 4}}
placement:
  - {{provider: rack-a, blueprint: {pool}-bm, max_nodes: 60}}
  - {{provider: vsphere-dc1, blueprint: {pool}-vmw, max_nodes: 60}}
  - {{provider: ec2-east, blueprint: {pool}-ec2, max_nodes: 100, burst_only: true}}
"""


def write_large(directory: Path, pools: int = LARGE_POOLS) -> None:
    """The large example: ``directory``/pools/*.yaml, providers.yaml and trace.csv."""
    (directory / "pools").mkdir(parents=True, exist_ok=True)
    names = [f"p{i:02d}" for i in range(pools)]
    blueprints = []
    for pool in names:
        (directory / "pools" / f"{pool}.yaml").write_text(LARGE_POOL.format(pool=pool))
        blueprints += [
            f"  - {{name: {pool}-bm, provider: rack-a, node_profile: {pool}, max_active_gears: 60}}",
            f"  - {{name: {pool}-vmw, provider: vsphere-dc1, node_profile: {pool}, "
            f"max_active_gears: 60, template: openshift-node-small}}",
            f"  - {{name: {pool}-ec2, provider: ec2-east, node_profile: {pool}, "
            f"max_active_gears: 60, image: ami-0abc, instance_type: m5.large}}"]
    (directory / "providers.yaml").write_text(
        LARGE_PROVIDERS.format(blueprints="\n".join(blueprints)))
    write(directory / "trace.csv", large_fleet(pools))


def urgent_week() -> list[tuple[int, str, int]]:
    rng = random.Random(13)
    rows = []
    for t in range(0, 7 * 86400, 1800):
        day, second = divmod(t, 86400)
        hour = second / 3600
        weekend = day >= 5  # the trace starts on a Monday
        if weekend:
            web = 800 if 11 <= hour < 20 else 300
        else:
            web = 1500 if 9 <= hour < 17 else 700 if 17 <= hour < 22 else 300
        late = day in (1, 3)  # Tuesday and Thursday: the night batch runs until 11:00
        batch = 700 if not weekend and (hour >= 20 or hour < (11 if late else 8)) else 40
        rows.append((t, "web", int(web * rng.uniform(0.97, 1.03))))
        rows.append((t, "batch", int(batch * rng.uniform(0.97, 1.03))))
    return rows


def monday_ramp(seed: int = 7, *, ramp_minutes: int = 20) -> list[tuple[int, str, int]]:
    """Two weeks and a Monday at 10-minute steps (the ramp at 1-minute steps): weekdays
    from 1 800 small gears at night to 5 000 from the end of the ramp (``ramp_minutes``
    from 08:00) to 17:00, back down by 19:00, weekends flat 2 000; medium at 0.28 of
    small."""
    rng = random.Random(seed)
    ramp_hours = ramp_minutes / 60
    rows = []
    for t in range(0, 15 * 86400, 60):
        day, second = divmod(t, 86400)
        hour = second / 3600
        if day % 7 >= 5:  # the trace starts on a Monday
            level = 2000.0
        elif 8 <= hour < 8 + ramp_hours:
            level = 1800 + 3200 * (hour - 8) / ramp_hours  # the ramp
        elif 8 + ramp_hours <= hour < 17:
            level = 5000.0
        elif 17 <= hour < 19:
            level = 5000 - 3200 * (hour - 17) / 2
        else:
            level = 1800.0
        ramp = 8 <= hour < 8.5 and day % 7 < 5
        if t % 600 == 0 or ramp:
            rows.append((t, "small", int(level * rng.uniform(0.98, 1.02))))
            rows.append((t, "medium", int(level * 0.28 * rng.uniform(0.98, 1.02))))
    return rows


if __name__ == "__main__":
    if sys.argv[1:2] == ["--large"] and len(sys.argv) == 3:
        write_large(Path(sys.argv[2]))
    else:
        write(EXAMPLES / "flash-crowd" / "trace.csv", flash_crowd())
        write(EXAMPLES / "diurnal-week" / "trace.csv", diurnal_week())
        write(EXAMPLES / "scenarios" / "urgent-week" / "trace.csv", urgent_week())
        write(EXAMPLES / "scenarios" / "monday-ramp" / "trace.csv", monday_ramp())
        write(EXAMPLES / "scenarios" / "monday-onprem" / "trace.csv",
              monday_ramp(ramp_minutes=10))
