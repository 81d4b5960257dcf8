"""Garbage-collector policy for the long-running daemon.

CPython's cyclic collector walks every tracked object in a generation when it collects
it. Right after start the process holds ~66k tracked objects from imports, and once the
fact source has replayed the fleet another ~4 per node; all of them live as long as the
process. Unfrozen, a full (gen-2) collection over them
runs every few seconds under a steady fact stream and costs ~50 ms at 10k nodes — and it
lands wherever allocation happens to trip it, often inside a reconcile, between the
crossing fact and the provider's create call.

So ``serve`` calls ``settle`` twice: once the parts are built (the imports' objects out of
the way while the fleet's facts replay: fewer, cheaper collections during catch-up) and
once the fact source has caught up (the big, long-lived allocation is done). Each time it
collects once, moves every surviving object into the permanent generation (``gc.freeze``:
never scanned again, still freed by reference counting) and sets the thresholds to
``LONG_LIVED_THRESHOLDS``. ``reconcile.gc_freeze: false`` leaves the interpreter alone.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass

# CPython's own (700, 10, 10), set explicitly. Measured at 10k nodes / 100 pools
# (bench/ingest.py, paired runs on a loaded machine): freeze with a young threshold of
# 10 000 left no full collection but made reconciles slower than no policy at all
# (mean 190-221 vs 158-184 ms, p50 to the create call 109-138 vs 87-96 ms); freeze with
# 700 did as well on full collections and cut the reconcile mean to 65 ms (p50 36 ms)
# against 151 ms (p50 90 ms) without, in the same run. Once the long-lived heap is frozen,
# a full collection only walks what is young, so frequent young collections stay cheap.
LONG_LIVED_THRESHOLDS = (700, 10, 10)


@dataclass(frozen=True)
class GcSettled:
    """What ``settle`` did: objects moved to the permanent generation, thresholds set."""

    frozen: int
    thresholds: tuple[int, int, int]


def settle(*, enabled: bool,
           thresholds: tuple[int, int, int] = LONG_LIVED_THRESHOLDS) -> GcSettled | None:
    """Collect, freeze what survives and set ``thresholds``; None (gc untouched) when
    not ``enabled``. Safe to call again: objects made since are frozen too."""
    if not enabled:
        return None
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)
    return GcSettled(frozen=gc.get_freeze_count(), thresholds=thresholds)
