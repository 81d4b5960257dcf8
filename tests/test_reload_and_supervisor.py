"""A bad policy edit never replaces the good set; a crashed task is restarted, not lost."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from conftest import ROOT
from gearshift.daemon import providers_needing_restart
from gearshift.policy.holder import PolicyHolder
from gearshift.policy.loader import validate_paths
from gearshift.reconcile.supervisor import supervise


def test_bad_reload_keeps_the_last_good_policies(tmp_path: Path) -> None:
    shutil.copy(ROOT / "policies" / "small.yaml", tmp_path / "small.yaml")
    shutil.copy(ROOT / "policies" / "providers.yaml", tmp_path / "providers.yaml")
    outcomes: list[str] = []
    holder = PolicyHolder([tmp_path], on_reload=outcomes.append)
    good = holder.current
    text = (tmp_path / "small.yaml").read_text()
    (tmp_path / "small.yaml").write_text(text.replace("size: {min: 2, max: 40}",
                                                      "size: {min: 2, max: forty}"))
    assert holder.reload() is False
    assert holder.current is good
    assert holder.problems == [f"{tmp_path / 'small.yaml'}:8:21: size.max: Input should be a "
                               "valid integer, unable to parse string as an integer"]
    (tmp_path / "small.yaml").write_text(text.replace("max: 40", "max: 30"))
    assert holder.reload() is True
    assert holder.problems == []
    assert holder.current.pool("small").size.max == 30  # type: ignore[union-attr]
    assert outcomes == ["refused", "ok"]


async def test_a_crashed_task_is_restarted_until_stop() -> None:
    stop = asyncio.Event()
    runs: list[int] = []

    async def flaky(stop: asyncio.Event) -> None:
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError("crash")
        stop.set()

    async def steady(stop: asyncio.Event) -> None:
        await stop.wait()

    restarts = await asyncio.wait_for(
        supervise({"flaky": flaky, "steady": steady}, stop), timeout=10)
    assert len(runs) == 3
    assert restarts == {"flaky": 2}


@pytest.mark.parametrize(("text", "where", "words"), [
    ("apiVersion: gearshift/v1\nkind: Pool\nname: a\x07b\n", ":3:8:", "not readable YAML"),
    ("x: " + "[" * 3000 + "]" * 3000 + "\n", ":1:1:", "not readable YAML"),
])
def test_unreadable_yaml_is_a_problem_line_not_a_traceback(tmp_path: Path, text: str,
                                                           where: str, words: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    (problem,) = validate_paths([bad])
    assert problem.startswith(f"{bad}{where}") and words in problem


def test_a_reload_that_changes_providers_is_refused_until_a_restart(tmp_path: Path) -> None:
    shutil.copy(ROOT / "policies" / "small.yaml", tmp_path / "small.yaml")
    providers = tmp_path / "providers.yaml"
    shutil.copy(ROOT / "policies" / "providers.yaml", providers)
    holder = PolicyHolder([tmp_path])
    built = holder.current.providers
    holder.check = lambda candidate: providers_needing_restart(built, candidate.providers,
                                                               file=providers)
    text = providers.read_text()
    providers.write_text(text.replace("quota: {max_nodes: 24}", "quota: {max_nodes: 30}"))
    assert holder.reload() is True  # quotas are read live
    providers.write_text(text.replace("region: us-east-1", "region: eu-west-1"))
    assert holder.reload() is False
    assert holder.problems == [
        f"{providers}:1:1: providers changed (ec2-east's kind or settings changed): restart "
        "gearshift to apply provider changes (systemctl restart gearshift)"]
    assert holder.current.providers.provider("rack-a").quota.max_nodes == 30  # type: ignore[union-attr]


def test_an_unexpected_loader_error_refuses_the_edit(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(ROOT / "policies" / "small.yaml", tmp_path / "small.yaml")
    shutil.copy(ROOT / "policies" / "providers.yaml", tmp_path / "providers.yaml")
    outcomes: list[str] = []
    holder = PolicyHolder([tmp_path], on_reload=outcomes.append)

    def broken(paths: object, **_: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr("gearshift.policy.holder.load_policy_set", broken)
    assert holder.reload() is False
    assert outcomes == ["refused"] and "could not load: RuntimeError" in holder.problems[0]
