"""The world server's referee: what it counts and the report it answers with.

The crash, fault and HA tests assert on this report; here its figures are checked
against calls made on purpose, so a slip in the counting shows up in seconds rather
than as a mysterious bound in a slow end-to-end test.
"""

from __future__ import annotations

import copy

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from builders import PROVIDERS, policy_set, pool
from gearshift.act.providers.base import CreateRequest
from gearshift.act.providers.simulated import SimulatedWorldProvider
from gearshift.errors import NotFound
from gearshift.settings import MqttSettings
from gearshift.sim.referee import Score, busiest, report
from gearshift.sim.server import WorldServer
from gearshift.sim.world import SimWorld


@pytest.mark.parametrize(("times", "expected"), [
    ([], 0),
    ([5.0], 1),
    ([0.0, 10.0], 2),          # the window's ends count
    ([0.0, 10.5], 1),
    ([0.0, 1.0, 2.0, 30.0, 31.0], 3),
    ([0.0, 9.0, 11.0, 12.0, 19.5], 3),
    ([0.0, 9.5, 11.0, 12.0, 19.5], 4),
])
def test_the_busiest_window_counts_the_most_calls_within_ten_seconds(
        times: list[float], expected: int) -> None:
    assert busiest(times) == expected


def test_the_score_counts_each_call_with_its_time() -> None:
    score = Score()
    score.count("rack-a", "create", "ok", at=3.0)
    score.count("rack-a", "create", "ok", at=1.0)
    score.count("rack-a", "list", "injected_503", at=2.0)
    assert score.calls == {("rack-a", "create", "ok"): 2,
                           ("rack-a", "list", "injected_503"): 1}
    assert score.call_times == [3.0, 1.0, 2.0]


def test_the_report_counts_every_create_not_each_provider_once() -> None:
    score = Score()
    for at in (1.0, 2.0, 3.0):
        score.count("rack-a", "create", "ok", at=at)
    score.count("rack-b", "create", "ok", at=4.0)
    score.count("rack-b", "create", "injected_503", at=5.0)  # failed: not a create made
    score.count("rack-a", "destroy", "ok", at=6.0)
    assert report(score, SimWorld(), now=10.0)["creates"] == 4


async def test_the_report_counts_the_calls_made_over_http() -> None:
    providers = copy.deepcopy(PROVIDERS)
    providers["providers"][0]["simulation"] = {"boot_time": "0s"}
    policies = policy_set(pool(), providers=providers)
    assert policies.providers is not None
    blueprint = policies.providers.blueprint("small-bm")
    assert blueprint is not None
    world = WorldServer(policies, mqtt=MqttSettings())  # nothing published: no broker needed
    async with TestServer(world.app) as server:
        provider = SimulatedWorldProvider("rack-a", url=str(server.make_url("/")))
        try:
            for key in ("k1", "k2"):
                await provider.create(CreateRequest(key=key, name=f"n-{key}", pool="small",
                                                    blueprint=blueprint))
            owned = await provider.list_owned()
            await provider.destroy(next(m.machine_id for m in owned if m.key == "k1"))
            with pytest.raises(NotFound):
                await provider.stop("nope")
        finally:
            await provider.close()
        async with aiohttp.ClientSession() as session, \
                session.get(server.make_url("/v1/report")) as response:
            report = await response.json()
    calls = report["calls"]["rack-a"]
    assert calls["create:ok"] == 2 and calls["destroy:ok"] == 1
    assert calls["stop:not_found"] == 1
    assert report["machines_made"] == 2
    assert report["creates"] == 2
    assert report["destroyed"] == 1
    assert report["total_provider_calls"] == sum(calls.values())
    assert report["busiest_10s_provider_calls"] == sum(calls.values())  # all within seconds
    assert [n["key"] for n in report["nodes"]] == ["k2"]
    assert [r["identity"] for r in report["retired"]] == ["n-k1"]
    assert report["violations"]["foreign_touched"] == 0
    assert report["resurrected_keys"] == []
