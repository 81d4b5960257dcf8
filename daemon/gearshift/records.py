"""What the journal records and the small interfaces it offers, apart from how it is stored.

Everything that takes a journal (the executor, recovery, leadership, the reconciler, the
bare-metal provider) imports its types from here, never from ``store/``: the stores
implement these interfaces, their users depend on the interfaces only, so ``act/`` and
``reconcile/`` need not import a store and a test can fake just the part it needs.

**Operations.** An ``Operation`` is one create or one drain, identified by ``op_id``,
which is also the idempotency key handed to the provider. Each step is journaled *before*
it is carried out, so a restart at any instant finds the step it was about to take (or
had just taken) and can repeat it safely. Its ``phase`` moves forward only
(``TRANSITIONS``)::

    create: requested -> created -> registered
                     \\          \\-> abandoning -> failed   (never came up: retired)
                      \\-> failed
    drain:  deactivating -> moving -> removing -> retiring -> retired
                   \\           \\         \\          \\
                    +-----------+---------+----------+-> cancelling -> cancelled
    warm:   moving -> parking -> parked -> resuming -> cancelling -> cancelled
                                      \\          \\-> parked (the start failed)
                                       +----------+-> removing -> retiring -> retired

``requested``: about to call the provider; ``created``: the machine exists;
``registered``: the node published fresh facts. ``deactivating``: about to take the
node out of its district; ``moving``: gears are being moved away; ``removing``: about
to remove it from its district; ``retiring``: about to destroy its machine;
``retired``: gone. ``cancelling``: about to reactivate it. A warm pool (``decide.warm``)
keeps a drained node's machine instead of destroying it: ``parking``: about to stop its
machine (the node empty, deactivated); ``parked``: stopped, kept deactivated in its
district; ``resuming``: about to start it again (then reactivated, as a cancel, once it
publishes facts); a parked machine retired goes through ``removing`` like any other.
``Phase`` names them all; its values are the strings the stores have always written.

A drain records its ``cause`` (and ``preempted_by``, the pool it frees quota for), so
a leader that starts while a preemption's victim drains knows it is one
(``preemptions_in_flight``) and neither preempts for the same shortfall again nor lets
the victim's pool take the node back.

**The interfaces**, one per concern: ``OperationsLog`` (the operations above),
``Ownership`` (the machines gearshift owns), ``RecoveryLog`` (the recoveries performed,
and when recovery first saw a machine of ours it did not know, so an orphan's grace does
not start over with every restart), ``OperatorState`` (the pools an operator paused: a
pause outlives a restart or a failover), ``Leases`` (the leader lease and fencing: with a
lease in use every write carries the lease's fencing token, and a write whose token is no
longer the lease's is refused with ``Fenced``, so a deposed leader cannot record, and so
cannot start, anything), ``Retention`` (``prune``: finished operations and recovery
records older than ``journal.keep_finished``; operations not yet done are never pruned)
``Allocations`` (which machine of a fixed bare-metal pool is allocated to which
request) and ``DemandHistory`` (each pool's demand, one figure a minute for weeks, which
predictive scaling forecasts from: kept here so it survives a restart or a failover).
``Journal`` is all of them in one object, for the callers that need everything.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, Protocol

from gearshift.errors import BadTransition
from gearshift.model import DrainCause, DrainProgress, Machine, ParkedMachine, PendingNode
from gearshift.plan import Preemption

OpKind = Literal["create", "drain"]


class Phase(StrEnum):
    """Where an operation stands; the value is what the stores write."""

    REQUESTED = "requested"
    CREATED = "created"
    ABANDONING = "abandoning"
    REGISTERED = "registered"
    FAILED = "failed"
    DEACTIVATING = "deactivating"
    MOVING = "moving"
    REMOVING = "removing"
    RETIRING = "retiring"
    CANCELLING = "cancelling"
    RETIRED = "retired"
    CANCELLED = "cancelled"
    PARKING = "parking"
    PARKED = "parked"
    RESUMING = "resuming"


DONE_PHASES = frozenset({Phase.REGISTERED, Phase.FAILED, Phase.RETIRED, Phase.CANCELLED})
START_PHASES: dict[str, frozenset[Phase]] = {
    "create": frozenset({Phase.REQUESTED}),
    # removing: a retire without a drain; retiring: an orphan found by recovery
    "drain": frozenset({Phase.DEACTIVATING, Phase.REMOVING, Phase.RETIRING}),
}
TRANSITIONS: dict[str, dict[Phase, frozenset[Phase]]] = {
    "create": {
        Phase.REQUESTED: frozenset({Phase.CREATED, Phase.FAILED}),
        Phase.CREATED: frozenset({Phase.REGISTERED, Phase.ABANDONING, Phase.FAILED}),
        Phase.ABANDONING: frozenset({Phase.FAILED}),
    },
    "drain": {
        Phase.DEACTIVATING: frozenset({Phase.MOVING, Phase.REMOVING, Phase.CANCELLING,
                                       Phase.CANCELLED}),
        Phase.MOVING: frozenset({Phase.REMOVING, Phase.CANCELLING, Phase.CANCELLED,
                                 Phase.PARKING}),
        Phase.REMOVING: frozenset({Phase.RETIRING, Phase.CANCELLING, Phase.CANCELLED,
                                   Phase.RETIRED}),
        Phase.RETIRING: frozenset({Phase.RETIRED, Phase.CANCELLING, Phase.CANCELLED}),
        Phase.CANCELLING: frozenset({Phase.CANCELLED}),
        Phase.PARKING: frozenset({Phase.PARKED, Phase.RESUMING, Phase.CANCELLED}),
        Phase.PARKED: frozenset({Phase.RESUMING, Phase.REMOVING, Phase.CANCELLED}),
        Phase.RESUMING: frozenset({Phase.CANCELLING, Phase.PARKED, Phase.REMOVING,
                                   Phase.CANCELLED}),
    },
}
# The drain phases of a warm pool's machine: stopped (or being stopped, or started again).
WARM_PHASES = frozenset({Phase.PARKING, Phase.PARKED, Phase.RESUMING})
PHASES: dict[str, tuple[Phase, ...]] = {
    "create": (Phase.REQUESTED, Phase.CREATED, Phase.ABANDONING, Phase.REGISTERED,
               Phase.FAILED),
    "drain": (Phase.DEACTIVATING, Phase.MOVING, Phase.REMOVING, Phase.RETIRING,
              Phase.CANCELLING, Phase.PARKING, Phase.PARKED, Phase.RESUMING, Phase.RETIRED,
              Phase.CANCELLED),
}


@dataclass(frozen=True)
class Operation:
    op_id: str
    kind: OpKind
    pool: str
    identity: str
    phase: Phase
    started_at: float
    updated_at: float
    provider: str | None = None
    blueprint: str | None = None
    machine_id: str | None = None
    max_active_gears: int = 0
    deadline: float | None = None
    reason: str = ""
    error: str | None = None
    cause: DrainCause | None = None  # a drain's (None: recorded before causes were)
    preempted_by: str | None = None  # a preemption's drain: the pool that takes its quota

    @property
    def done(self) -> bool:
        return self.phase in DONE_PHASES


def check_transition(op: Operation, phase: Phase) -> None:
    """Refuse a step backwards (or out of a finished operation); the same phase is fine."""
    if phase == op.phase:
        return
    allowed = TRANSITIONS.get(op.kind, {}).get(op.phase, frozenset())
    if phase not in allowed:
        raise BadTransition(f"operation {op.op_id} ({op.kind}) cannot go from {op.phase} "
                            f"to {phase}")


def check_start(op: Operation) -> None:
    if op.phase not in START_PHASES.get(op.kind, frozenset()):
        raise BadTransition(f"operation {op.op_id} ({op.kind}) cannot start in {op.phase}")


@dataclass(frozen=True)
class LeaseInfo:
    """Who holds the leader lease, with which fencing token, for how much longer."""

    holder: str | None
    token: int
    expires_in: float | None  # seconds; negative: expired; None: held until released


@dataclass(frozen=True)
class RecoveryRecord:
    at: float
    holder: str
    summary: dict[str, int]


@dataclass(frozen=True)
class Pruned:
    """What one ``prune`` deleted."""

    operations: int = 0
    recoveries: int = 0


@dataclass(frozen=True)
class Allocation:
    """A machine of a fixed (bare-metal) pool, allocated to one create's idempotency key.

    Keeps the machine's BMC address too, so a machine later removed from the providers
    file can still be retired.
    """

    key: str
    name: str  # node identity
    pool: str
    blueprint: str
    bmc: str
    system: str
    foreman_host: str | None
    allocated_at: float


class OperationsLog(Protocol):
    async def begin(self, op: Operation) -> None:
        """Record a new operation before anything is done for it."""

    async def advance(self, op_id: str, *, phase: Phase, at: float, **changes: Any
                      ) -> Operation:
        """Move an operation to ``phase`` (and set ``changes``); returns the new record."""

    async def open_operations(self) -> list[Operation]:
        """Every operation not yet done, oldest first."""

    async def get(self, op_id: str) -> Operation | None:
        """One operation, done or not."""

    async def history(self, *, limit: int = 1000) -> list[Operation]:
        """Operations, done or not, newest first (at most ``limit``)."""


class Ownership(Protocol):
    async def adopt(self, machine: Machine) -> None:
        """Remember a machine as ours (created by us, or found by its tag)."""

    async def release(self, identity: str) -> None:
        """Forget a machine: it was destroyed."""

    async def machines(self) -> Mapping[str, Machine]:
        """Owned machines by node identity (read-only: the same mapping may be shared)."""


class RecoveryLog(Protocol):
    async def record_recovery(self, record: RecoveryRecord) -> None:
        """Remember that a recovery ran and what it did."""

    async def recoveries(self) -> list[RecoveryRecord]:
        """Every recovery recorded, oldest first."""

    async def first_seen(self) -> dict[tuple[str, str], float]:
        """When each (provider, machine id) was first seen, for an orphan's grace."""

    async def see_first(self, provider: str, machine_id: str, *, at: float) -> None:
        """Remember that the machine was first seen at ``at`` (an earlier sighting stays)."""

    async def forget_seen(self, machines: Collection[tuple[str, str]]) -> None:
        """Forget these (provider, machine id) sightings: adopted, retired or gone."""


class OperatorState(Protocol):
    async def pause_pool(self, pool: str, *, at: float) -> None:
        """Remember that ``pool`` is paused (since ``at``; pausing again keeps the first)."""

    async def resume_pool(self, pool: str) -> None:
        """Forget that ``pool`` is paused (nothing happens if it was not)."""

    async def paused_pools(self) -> dict[str, float]:
        """Paused pools, with when each was paused."""


class Leases(Protocol):
    """The leader lease, and the fencing token every write of this instance carries."""

    token: int | None  # None: writes are not fenced (no lease in use)
    on_fenced: Callable[[], None] | None  # called when a write is refused
    fenced_writes: int

    def fence(self, token: int | None) -> None:
        """From now on every write must carry ``token`` (the lease's), or is refused."""

    async def acquire_lease(self, holder: str, ttl: float) -> int | None:
        """Take the leader lease if it is free or expired: the new fencing token, or None."""

    async def renew_lease(self, holder: str, token: int, ttl: float) -> bool:
        """Extend our lease; False when it is no longer ours (someone took it over)."""

    async def release_lease(self, holder: str, token: int) -> None:
        """Give the lease up (graceful stop), so a follower need not wait for it to expire."""

    async def lease(self) -> LeaseInfo | None:
        """The lease as it stands, or None when nobody ever held it."""

    @property
    def lease_ttl_matters(self) -> bool:
        """False when the lease is held by a lock the OS frees on death (no expiry needed)."""


class Retention(Protocol):
    async def prune(self, *, before: float) -> Pruned:
        """Delete finished operations last updated before ``before`` (never one not yet
        done), and recovery records from before it."""


class Allocations(Protocol):
    """Machines of fixed pools allocated to requests, by provider and machine id.

    Not fenced: a record follows a BMC action already taken (a machine powered off must
    be freed even if the lease moved meanwhile); the operation that led to it was.
    """

    async def allocations(self, provider: str) -> dict[str, Allocation]:
        """The provider's allocations by machine id."""

    async def allocate(self, provider: str, allocations: Mapping[str, Allocation]) -> None:
        """Record these allocations (by machine id; one already recorded is replaced)."""

    async def free(self, provider: str, machine_id: str) -> None:
        """Forget the machine's allocation (nothing if there is none)."""


@dataclass(frozen=True, slots=True)
class DemandSample:
    """One pool's demand during one minute: the most gears it held or asked for then."""

    pool: str
    minute: int  # minutes since the epoch (``int(t // 60)``)
    gears: int


class DemandHistory(Protocol):
    """Each pool's demand in one-minute buckets (``DemandSample``), for forecasting.

    Fenced like any write: only the leader records. Recording a bucket again keeps the
    larger figure, so a leader that restarts mid-minute (or two samples of one minute)
    never lowers what was seen.
    """

    async def record_demand(self, samples: Sequence[DemandSample]) -> None:
        """Keep these buckets (a bucket already kept keeps the larger figure)."""

    async def demand_since(self, *, minute: int) -> list[DemandSample]:
        """Every bucket from ``minute`` on, ordered by pool then minute."""

    async def prune_demand(self, *, before_minute: int) -> int:
        """Forget buckets older than ``before_minute``; how many were forgotten."""


class Journal(OperationsLog, Ownership, RecoveryLog, OperatorState, Leases, Retention,
              Allocations, DemandHistory, Protocol):
    """Every part of the journal in one object, as the stores provide it."""

    kind: str  # memory | sqlite | postgres

    async def schema_version(self) -> int:
        """The version of the store's schema (0 for stores without one)."""

    async def close(self) -> None:
        """Release the store's resources."""


def pending_nodes(ops: Iterable[Operation]) -> list[PendingNode]:
    """Creates not yet registered (nor being given up), and parked machines being started
    again: capacity on its way."""
    return [PendingNode(identity=o.identity, pool=o.pool, provider=o.provider or "",
                        blueprint=o.blueprint or "", max_active_gears=o.max_active_gears,
                        requested_at=o.started_at if o.kind == "create" else o.updated_at)
            for o in ops if not o.done and (
                (o.kind == "create" and o.phase != Phase.ABANDONING and o.cause != "warm")
                or (o.kind == "drain" and o.phase == Phase.RESUMING))]


def preemptions_in_flight(ops: Iterable[Operation]) -> dict[str, Preemption]:
    """The preemptions whose victims are still draining, by victim identity: what the
    planner remembered when it started them, rebuilt after a restart or a failover."""
    return {o.identity: Preemption(identity=o.identity, victim_pool=o.pool,
                                   by_pool=o.preempted_by, provider=o.provider or "",
                                   at=o.started_at)
            for o in ops if o.kind == "drain" and not o.done and o.cause == "preemption"
            and o.preempted_by is not None}


def drains_in_flight(ops: Iterable[Operation]) -> list[DrainProgress]:
    """Drains under way (a warm pool's machines are not: see ``parked_machines``)."""
    return [DrainProgress(identity=o.identity, pool=o.pool, started_at=o.started_at,
                          deadline=o.deadline or o.started_at, phase=o.phase, reason=o.reason,
                          cause=o.cause)
            for o in ops if o.kind == "drain" and not o.done and o.phase not in WARM_PHASES]


def parked_machines(ops: Iterable[Operation]) -> list[ParkedMachine]:
    """The warm pools' machines: being made for one (``filling``: a create, not capacity
    for its pool), being stopped, stopped, or being started again."""
    return [ParkedMachine(identity=o.identity, pool=o.pool, provider=o.provider or "",
                          machine_id=o.machine_id or "", blueprint=o.blueprint or "",
                          max_active_gears=o.max_active_gears,
                          phase="filling" if o.kind == "create" else o.phase.value,
                          since=o.updated_at)
            for o in ops if not o.done and (
                (o.kind == "drain" and o.phase in WARM_PHASES)
                or (o.kind == "create" and o.cause == "warm"))]
