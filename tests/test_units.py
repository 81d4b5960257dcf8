"""Small pure pieces: durations, cron parsing, the fleet model's trust rules."""

from __future__ import annotations

import pytest

from gearshift.durations import format_duration, parse_duration
from gearshift.model import GearCounts, NodeFacts, NodeState
from gearshift.observe.fleet import FleetModel
from gearshift.policy.cron import parse_cron


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("10m", 600), ("2h", 7200), ("1h30m", 5400), ("1d", 86400), ("1.5s", 1.5)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "m", "10 m", "1h 30m", "-5s", "5x"])
def test_bad_durations_say_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match=r"e\.g\. 90s, 10m, 2h"):
        parse_duration(text)


def test_format_duration_round_trips() -> None:
    for seconds in (45, 600, 5400, 90000):
        assert parse_duration(format_duration(seconds)) == seconds


def test_cron_fields() -> None:
    expr = parse_cron("*/15 8-18 * jan,JUL mon-fri")
    assert expr.minutes == {0, 15, 30, 45}
    assert expr.hours == set(range(8, 19))
    assert expr.months == {1, 7}
    assert expr.weekdays == {1, 2, 3, 4, 5}
    assert parse_cron("0 0 * * 7").weekdays == {0}


@pytest.mark.parametrize(("text", "words"), [
    ("0 8 * *", "5 fields"), ("60 * * * *", "minute"), ("* * 0 * *", "day of month"),
    ("* * * * mon-xyz", "not a number"), ("*/0 * * * *", "bad step"), ("5-1 * * * *", "minute"),
    ("0 8 * * MON-FRI-SAT", "'MON-FRI-SAT' is not a range: a range is FIRST-LAST")])
def test_cron_errors_name_the_field(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_cron(text)


def facts(identity: str = "n1", *, ts: float | None = 100.0, seq: int | None = 1,
          active: int = 10, max_gears: int = 60, bad: str | None = None) -> NodeFacts:
    return NodeFacts(identity=identity, node_profile="small", max_active_gears=max_gears,
                     gears=GearCounts(total=active, active=active), produced_at=ts, seq=seq,
                     bad_reason=bad)


def test_older_facts_never_overwrite_newer_ones() -> None:
    fleet = FleetModel(stale_after=60)
    assert fleet.ingest(facts(ts=100, seq=5, active=10), received_at=100)
    assert not fleet.ingest(facts(ts=99, seq=9, active=50), received_at=101)
    assert not fleet.ingest(facts(ts=100, seq=4, active=50), received_at=101)
    assert fleet.ingest(facts(ts=100, seq=5, active=11), received_at=101)
    assert fleet.ingest(facts(ts=101, seq=1, active=12), received_at=102)  # agent restarted
    assert fleet.facts("n1").gears.active == 12  # type: ignore[union-attr]


def test_trust_rules() -> None:
    fleet = FleetModel(stale_after=60)
    fleet.ingest(facts("fresh", ts=1000), received_at=1000)
    fleet.ingest(facts("stale", ts=900), received_at=1000)  # its own ts is 100s old
    fleet.ingest(facts("bad", ts=1000, max_gears=0, bad="max_active_gears is 0"), received_at=1000)
    fleet.ingest(facts("gone", ts=1000), received_at=1000)
    fleet.set_online("gone", False, at=1000)
    states = {n.identity: (n.state, n.why_unknown) for n in fleet.snapshot(1001).nodes}
    assert states["fresh"] == (NodeState.ACTIVE, None)
    assert states["stale"][0] is NodeState.UNKNOWN and "silent" in (states["stale"][1] or "")
    assert states["bad"][0] is NodeState.UNKNOWN and "max_active_gears is 0" in (states["bad"][1] or "")
    assert states["gone"] == (NodeState.UNKNOWN, "agent offline (last will)")
    fleet.ingest(facts("gone", ts=1002), received_at=1002)  # it came back
    assert {n.identity: n.state for n in fleet.snapshot(1003).nodes}["gone"] is NodeState.ACTIVE


def test_offline_before_any_facts_is_remembered() -> None:
    fleet = FleetModel(stale_after=60)
    fleet.set_online("n1", False, at=10)
    fleet.ingest(facts("n1", ts=5), received_at=10)  # retained facts arrive after the will
    assert fleet.snapshot(11).nodes[0].state is NodeState.UNKNOWN
