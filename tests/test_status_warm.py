"""Warm pools on the status page: ``/v1/status`` counts each pool's parked machines (being
made to park, stopping or stopped) apart from its capacity; the page and ``gearshift status``
show them."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from builders import policy_set, pool
from gearshift.api.server import ApiServer
from gearshift.client import render_status
from gearshift.clock import ManualClock
from test_reconciler import Rig
from test_status_forecast import status, validate

WARM_RACK = [{"provider": "rack-a", "blueprint": "small-bm", "max_nodes": 20,
              "warm": {"min": 2, "max": 3}},
             {"provider": "vsphere-dc1", "blueprint": "small-vmw", "max_nodes": 30}]


async def status_after(reconciles: int, **overrides: Any) -> tuple[dict[str, Any], str, str]:
    """/v1/status, the page and ``gearshift status`` after ``reconciles`` reconciles of a
    calm pool (demand 40 gears on its 2 nodes)."""
    clock = ManualClock()
    rig = Rig(policy_set(pool(**overrides)), demand=40, clock=clock)
    await rig.seed()
    for _ in range(reconciles):
        await rig.reconciler.reconcile_once()
        await clock.advance(30)
        rig.publish()
    api = ApiServer(rig.reconciler, rig.metrics, token="t" * 20, max_body=1024)
    async with TestClient(TestServer(api.app)) as client:
        body = await status(client)
        page = await (await client.get("/")).text()
    return body, page, render_status(body, url="http://x")


def pool_row(text: str) -> list[str]:
    table = text[text.index("POOL "):].splitlines()
    assert table[0].split()[:7] == ["POOL", "ACTIVE", "BOOTING", "DRAINING", "UNKNOWN",
                                    "PARKED", "DESIRED"]
    return table[1].split()


async def test_machines_made_for_a_warm_pool_show_as_parked_not_as_capacity() -> None:
    body, page, text = await status_after(3, placement=WARM_RACK)
    nodes = body["pools"]["small"]["nodes"]
    # the 2 machines made for the warm pool (min 2): parked, not booting, not active
    assert nodes == {"active": 2, "booting": 0, "draining": 0, "unknown": 0, "parked": 2}
    validate(body)
    assert pool_row(text)[:6] == ["small", "2", "0", "0", "0", "2"]
    assert "p.nodes.parked" in page and ">parked</th>" in page


async def test_a_pool_without_a_warm_pool_shows_none_parked() -> None:
    body, _, text = await status_after(3)
    assert body["pools"]["small"]["nodes"]["parked"] == 0
    assert pool_row(text)[5] == "0"


async def test_the_untrusted_table_has_one_heading_per_cell() -> None:
    _, page, _ = await status_after(1)
    table = page[page.index('<table id="untrusted">'):]
    assert table[:table.index("</tr>")].count("<th>") == 3  # node, state, why
