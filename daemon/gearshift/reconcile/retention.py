"""Journal retention: the leader deletes what the journal no longer needs, about hourly.

Every create and drain stays in the journal once done (``history()`` and a post-mortem
read them), and every recovery that did something is recorded, so without pruning the
journal grows for as long as the daemon runs. ``JournalPruner`` deletes finished
operations whose last step is older than ``journal.keep_finished``, and recovery
records older than that; an operation not yet done is never deleted, however old.

It runs as a ``Reconciler.before`` hook, so between reconciles and never during one, and
only on the leader (a follower does not reconcile; its journal writes are fenced anyway).
What it deleted is counted in ``gearshift_journal_pruned_total``.
"""

from __future__ import annotations

import structlog

from gearshift.clock import Clock
from gearshift.metrics import Metrics
from gearshift.records import Pruned, Retention

log = structlog.get_logger(component="gearshift.retention")

PRUNE_EVERY = 3600.0  # seconds between prunes: deletes are cheap, but not worth every reconcile


class JournalPruner:
    def __init__(self, journal: Retention, *, clock: Clock, keep: float,
                 every: float = PRUNE_EVERY, metrics: Metrics | None = None) -> None:
        self.journal = journal
        self.clock = clock
        self.keep = keep  # seconds; 0 keeps everything
        self.every = every
        self.metrics = metrics
        self.last_run: float | None = None
        if metrics is not None:
            for what in ("operations", "recoveries"):
                metrics.journal_pruned.labels(what)

    async def maybe_prune(self) -> Pruned | None:
        """Prune when due (at the first reconcile, then every ``every``); None when not."""
        now = self.clock.now()
        if self.keep <= 0 or (self.last_run is not None and now - self.last_run < self.every):
            return None
        pruned = await self.journal.prune(before=now - self.keep)
        self.last_run = now
        if self.metrics is not None:
            self.metrics.journal_pruned.labels("operations").inc(pruned.operations)
            self.metrics.journal_pruned.labels("recoveries").inc(pruned.recoveries)
        if pruned.operations or pruned.recoveries:
            log.info("journal pruned", operations=pruned.operations,
                     recoveries=pruned.recoveries, kept_seconds=self.keep)
        return pruned
