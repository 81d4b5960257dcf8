"""YAML from operators is read with bounds: alias bombs, huge files and node floods are
refused with FILE:LINE:COL, cheaply, and the daemon parses reloads off its event loop.

Issue 11, finding 4: a 390-byte "billion laughs" file made ``gearshift validate`` grow to
2.5 GB, and dropped into the policies folder it blocked the daemon's loop and killed it.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import ROOT
from gearshift import safeyaml
from gearshift.errors import ConfigError
from gearshift.policy import holder as holder_module
from gearshift.policy.holder import PolicyHolder
from gearshift.policy.loader import load_policy_set, validate_paths
from gearshift.settings import load_settings
from live import start_daemon

# Billion laughs: nine levels of nine aliases each, 9^9 "lol"s once expanded.
BOMB = "apiVersion: gearshift/v1\nkind: Pool\nname: bomb\n" + "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{c}: &{c} [{','.join([f'*{p}'] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi",
                                                                   strict=True)]) + "\n"


def test_the_bomb_is_a_real_one() -> None:
    assert len(BOMB.encode()) < 400
    # PyYAML's own loader composes it and would expand it: a hundred-odd nodes stand for
    # 9^9 values (the expansion itself is what costs gigabytes, so it is not run here).
    loader = yaml.SafeLoader(BOMB)
    node = loader.get_single_node()
    assert node is not None and node.value[-1][1].value[0] is node.value[-2][1]


def test_validate_refuses_an_alias_bomb_at_its_alias_quickly_and_small(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    # A process of its own measures only the validate it runs (maxrss of its children).
    probe = (
        "import json, resource, subprocess, sys\n"
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=60)\n"
        "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "print(json.dumps([done.returncode, done.stdout, done.stderr, rss]))\n")
    out = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "gearshift",
                          "validate", str(bomb)], capture_output=True, text=True, check=True,
                         timeout=120)
    code, stdout, stderr, rss_kib = json.loads(out.stdout)
    assert code == 1, (stdout, stderr)
    line = next(i for i, text in enumerate(BOMB.splitlines(), 1) if text.startswith("h:"))
    assert re.fullmatch(rf"{re.escape(str(bomb))}:\d+:\d+: aliases would expand to more "
                        r"than 10000 nodes \(an alias bomb\?\): refused\n", stdout), stdout
    assert int(stdout.split(":")[1]) <= line  # refused at an alias, before the last level
    assert rss_kib < 100 * 1024, f"validate peaked at {rss_kib} KiB"


def test_aliases_that_stay_small_are_fine_and_merge_keys_still_work(tmp_path: Path) -> None:
    text = (ROOT / "policies" / "small.yaml").read_text()
    text = text.replace("cooldown: {up: 60s, down: 10m}",
                        "cooldown: &cool {up: 60s, down: 10m}\nx-copy: *cool")
    assert "x-copy" in text
    # x-copy is an unknown key: the alias expanded, and the error is still pinned to it
    (tmp_path / "small.yaml").write_text(text)
    shutil.copy(ROOT / "policies" / "providers.yaml", tmp_path / "providers.yaml")
    problems = validate_paths([tmp_path])
    assert len(problems) == 1 and "unknown key 'x-copy'" in problems[0]
    assert safeyaml.safe_load("base: &b {a: 1}\nmine: {<<: *b, c: 2}") == {
        "base": {"a": 1}, "mine": {"a": 1, "c": 2}}


def test_recursive_alias_is_refused_with_its_position(tmp_path: Path) -> None:
    file = tmp_path / "loop.yaml"
    file.write_text("apiVersion: gearshift/v1\nkind: Pool\nname: &n [1, *n]\n")
    assert validate_paths([file]) == [
        f"{file}:3:14: alias *n refers to the node that contains it (a recursive alias)"]


def test_files_over_the_size_limit_are_refused_unread(tmp_path: Path) -> None:
    file = tmp_path / "huge.yaml"
    with file.open("w") as out:  # 2 MiB of comment: valid YAML, just too big
        out.write("apiVersion: gearshift/v1\n")
        for _ in range(2048):
            out.write("#" + "x" * 1022 + "\n")
    assert validate_paths([file]) == [
        f"{file}:1:1: file is larger than {safeyaml.MAX_YAML_BYTES} bytes: refused unread"]
    with pytest.raises(ConfigError) as refused:
        load_policy_set([file], max_bytes=100)
    assert refused.value.problems == [f"{file}:1:1: file is larger than 100 bytes: refused unread"]


def test_a_flood_of_small_nodes_is_refused_where_it_crosses_the_limit(tmp_path: Path) -> None:
    file = tmp_path / "flood.yaml"
    file.write_text("apiVersion: gearshift/v1\nkind: Pool\nx: [" + "1," * 60_000 + "1]\n")
    problems = validate_paths([file])
    assert len(problems) == 1
    assert re.fullmatch(rf"{re.escape(str(file))}:3:\d+: more than 50000 values, lists and "
                        r"mappings \(aliases expanded\): refused", problems[0]), problems


def test_settings_file_is_read_with_the_same_bounds(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(BOMB.replace("apiVersion: gearshift/v1\nkind: Pool\nname: bomb\n", ""))
    with pytest.raises(ConfigError) as refused:
        load_settings(config)
    [problem] = refused.value.problems
    assert re.fullmatch(rf"{re.escape(str(config))}:\d+:\d+: aliases would expand to more "
                        r"than 10000 nodes \(an alias bomb\?\): refused", problem), problem
    config.write_text("log: {level: debug}\n" + "#" * safeyaml.MAX_YAML_BYTES)
    with pytest.raises(ConfigError) as refused:
        load_settings(config)
    assert refused.value.problems == [
        f"{config}:1:1: file is larger than {safeyaml.MAX_YAML_BYTES} bytes: refused unread"]
    config.write_text("log: {level: debug\n")
    with pytest.raises(ConfigError) as refused:
        load_settings(config)
    assert refused.value.problems[0].startswith(f"{config}:2:1: not valid YAML: ")
    config.write_text("mqtt: &m {host: broker.example}\nprometheus: {url: http://x}\n"
                      "log: {level: debug}\n")
    assert load_settings(config).log.level == "debug"  # plain files still load


async def test_reload_async_parses_in_a_worker_thread(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(ROOT / "policies" / "small.yaml", tmp_path / "small.yaml")
    shutil.copy(ROOT / "policies" / "providers.yaml", tmp_path / "providers.yaml")
    holder = PolicyHolder([tmp_path])
    loop_ran = threading.Event()
    seen: dict[str, Any] = {}
    real = holder_module.load_policy_set  # type: ignore[attr-defined]  # patched where holder looks

    def slow_load(*args: Any, **kwargs: Any) -> Any:
        seen["thread"] = threading.current_thread()
        # Only the event loop can set this; on the loop's own thread it never would be.
        seen["loop_ran"] = loop_ran.wait(10)
        return real(*args, **kwargs)

    async def beat() -> None:
        await asyncio.sleep(0.05)
        loop_ran.set()

    monkeypatch.setattr(holder_module, "load_policy_set", slow_load)
    ok, _ = await asyncio.gather(holder.reload_async(), beat())
    assert ok is True
    assert seen["thread"] is not threading.main_thread()
    assert seen["loop_ran"] is True


@pytest.mark.slow
def test_daemon_refuses_a_bomb_dropped_in_and_keeps_serving(
        tmp_path: Path, mosquitto: tuple[str, int]) -> None:
    daemon = start_daemon(tmp_path / "d", mosquitto, demand=60)
    try:
        daemon.wait_ready()
        assert daemon.json("/v1/status")["pools"]["small"]["max"] == 12
        bomb = daemon.policies / "bomb.yaml"
        # and a big (under the limits) file beside it, so the parse takes a while
        flood = daemon.policies / "flood.yaml"
        flood.write_text("apiVersion: gearshift/v1\nkind: Pool\nx: [" + "1," * 40_000 + "1]\n")
        bomb.write_text(BOMB)
        answered: list[int] = []
        url = daemon.url + "/healthz"

        def healthy() -> bool:
            with urllib.request.urlopen(url, timeout=5) as response:
                answered.append(response.status)
                assert json.loads(response.read())["alive"] is True
            return False

        def refused() -> list[str]:
            healthy()
            errors: list[str] = daemon.json("/v1/status")["policy_errors"]
            return errors if any(e.startswith(f"{bomb}:") for e in errors) else []

        errors = daemon.wait_until("the bomb refused", refused, timeout=60)
        assert any(e.startswith(f"{bomb}:") and "alias bomb" in e for e in errors), errors
        assert answered and set(answered) == {200}
        status = daemon.json("/v1/status")
        assert status["pools"]["small"]["max"] == 12  # the last good policies stay
        assert set(status["pools"]) == {"small"}
        text = daemon.get("/metrics")[1].decode()
        assert 'gearshift_policy_reloads_total{outcome="ok"} 0.0' in text
    finally:
        assert daemon.stop() == 0
