"""Two ``gearshift run`` sharing a real PostgreSQL: one leads, the other follows and takes over.

The lease settings are the defaults (10 s lease, renewed every 2 s, followers try every
1 s), so the failover bound checked here is the one operators get: within 15 s of the
leader's death. A leader frozen with SIGSTOP until the other took over is the deposed
leader whose late writes the fencing token must refuse; when it wakes it must step
down and never act again while the other leads.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from conftest import need
from gearshift.sim.broker import start_mosquitto
from pgpeer import PASSWORD, PgServer
from worldrig import Daemon, DaemonConfig, World, metric, owned_world_nodes, tear_down

FAILOVER_BOUND = 15.0


def _wait_leader(daemon: Daemon, *, timeout: float) -> float | None:
    """Seconds until ``daemon`` says it leads (None if it never did)."""
    started = time.monotonic()
    status = daemon.wait_status(lambda s: s["leader"] is True, timeout=timeout, poll=0.05)
    return time.monotonic() - started if status is not None else None


def _journal(postgres: PgServer, database: str, sql: str) -> str:
    return postgres.psql(sql, database).strip()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_one_leader_acts_the_follower_takes_over_within_15s_and_a_deposed_leader_steps_down(
        tmp_path: Path, postgres: PgServer) -> None:
    need("mosquitto")
    database = f"ha_{uuid.uuid4().hex[:10]}"
    dsn_file = tmp_path / "journal.dsn"
    dsn_file.write_text(postgres.create_database(database) + "\n")
    dsn_file.chmod(0o600)
    broker, port = start_mosquitto(tmp_path)
    world = World(tmp_path, mqtt_port=port, seed=7)
    journal = {"kind": "postgres", "dsn_file": str(dsn_file)}
    a = Daemon(tmp_path, world, DaemonConfig(mqtt_port=port, journal=journal, name="a"))
    b = Daemon(tmp_path, world, DaemonConfig(mqtt_port=port, journal=journal, name="b"))
    figures: dict[str, object] = {}
    try:
        world.demand(70)
        a.start()
        assert _wait_leader(a, timeout=30) is not None, a.log_text()[-3000:]
        b.start()
        follower = b.wait_status(lambda s: s["leader"] is False
                                 and s["pools"]["small"]["summary"] != "not evaluated yet",
                                 timeout=30)
        assert follower is not None, b.log_text()[-3000:]
        # The leader acts; the follower only reads.
        deadline = time.monotonic() + 40
        while len(owned_world_nodes(world.report())) < 4 and time.monotonic() < deadline:
            time.sleep(0.25)
        assert len(owned_world_nodes(world.report())) >= 4
        assert metric(a.metrics(), "gearshift_leader") == 1
        leading = a.status()
        assert leading is not None and leading["leadership"]["journal"] == "postgres"
        assert leading["recoveries"]["performed"] >= 1
        assert set(leading["operations"]) == {"create", "drain"}
        assert metric(b.metrics(), "gearshift_leader") == 0
        assert not metric(b.metrics(), "gearshift_actions_total")
        assert not metric(b.metrics(), "gearshift_provider_calls_total")
        # ... and its read-only status follows the fleet.
        assert b.wait_status(lambda s: s["pools"]["small"]["nodes"]["active"] >= 4,
                             timeout=20) is not None

        # The leader dies: the follower takes over within 15 s and acts.
        a.kill()
        failover = _wait_leader(b, timeout=30)
        assert failover is not None, b.log_text()[-3000:]
        figures["failover_seconds_after_sigkill"] = round(failover, 2)
        assert failover <= FAILOVER_BOUND
        before = world.report()["machines_made"]
        world.demand(150)
        deadline = time.monotonic() + 40
        while world.report()["machines_made"] <= before and time.monotonic() < deadline:
            time.sleep(0.25)
        assert world.report()["machines_made"] > before  # the new leader acts

        # The old leader comes back as a follower.
        a.start()
        assert a.wait_status(lambda s: s["leader"] is False, timeout=30) is not None

        # The leader freezes (GC pause, frozen VM) long enough to lose its lease.
        b.pause()
        frozen_at = time.monotonic()
        took_over = _wait_leader(a, timeout=30)
        assert took_over is not None, a.log_text()[-3000:]
        figures["takeover_seconds_after_sigstop"] = round(time.monotonic() - frozen_at, 2)
        world.demand(40)  # give the frozen leader something it would like to do
        time.sleep(1.0)
        b.resume()
        deposed = b.wait_status(lambda s: s["leader"] is False, timeout=15)
        assert deposed is not None, b.log_text()[-3000:]
        # From now on exactly one leader, and it is a.
        for _ in range(10):
            assert a.status()["leader"] is True  # type: ignore[index]
            assert b.status()["leader"] is False  # type: ignore[index]
            time.sleep(0.3)
        b_metrics = b.metrics()
        figures["deposed_leader_fenced_writes"] = metric(b_metrics,
                                                         "gearshift_journal_fenced_writes_total")
        assert (metric(b_metrics, "gearshift_leader_changes_total") or 0) >= 2  # up, then down
        assert "stepping down" in b.log_text()

        # Converge, stop both gracefully.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            open_ops = _journal(postgres, database,
                                "SELECT count(*) FROM gearshift_operations WHERE NOT done")
            if open_ops == "0":
                break
            time.sleep(0.5)
        assert open_ops == "0"
        assert a.stop() == 0 and b.stop() == 0
        report = world.report()
    finally:
        tear_down(a, b, world=world, broker=broker)

    machines = set(filter(None, _journal(postgres, database,
                                         "SELECT identity FROM gearshift_machines").split("\n")))
    figures["violations"] = report["violations"]
    figures["machines_made"] = report["machines_made"]
    figures["lease_token"] = _journal(postgres, database, "SELECT token FROM gearshift_lease")
    print(json.dumps(figures, indent=2))
    assert report["violations"]["duplicate_creates"] == 0
    assert report["violations"]["retired_with_active_gears"] == 0
    assert set(owned_world_nodes(report)) == machines  # nothing leaked across the failovers
    assert int(figures["lease_token"]) >= 3  # type: ignore[call-overload]
    # The DSN's password is a secret: never in a log, status or metrics.
    for daemon in (a, b):
        assert PASSWORD not in daemon.log_text()
