"""Garbage-collector policy for the long-running daemon.

CPython's cyclic collector walks every tracked object in a generation when it collects
it. Right after start the process holds ~66k tracked objects from imports, and once the
fact source has replayed the fleet another ~4 per node; all of them live as long as the
process. With the default thresholds (700, 10, 10) a full (gen-2) collection over them
runs every few seconds under a steady fact stream and costs ~50 ms at 10k nodes — and it
lands wherever allocation happens to trip it, often inside a reconcile, between the
crossing fact and the provider's create call.

So ``serve`` calls ``settle`` twice: once the parts are built (the imports' objects out of
the way while the fleet's facts replay: fewer, cheaper collections during catch-up) and
once the fact source has caught up (the big, long-lived allocation is done). Each time it
collects once, moves every surviving object into the permanent generation (``gc.freeze``:
never scanned again, still freed by reference counting) and raises the young-generation
threshold so the collector runs less often over what is left: what a reconcile allocates
is short-lived and mostly freed by reference counting anyway. ``reconcile.gc_freeze:
false`` leaves the interpreter's defaults alone.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass

# Young generation collected every 10 000 net allocations instead of 700: a reconcile at
# 10k nodes allocates far more than 700 short-lived objects, which would otherwise trip
# several young collections (and, every 100 of them, a full one) per reconcile.
LONG_LIVED_THRESHOLDS = (10_000, 10, 10)


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
