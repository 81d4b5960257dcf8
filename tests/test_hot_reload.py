"""Hot reload: edited policy files take effect, bad edits are refused with FILE:LINE:COL.

Against a live daemon (tests/sim_daemon.py -> ``daemon.serve``) watching its policy
directory, plus the watcher's settle logic on its own.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

from gearshift.policy.watch import PolicyWatcher
from live import start_daemon


def metric(text: str, sample: str) -> float:
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    assert match, f"{sample} not in the exposition"
    return float(match.group(1))


def test_edits_reload_and_bad_edits_keep_the_last_good_policies(
        tmp_path: Path, mosquitto: tuple[str, int]) -> None:
    daemon = start_daemon(tmp_path / "d", mosquitto, demand=60)
    try:
        daemon.wait_ready()
        policy = daemon.policies / "small.yaml"
        assert daemon.json("/v1/status")["pools"]["small"]["max"] == 12
        original = policy.read_text()

        # A good edit, picked up by the watcher alone (no signal).
        policy.write_text(original.replace("size: {min: 2, max: 12}", "size: {min: 2, max: 14}"))
        daemon.wait_until("max 14 in force",
                          lambda: daemon.json("/v1/status")["pools"]["small"]["max"] == 14)
        text = daemon.get("/metrics")[1].decode()
        assert metric(text, 'gearshift_policy_reloads_total{outcome="ok"}') == 1
        assert metric(text, 'gearshift_policy_reloads_total{outcome="refused"}') == 0

        # A bad edit: refused, the error points at the value, max 14 stays in force.
        bad = original.replace("size: {min: 2, max: 12}", "size: {min: 2, max: lots}")
        policy.write_text(bad)
        errors = daemon.wait_until("policy_errors",
                                   lambda: daemon.json("/v1/status")["policy_errors"])
        line = next(i for i, text in enumerate(bad.splitlines(), 1) if "lots" in text)
        column = bad.splitlines()[line - 1].index("lots") + 1
        assert len(errors) == 1
        assert errors[0].startswith(f"{policy}:{line}:{column}: "), errors
        assert "max" in errors[0]
        status = daemon.json("/v1/status")
        assert status["pools"]["small"]["max"] == 14
        text = daemon.get("/metrics")[1].decode()
        assert metric(text, 'gearshift_policy_reloads_total{outcome="refused"}') == 1
        assert metric(text, "gearshift_policy_errors") == 1
        refused = [e for e in daemon.log_lines() if e.get("event", "").startswith(
            "policy reload refused")]
        assert refused and refused[-1]["problems"] == errors
        assert refused[-1]["level"] == "error"

        # SIGHUP re-reads too: still bad, refused again.
        daemon.process.send_signal(signal.SIGHUP)
        daemon.wait_until("a second refusal", lambda: metric(
            daemon.get("/metrics")[1].decode(),
            'gearshift_policy_reloads_total{outcome="refused"}') == 2)

        # The fix clears the errors.
        policy.write_text(original)
        daemon.wait_until("errors cleared",
                          lambda: not daemon.json("/v1/status")["policy_errors"])
        assert daemon.json("/v1/status")["pools"]["small"]["max"] == 12
        text = daemon.get("/metrics")[1].decode()
        assert metric(text, 'gearshift_policy_reloads_total{outcome="ok"}') == 2
        assert metric(text, "gearshift_policy_errors") == 0
    finally:
        assert daemon.stop() == 0


def test_watcher_waits_for_a_settled_edit_and_ignores_editor_droppings(tmp_path: Path) -> None:
    (tmp_path / "small.yaml").write_text("a: 1\n")
    calls: list[int] = []
    watcher = PolicyWatcher([tmp_path], on_change=lambda: calls.append(1))
    assert not watcher.poll()  # nothing changed
    (tmp_path / "small.yaml").write_text("a: 22\n")
    assert not watcher.poll()  # changed just now: maybe half-written, wait one poll
    assert watcher.poll() and calls == [1]  # settled: reload once
    assert not watcher.poll() and calls == [1]
    for dropping in (".small.yaml.swp", "#small.yaml#", "small.yaml~", "notes.txt"):
        (tmp_path / dropping).write_text("x")
    assert not watcher.poll() and not watcher.poll()
    (tmp_path / "medium.yml").write_text("b: 1\n")  # a new file counts
    watcher.poll()
    assert watcher.poll() and calls == [1, 1]
    (tmp_path / "medium.yml").unlink()  # so does a removed one
    watcher.poll()
    assert watcher.poll() and len(calls) == 3
    # Same size and content, new mtime (touch): still a change (the loader would re-read).
    stat = (tmp_path / "small.yaml").stat()
    os.utime(tmp_path / "small.yaml", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    watcher.poll()
    assert watcher.poll() and len(calls) == 4
    # A SIGHUP reload already read the files: the watcher must not reload them again.
    (tmp_path / "small.yaml").write_text("a: 333\n")
    watcher.mark_loaded()
    assert not watcher.poll() and not watcher.poll() and len(calls) == 4
