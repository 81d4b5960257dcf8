"""A bad policy edit never replaces the good set; a crashed task is restarted, not lost."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from conftest import ROOT
from gearshift.policy.holder import PolicyHolder
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
