"""Predictive scaling in the pure planner: what a forecast asks of a pool, table by table,
and that ``forecast_only`` changes no action while ``on`` orders ahead and holds scale-in."""

from __future__ import annotations

from dataclasses import replace

import pytest
from pydantic import ValidationError

from builders import node, nodes, policy_set, pool, snapshot
from gearshift.decide import plan
from gearshift.decide.forecast_need import Ahead, ahead, slowest_time_to_ready
from gearshift.forecast.result import Forecast
from gearshift.model import Drain, Node, ProviderStatus, ScaleOut
from gearshift.plan import Plan, PlannerState, PoolMemory

NOW = 1_800_000_000.0  # 2027-01-15 08:00 UTC
READY = 480.0  # the pool's slowest placement (rack-a, 8m)


def flat(value: float, *, minutes: int = 30, made_at: float = NOW) -> Forecast:
    return Forecast(pool="small", made_at=made_at, quantile=0.9, upper=(value,) * minutes,
                    point=(value * 0.9,) * minutes)


def predictive(mode: str, **extra: object) -> dict[str, object]:
    return {"mode": mode, "horizon": "30m", **extra}


# Four nodes of 60 slots with 30 active gears each: capacity 240, reactive want 185 slots.
@pytest.mark.parametrize(
    ("case", "spec", "forecast", "expected"),
    [
        ("off: nothing, even with a forecast", predictive("off"), flat(390), Ahead()),
        ("no forecast yet", predictive("on"), None,
         Ahead(note="predictive on: no forecast yet (history shorter than 2d or too sparse)")),
        ("a stale forecast is not used", predictive("on"), flat(390, made_at=NOW - 601),
         Ahead(note="predictive on: forecast from 10m1s ago is stale: not used")),
        # 390 gears at 08:08 -> ceil(390 / 0.65) = 600 slots -> (600 - 240) / 60 = 6 nodes.
        ("on: orders ahead of the forecast", predictive("on"), flat(390),
         Ahead(acting=True, gears=390, want_gears=600, hold_gears=488, extra_nodes=6,
               up="forecast p90 390 gears at 08:08; ordering 6 nodes 8m ahead")),
        # 1 450 gears want 2 231 slots; at most 185 + 10 x 60 = 785 -> ceil(545 / 60) = 10.
        ("on: at most max_extra_nodes beyond the reactive need", predictive("on"), flat(1450),
         Ahead(acting=True, gears=1450, want_gears=785, hold_gears=785, extra_nodes=10,
               up="forecast p90 1 450 gears at 08:08; ordering 10 nodes 8m ahead "
                  "(capped: max_extra_nodes 10)")),
        ("max_extra_nodes 0: the forecast adds nothing", predictive("on", max_extra_nodes=0),
         flat(1450),
         Ahead(acting=True, gears=1450, want_gears=185, hold_gears=185,
               note="predictive on: forecast p90 1 450 gears at 08:08: no extra nodes (peak "
                    "1 450 gears within 30m)")),
        # 100 gears on 240 slots: 0.42, below scale_up_above (0.80): nothing to order ahead.
        ("on: the forecast would not make the pool grow", predictive("on"), flat(100),
         Ahead(acting=True, gears=100, want_gears=0, hold_gears=125,
               note="predictive on: forecast p90 100 gears at 08:08: no extra nodes (peak "
                    "100 gears within 30m)")),
        # 190 gears on 240 slots: 0.79, on the edge but not above it: nothing either.
        ("on: the forecast stays inside the band", predictive("on"), flat(190),
         Ahead(acting=True, gears=190, want_gears=0, hold_gears=238,
               note="predictive on: forecast p90 190 gears at 08:08: no extra nodes (peak "
                    "190 gears within 30m)")),
        # 200 gears: 0.83 > 0.80, so the reactive rule would want ceil(200 / 0.65) = 308.
        ("on: the forecast crosses the band's edge", predictive("on"), flat(200),
         Ahead(acting=True, gears=200, want_gears=308, hold_gears=250, extra_nodes=2,
               up="forecast p90 200 gears at 08:08; ordering 2 nodes 8m ahead")),
        ("forecast_only: says what it would order, does not act", predictive("forecast_only"),
         flat(390),
         Ahead(gears=390, want_gears=600, hold_gears=488, extra_nodes=6,
               note="forecast_only: would order 6 nodes 8m ahead: forecast p90 390 gears at "
                    "08:08")),
        # Now + 8m reads minute 8 (100 gears); the peak at minute 20 holds scale-in:
        # 400 gears stay below the band's edge on ceil(400 / 0.80) = 500 slots.
        ("the peak within the horizon holds scale-in", predictive("on"),
         Forecast(pool="small", made_at=NOW, quantile=0.9, upper=(100.0,) * 20 + (400.0,) * 10,
                  point=(90.0,) * 30),
         Ahead(acting=True, gears=100, want_gears=0, hold_gears=500,
               note="predictive on: forecast p90 100 gears at 08:08: no extra nodes (peak "
                    "400 gears within 30m)")),
    ],
)
def test_what_a_forecast_asks(case: str, spec: dict[str, object], forecast: Forecast | None,
                              expected: Ahead) -> None:
    policy = pool(predictive=spec)
    got = ahead(policy, forecast, now=NOW, ready_in=READY, want_gears=185, capacity=240,
                per_node=60)
    assert got == expected, case


def test_time_to_ready_is_the_slowest_placements_measured_when_known() -> None:
    providers = policy_set(pool()).providers
    assert providers is not None
    assert slowest_time_to_ready(pool(), providers, {}) == 480
    measured = {"rack-a": ProviderStatus(name="rack-a", boot_time=300.0),
                "ec2-east": ProviderStatus(name="ec2-east", boot_time=700.0)}
    assert slowest_time_to_ready(pool(), providers, measured) == 700


def _plan(mode: str, fleet: list[Node], forecast: Forecast | None, *,
          memory: PoolMemory | None = None) -> Plan:
    policy = pool(predictive=predictive(mode), step={"max_up": 10, "max_down": 2})
    snap = snapshot(fleet, forecasts=(forecast,) if forecast else ())
    state = PlannerState(pools={"small": memory}) if memory else None
    return plan(snap, policy_set(policy), now=NOW, state=state)


def test_on_orders_the_nodes_the_forecast_needs_with_the_reason() -> None:
    fleet = nodes(4, active=30)
    assert _plan("off", fleet, flat(390)).actions == ()  # density 0.5: nothing reactive
    made = _plan("on", fleet, flat(390))
    outs = [a for a in made.actions if isinstance(a, ScaleOut)]
    assert sum(a.count for a in outs) == 6
    assert "forecast p90 390 gears at 08:08; ordering 6 nodes 8m ahead" in outs[0].reason
    assert made.pools["small"].desired_nodes == 10
    assert (made.pools["small"].forecast_gears, made.pools["small"].forecast_extra_nodes) == (
        390, 6)


def test_forecast_only_changes_no_action_and_says_what_it_would_do() -> None:
    for fleet in (nodes(4, active=30), nodes(4, active=55), nodes(10, active=10)):
        memory = PoolMemory(low_since=NOW - 3600)
        off = _plan("off", fleet, flat(390), memory=memory)
        only = _plan("forecast_only", fleet, flat(390), memory=memory)
        assert only.actions == off.actions
        assert only.state == off.state
        assert replace(only.pools["small"], summary="", forecast_gears=None, forecast_at=None,
                       forecast_extra_nodes=0) == replace(off.pools["small"], summary="")
    shown = _plan("forecast_only", nodes(4, active=30), flat(390)).pools["small"]
    assert "forecast_only: would order 6 nodes 8m ahead" in shown.summary
    assert (shown.forecast_gears, shown.forecast_extra_nodes) == (390, 6)
    assert shown.forecast_at == NOW + READY  # the instant the forecast is read for


def test_scale_in_never_goes_below_what_the_forecast_needs_within_the_horizon() -> None:
    fleet = nodes(10, active=10)  # 100 gears on 600 slots, low for an hour
    memory = PoolMemory(low_since=NOW - 3600)
    rising = Forecast(pool="small", made_at=NOW, quantile=0.9,
                      upper=(100.0,) * 20 + (400.0,) * 10, point=(90.0,) * 30)
    off = [a for a in _plan("off", fleet, rising, memory=memory).actions if isinstance(a, Drain)]
    on = _plan("on", fleet, rising, memory=memory)
    drained = [a for a in on.actions if isinstance(a, Drain)]
    assert len(off) == 2  # step.max_down
    assert len(drained) == 1  # 540 slots left >= 500 the peak needs; a second would leave 480
    assert not any(isinstance(a, ScaleOut) for a in on.actions)


def test_another_pools_forecast_is_not_this_pools() -> None:
    fleet = [node("n1", active=30), node("n2", active=30)]
    other = replace(flat(390), pool="medium")
    assert _plan("on", fleet, other).actions == _plan("off", fleet, None).actions


@pytest.mark.parametrize(("block", "error"), [
    ({"mode": "maybe"}, "mode"),
    ({"mode": "on", "quantile": 1.0}, "quantile"),
    ({"mode": "on", "max_extra_nodes": -1}, "max_extra_nodes"),
    ({"mode": "on", "horizon": "soon"}, "horizon"),
    ({"mode": "on", "lookahead": "30m"}, "lookahead"),
])
def test_a_bad_predictive_block_is_a_clear_error(block: dict[str, object], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        pool(predictive=block)


@pytest.mark.parametrize(("text", "mode"), [
    ("{mode: on}", "on"), ("{mode: off}", "off"), ("{mode: 'on'}", "on"),
    ("{mode: forecast_only}", "forecast_only")])
def test_a_bare_on_or_off_in_yaml_is_the_mode_not_a_bool(text: str, mode: str) -> None:
    from gearshift.safeyaml import safe_load

    assert pool(predictive=safe_load(text)).predictive.mode == mode
    with pytest.raises(ValidationError, match="mode"):
        pool(predictive={"mode": 1})


def test_predictive_is_off_unless_asked() -> None:
    spec = pool().predictive
    assert (spec.mode, spec.horizon, spec.quantile, spec.max_extra_nodes, spec.min_history) == (
        "off", 1800, 0.9, 10, 2 * 86400)
