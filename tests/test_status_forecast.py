"""Predictive scaling on the status page: ``/v1/status`` carries each predictive pool's
forecast (the upper quantile for now + time-to-ready and the nodes it orders or would
order) and nothing for a pool whose mode is off; the page draws it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from builders import policy_set, pool
from gearshift.api.server import ApiServer
from gearshift.api_models import iso_time
from gearshift.client import render_status
from gearshift.clock import ManualClock
from gearshift.decide.forecast_need import slowest_time_to_ready
from gearshift.forecast.result import Forecast
from test_reconciler import Rig

READY = 480.0  # rack-a, the pool's slowest placement in builders' providers (8m)


def flat(value: float, *, made_at: float) -> Forecast:
    return Forecast(pool="small", made_at=made_at, quantile=0.9, upper=(value,) * 30,
                    point=(value * 0.9,) * 30)


@asynccontextmanager
async def served(mode: str | None, *, forecast: float | None
                 ) -> AsyncIterator[tuple[TestClient, Rig]]:
    """A reconciler that has reconciled once with ``mode`` (None: no predictive block) and,
    when ``forecast`` is given, a flat forecast of that many gears."""
    clock = ManualClock()
    extra: dict[str, Any] = ({} if mode is None else
                             {"predictive": {"mode": mode, "max_extra_nodes": 20}})
    policies = policy_set(pool(**extra))
    rig = Rig(policies, demand=110, clock=clock)
    if forecast is not None:
        value = forecast
        forecasts: Callable[[], tuple[Forecast, ...]] = lambda: (  # noqa: E731
            flat(value, made_at=clock.now()),)
        rig.reconciler.forecasts = forecasts
    await rig.seed()
    await rig.reconciler.reconcile_once()
    api = ApiServer(rig.reconciler, rig.metrics, token="t" * 20, max_body=1024)
    async with TestClient(TestServer(api.app)) as client:
        yield client, rig


async def status(client: TestClient) -> dict[str, Any]:
    response = await client.get("/v1/status")
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return body


def validate(body: dict[str, Any]) -> None:
    import jsonschema  # type: ignore[import-untyped]  # no stubs installed

    from gearshift.api.openapi import openapi_document

    components = openapi_document(pools=["small"], max_body=1024)["components"]
    jsonschema.Draft202012Validator(
        {"$ref": "#/components/schemas/Status", "components": components}).validate(body)


def test_the_pools_slowest_placement_is_what_the_forecast_is_read_at() -> None:
    assert slowest_time_to_ready(pool(), policy_set(pool()).providers, {}) == READY  # type: ignore[arg-type]


async def test_a_pool_with_predictive_off_shows_no_forecast() -> None:
    for mode in (None, "off"):
        async with served(mode, forecast=390) as (client, _):
            body = await status(client)
            assert "forecast" not in body["pools"]["small"]
            assert list(body["pools"]["small"]) == [
                "nodes", "active_density", "desired_nodes", "degraded", "paused", "min",
                "max", "band", "summary"]
            validate(body)


async def test_forecast_only_shows_the_forecast_and_what_it_would_order() -> None:
    async with served("forecast_only", forecast=390) as (client, rig):
        body = await status(client)
        now = rig.clock.now()
        shown = body["pools"]["small"]["forecast"]
        # 390 gears at 0.65: 600 slots, 10 nodes of 60; 3 (2 active, 1 booting) are there.
        assert shown == {"mode": "forecast_only", "quantile": 0.9,
                         "at": iso_time(now + READY), "gears": 390, "extra_nodes": 7}
        assert "forecast_only: would order 7 nodes 8m ahead" in body["pools"]["small"]["summary"]
        # It only says so: the one decision is the reactive scale-out by one node.
        (decision,) = body["decisions"]
        assert decision["count"] == 1 and "forecast" not in decision["reason"]
        validate(body)
    async with served(None, forecast=None) as (client, _):
        off = await status(client)
    assert [(d["kind"], d["count"], d["provider"]) for d in off["decisions"]] == [
        (d["kind"], d["count"], d["provider"]) for d in body["decisions"]]


async def test_on_shows_the_forecast_it_orders_on() -> None:
    async with served("on", forecast=390) as (client, rig):
        body = await status(client)
        shown = body["pools"]["small"]["forecast"]
        # The forecast asked for 8 nodes beyond the 2 there; step.max_up let 5 go now, so
        # with them booting it still wants 3 more (10 nodes of 60 slots at 0.65 for 390).
        ordered = sum(d["count"] for d in body["decisions"] if d["kind"] == "scale_out")
        assert ordered == 5
        assert all("forecast p90 390 gears at 08:08; ordering 8 nodes 8m ahead" in d["reason"]
                   for d in body["decisions"])
        assert shown == {"mode": "on", "quantile": 0.9, "at": iso_time(rig.clock.now() + READY),
                         "gears": 390, "extra_nodes": 3}
        validate(body)


async def test_a_predictive_pool_without_a_forecast_yet_says_so() -> None:
    async with served("forecast_only", forecast=None) as (client, _):
        body = await status(client)
        assert body["pools"]["small"]["forecast"] == {
            "mode": "forecast_only", "quantile": 0.9, "at": None, "gears": None,
            "extra_nodes": 0}
        assert "no forecast yet" in body["pools"]["small"]["summary"]
        validate(body)
        page = await (await client.get("/")).text()
        assert "forecast(p.forecast)" in page and "would order" in page


async def test_gearshift_status_prints_each_predictive_pools_forecast() -> None:
    async with served("forecast_only", forecast=390) as (client, _):
        text = render_status(await status(client), url="http://x")
    table = text[text.index("POOL   PREDICTIVE"):].splitlines()
    assert table[0].split() == ["POOL", "PREDICTIVE", "FORECAST", "NODES", "AHEAD"]
    assert table[1].split() == ["small", "forecast_only", "p90", "390", "gears", "at", "08:08",
                                "UTC", "would", "order", "7", "nodes"]
    async with served(None, forecast=390) as (client, _):
        assert "PREDICTIVE" not in render_status(await status(client), url="http://x")
