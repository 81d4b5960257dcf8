"""The daemon's GC policy: everything alive is frozen and the thresholds set to the
long-lived ones; with ``reconcile.gc_freeze: false`` gc is untouched."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from gearshift import gcpolicy
from gearshift.settings import ReconcileSettings


@pytest.fixture
def restore_gc() -> Iterator[None]:
    """The test process shares one collector: put it back as it was."""
    thresholds = gc.get_threshold()
    frozen = gc.get_freeze_count()
    yield
    if frozen == 0:
        gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restore_gc")
def test_settle_freezes_what_is_alive_and_raises_the_thresholds() -> None:
    gc.unfreeze()
    gc.set_threshold(100, 5, 5)
    long_lived = [{"node": i} for i in range(1000)]  # tracked containers, like the fleet's
    settled = gcpolicy.settle(enabled=ReconcileSettings().gc_freeze)
    assert settled is not None
    assert settled.frozen == gc.get_freeze_count()
    assert gc.get_freeze_count() >= len(long_lived)
    assert gc.get_threshold() == gcpolicy.LONG_LIVED_THRESHOLDS == (700, 10, 10)
    assert settled.thresholds == (700, 10, 10)
    assert all(gc.get_count()[g] == 0 for g in (1, 2))  # one full collection, just now


@pytest.mark.usefixtures("restore_gc")
def test_setting_off_leaves_gc_untouched() -> None:
    gc.unfreeze()
    gc.set_threshold(100, 5, 5)
    assert gcpolicy.settle(enabled=ReconcileSettings(gc_freeze=False).gc_freeze) is None
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == (100, 5, 5)
