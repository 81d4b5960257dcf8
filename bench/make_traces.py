"""Write the example demand traces under policies/examples/ (deterministic: fixed seeds).

    python bench/make_traces.py

flash-crowd: one pool, steady, then triples within three minutes, holds, decays.
diurnal-week: two pools over a week, weekday peaks at 14:00 UTC, quieter weekends,
sized for a fleet of about 200 nodes at peak.
scenarios/urgent-week: a web pool that jumps each weekday at 09:00 (urgent: its nodes go
to the fast, dear vSphere) and a night batch pool on the shared rack that runs late on
Tuesdays and Thursdays (web spills to vSphere until the rack frees up at 11:00).
"""

from __future__ import annotations

import csv
import math
import random
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


if __name__ == "__main__":
    write(EXAMPLES / "flash-crowd" / "trace.csv", flash_crowd())
    write(EXAMPLES / "diurnal-week" / "trace.csv", diurnal_week())
    write(EXAMPLES / "scenarios" / "urgent-week" / "trace.csv", urgent_week())
