"""Two densities, each always by its name: the "active density now" (active gears over
the active nodes' slots: what status, the page, the metric and the systemd line show) and
the "projected density (with booting nodes)" the planner acts on (every reason). A newcomer
once read "density 0.82 within [0.45, 0.80]" while nodes were booting."""

from __future__ import annotations

import re
import subprocess
import sys

from builders import booting, node, nodes, policy_set, pool, snapshot
from conftest import ROOT
from gearshift.client import render_status
from gearshift.daemon import fleet_summary
from gearshift.decide import plan
from gearshift.explain import plan_to_text
from gearshift.metrics import Metrics
from gearshift.model import Drain, ScaleOut

NOW = 1_800_000_000.0
# "density" with neither name before it, followed by a figure: what must never be shown
UNNAMED = re.compile(r"(?<!active )(?<!projected )density (?:now )?(?:n/a|\d)")


def _text(fleet, **kw) -> str:
    return plan_to_text(plan(snapshot(fleet, **kw), policy_set(pool()), now=NOW))


def test_active_above_the_band_while_nodes_boot_is_steady_and_says_which_density() -> None:
    """4 nodes at 49/60 (0.82 now) with 2 booting: projected 196/360 = 0.54, in the band."""
    text = _text(nodes(4, active=49), pending=(booting("b1"), booting("b2")))
    assert "2 booting, 0 draining, 0 unknown; active density now 0.82; desired 6" in text
    assert ("steady: projected density 0.54 within [0.45, 0.80] (with booting nodes; active "
            "density now 0.82)") in text
    assert not UNNAMED.search(text), text


def test_pressure_and_scale_out_reasons_name_the_projected_density() -> None:
    result = plan(snapshot(nodes(4, active=55)), policy_set(pool()), now=NOW)
    action = next(a for a in result.actions if isinstance(a, ScaleOut))
    assert "projected density 0.92 > 0.80 (with booting nodes)" in action.reason
    text = plan_to_text(result)
    assert "active density now 0.92" in text and not UNNAMED.search(text), text


def test_a_low_pool_that_must_wait_names_the_projected_density() -> None:
    """Low but within the stabilisation window: the note says which density is low."""
    fleet = [*nodes(3, active=10), node("n99", active=5)]
    text = _text(fleet)
    assert "projected density 0.15 < 0.45 (with booting nodes) but not shrinking:" in text
    assert "active density now 0.15" in text and not UNNAMED.search(text), text
    result = plan(snapshot(fleet), policy_set(pool()), now=NOW)
    assert not [a for a in result.actions if isinstance(a, Drain)]


def test_status_table_page_metric_and_systemd_line_say_active_density_now() -> None:
    result = plan(snapshot(nodes(2, active=30)), policy_set(pool()), now=NOW)
    assert fleet_summary(result) == "small 2+0 nodes, active density now 0.50"
    status = {"leader": True, "facts_fresh": True, "last_reconcile": None, "pools": {
        "small": {"nodes": {"active": 2, "booting": 1, "draining": 0, "unknown": 0},
                  "band": {"scale_down_below": 0.45, "target": 0.65, "scale_up_above": 0.8},
                  "active_density": 0.9, "desired_nodes": 3, "min": 2, "max": 12,
                  "degraded": False, "paused": False}}}
    lines = render_status(status, url="http://x").splitlines()
    assert lines[2].split()[8] == "ACTIVE-DENSITY"
    assert lines[4].startswith("ACTIVE-DENSITY: the active density now (active gears / active "
                               "nodes' slots); the planner acts on the projected density "
                               "(with booting nodes)")
    page = (ROOT / "daemon/gearshift/api/status.html").read_text()
    assert ">active density now</th>" in page and "projected density (with booting" in page
    help_text = Metrics().pool_active_density._documentation
    assert help_text.startswith("Active density now: ")
    assert "projected density, with booting nodes" in help_text


def test_one_active_density_figure_per_pool_even_with_requests_and_urgency() -> None:
    """The README's plan example: 305 active + 40 requested gears on 360 slots. Urgency
    weighs demand over the active slots (0.96), which is not the active density (0.85)."""
    result = subprocess.run(
        [sys.executable, "-m", "gearshift", "plan", "--config",
         "policies/examples/plan/config.yaml", "--snapshot", "policies/examples/plan/fleet.json"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=60)
    text = result.stdout
    assert set(re.findall(r"active density now (\d\.\d\d)", text)) == {"0.85"}, text
    assert "demand / active nodes' slots 0.96 >= 0.95" in text
    assert not UNNAMED.search(text), text
