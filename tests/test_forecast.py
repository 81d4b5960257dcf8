"""The seasonal model: it sees the daily and weekly shape, follows the recent level, and
bad history (gaps, a one-off spike, a holiday) does not make it over-provision."""

from __future__ import annotations

import math

import pytest

from gearshift.forecast.result import Forecast
from gearshift.forecast.seasonal import SeasonalModel, quantile
from gearshift.forecast.series import DAY, WEEK, DemandSeries

MODEL = SeasonalModel()


def demand(minute: int) -> int:
    """Weekdays peak at 14:00 (5 000 gears), nights 1 800, weekends 60 % of the swing."""
    day, of_day = divmod(minute, DAY)
    shape = 0.5 - 0.5 * math.cos(2 * math.pi * (of_day / 60 - 2) / 24)
    scale = 0.6 if day % 7 >= 5 else 1.0
    return int(1800 + 3200 * shape * scale)


def history(minutes: int, *, shape: object = demand) -> DemandSeries:
    assert callable(shape)
    return DemandSeries(0, (shape(m) for m in range(minutes)))


def forecast_at(series: DemandSeries, minute: int, *, horizon: int = 15,
                q: float = 0.9) -> Forecast:
    made = MODEL.forecast(series, pool="small", now=minute * 60.0, horizon_minutes=horizon, q=q)
    assert made is not None
    return made


def test_quantile_interpolates_between_order_statistics() -> None:
    assert quantile([1, 2, 3, 4, 5], 0.5) == 3
    assert quantile([0, 10], 0.9) == pytest.approx(9)
    assert quantile([], 0.9) == 0.0


def test_too_little_history_gives_no_forecast() -> None:
    assert MODEL.forecast(history(DAY + 100), pool="small", now=(DAY + 100) * 60.0,
                          horizon_minutes=15, q=0.9) is None


def test_weekly_history_forecasts_the_monday_morning_ramp_ahead_of_it() -> None:
    now = 3 * WEEK + 7 * 60  # a Monday, 07:00, three weeks of history
    made = forecast_at(history(now), now, horizon=30)
    actual = demand(now + 30)
    assert actual > demand(now) + 150  # it is a ramp: last value would be far short
    assert made.upper[-1] >= actual  # the upper quantile covers it ...
    assert made.upper[-1] <= actual * 1.05  # ... without padding it much
    assert made.point[-1] == pytest.approx(actual, rel=0.02)


def test_daily_seasonality_is_used_before_two_weeks_are_known() -> None:
    now = 3 * DAY + 8 * 60  # Thursday 08:00, three days known
    made = forecast_at(history(now), now, horizon=20)
    assert made.point[-1] == pytest.approx(demand(now + 20), rel=0.02)


def test_the_recent_level_lifts_the_forecast_when_this_week_is_busier() -> None:
    now = 3 * WEEK + 10 * 60
    busier = DemandSeries(0, (demand(m) + (400 if m >= 3 * WEEK else 0) for m in range(now)))
    made = forecast_at(busier, now)
    assert made.point[-1] == pytest.approx(demand(now + 15) + 400, rel=0.02)


def test_gaps_are_skipped_not_read_as_zero_demand() -> None:
    now = 3 * WEEK + 9 * 60
    series = history(now)
    for m in range(2 * WEEK, 2 * WEEK + DAY):  # a whole day missing, a week before
        series.values[m] = -1
    for m in range(now - 10, now):  # and the last ten minutes (a failover)
        series.values[m] = -1
    made = forecast_at(series, now)
    assert made.point[-1] == pytest.approx(demand(now + 15), rel=0.02)


def test_a_one_off_spike_last_week_does_not_raise_next_weeks_forecast() -> None:
    now = 3 * WEEK + 14 * 60
    spiked = DemandSeries(0, (demand(m) * (4 if 2 * WEEK + 13 * 60 <= m < 2 * WEEK + 15 * 60
                                          else 1) for m in range(now)))
    clean = forecast_at(history(now), now)
    made = forecast_at(spiked, now)
    assert made.upper[-1] <= clean.upper[-1] * 1.02  # nothing of the x4 spike remains


def test_a_spike_in_the_last_minutes_is_not_carried_forward() -> None:
    now = 3 * WEEK + 14 * 60
    series = history(now)
    for m in range(now - 5, now):
        series.values[m] = demand(m) * 3
    made = forecast_at(series, now)
    assert made.point[-1] <= demand(now + 15) * 1.02


def test_a_holiday_a_week_ago_does_not_lower_the_forecast_nor_widen_it_for_weeks() -> None:
    now = 3 * WEEK + 11 * 60  # Monday 11:00; last Monday was a holiday (night all day)
    holiday = DemandSeries(0, (1800 if 2 * WEEK <= m < 2 * WEEK + DAY else demand(m)
                               for m in range(now)))
    made = forecast_at(holiday, now)
    clean = forecast_at(history(now), now)
    assert made.point[-1] == pytest.approx(clean.point[-1], rel=0.01)
    assert made.upper[-1] <= clean.upper[-1] * 1.02


def test_on_the_holiday_itself_the_level_follows_demand_down() -> None:
    now = 3 * WEEK + 11 * 60  # today is the holiday: demand stayed at night level
    series = DemandSeries(0, (1800 if m >= 3 * WEEK else demand(m) for m in range(now)))
    made = forecast_at(series, now)
    assert made.point[-1] < demand(now + 15) * 0.6  # not the usual Monday


def test_the_upper_band_covers_noise_at_its_quantile() -> None:
    import random
    rng = random.Random(3)
    noisy = DemandSeries(0, (int(demand(m) * rng.uniform(0.95, 1.05)) for m in range(4 * WEEK)))
    covered = total = 0
    for now in range(3 * WEEK + 6 * 60, 3 * WEEK + 20 * 60, 37):
        made = MODEL.forecast(noisy, pool="small", now=now * 60.0, horizon_minutes=15, q=0.9)
        assert made is not None
        actual = noisy.at(now + 15)
        assert actual is not None
        covered += actual <= made.upper[-1]
        total += 1
    assert 0.8 <= covered / total <= 1.0


def test_forecast_lookups_clamp_to_the_minutes_it_covers() -> None:
    made = Forecast(pool="p", made_at=600.0, quantile=0.9, upper=(10.0, 20.0, 30.0),
                    point=(9.0, 19.0, 29.0))
    assert made.horizon == 180
    assert made.upper_at(600 + 60) == 10
    assert made.upper_at(600 + 61) == 20
    assert made.upper_at(600 + 1e6) == 30
    assert made.peak(600, 600 + 120) == 20
    assert made.peak(600, 600 + 999) == 30
    assert made.point_at(600 + 61) == 19


def test_series_keeps_the_larger_figure_and_drops_old_minutes() -> None:
    series = DemandSeries.from_buckets([(10, 5), (12, 7), (10, 9)])
    assert (series.start, series.at(10), series.at(11), series.at(12)) == (10, 9, None, 7)
    series.put(8, 3)
    assert series.start == 8 and series.at(8) == 3 and series.known() == 3
    series.drop_before(11)
    assert series.start == 11 and series.at(10) is None and series.at(12) == 7
    assert series.known() == 1
