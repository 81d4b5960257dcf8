"""What the executor did and what it has in flight, kept where the API and metrics read it.

The executor appends one ``Event`` per action it carried out (or failed to, or refused) and,
once a reconcile, a summary of the journal's open operations. These views are bookkeeping
for ``/v1/events``, ``/v1/status``, the status page and the Prometheus gauges; keeping them
out of the executor leaves it to carry out actions and nothing else.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

from gearshift.metrics import Metrics
from gearshift.model import Machine
from gearshift.records import DONE_PHASES, PHASES, Operation

log = structlog.get_logger(component="gearshift.act")


@dataclass(frozen=True)
class Event:
    """One thing gearshift did (or failed to do), for /v1/events and the status page."""

    at: float
    kind: str
    pool: str
    target: str
    outcome: str  # ok | failed | refused
    reason: str
    error: str | None = None


@dataclass
class ExecutionReport:
    events: list[Event] = field(default_factory=list)
    spill: bool = False  # a quota/capacity error: re-plan now so the rest goes elsewhere
    # Each provider's machines as the second witness listed them for this batch of
    # actions: one listing per provider per reconcile, not one per retire.
    listings: dict[str, list[Machine]] = field(default_factory=dict)

    @property
    def failures(self) -> list[Event]:
        return [e for e in self.events if e.outcome != "ok"]


class Progress:
    """The recent events, counts by (kind, outcome) since start, and operations in flight."""

    def __init__(self, *, metrics: Metrics | None = None, keep: int = 500) -> None:
        self.metrics = metrics
        self.events: deque[Event] = deque(maxlen=keep)
        self.counts: Counter[tuple[str, str]] = Counter()  # (kind, outcome) since start
        self.in_flight: dict[str, dict[str, object]] = {}  # for /v1/status

    def record(self, event: Event, *, provider: str = "") -> None:
        """Keep one event, log it and count it."""
        self.events.append(event)
        self.counts[(event.kind, event.outcome)] += 1
        if event.outcome == "ok":
            log.info("action", kind=event.kind, pool=event.pool, target=event.target,
                     provider=provider or None, reason=event.reason)
            if self.metrics is not None:
                self.metrics.actions.labels(event.kind, event.pool, provider).inc()
        else:
            log.warning("action failed", kind=event.kind, pool=event.pool, target=event.target,
                        outcome=event.outcome, error=event.error, reason=event.reason)
            if self.metrics is not None:
                self.metrics.action_failures.labels(
                    event.kind, event.pool, event.error or event.outcome).inc()

    def record_operations(self, ops: Sequence[Operation], now: float) -> None:
        """Export the operations in flight: by kind and phase, and the oldest by kind."""
        by_kind: dict[str, list[Operation]] = {kind: [] for kind in PHASES}
        for op in ops:  # (one pass: this runs on every reconcile)
            of_kind = by_kind.get(op.kind)
            if of_kind is not None:
                of_kind.append(op)
        self.in_flight = {kind: {"count": len(of_kind),
                                 "oldest_age_seconds": round(max(
                                     (now - o.started_at for o in of_kind), default=0.0), 1),
                                 "phases": dict(Counter(o.phase for o in of_kind))
                                 if of_kind else {}}
                          for kind, of_kind in by_kind.items()}
        if self.metrics is None:
            return
        for kind, phases in PHASES.items():
            of_kind = by_kind[kind]
            self.metrics.operations_in_flight.labels(kind).set(len(of_kind))
            self.metrics.oldest_operation_age_by_kind.labels(kind).set(
                max((now - o.started_at for o in of_kind), default=0.0))
            for phase in phases:
                if phase not in DONE_PHASES:
                    self.metrics.operations_by_phase.labels(kind, phase).set(
                        sum(1 for o in of_kind if o.phase == phase))
        self.metrics.oldest_operation_age.set(max((now - o.started_at for o in ops), default=0.0))
