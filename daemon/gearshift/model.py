"""The nouns every layer shares: facts, nodes, the fleet snapshot and the actions.

All frozen dataclasses: a snapshot handed to the planner cannot change under it, and an
action handed to the executor says exactly what was decided. What the planner returns (the
plan, its reading of each pool, its memory) is in ``gearshift.plan``. Times are float seconds since
the Unix epoch (UTC); the planner is given ``now`` and never reads a clock.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import ClassVar, Literal

from gearshift.forecast.result import Forecast
from gearshift.frozen import fast_init


class NodeState(StrEnum):
    """How much gearshift trusts and counts a node."""

    ACTIVE = "active"  # fresh, good facts; takes gears
    BOOTING = "booting"  # created by us, no facts yet
    DRAINING = "draining"  # deactivated in its district, gears moving away
    UNKNOWN = "unknown"  # stale, offline or bad facts: counts for nothing in scale-in
    UNVOUCHED = "unvouched"  # not ours and not a district member: counts for no pool
    PARKED = "parked"  # its machine stopped in a warm pool (silent, deactivated): no capacity


class PowerState(StrEnum):
    """Whether a provider's machine runs, as its listing says (a stopped one keeps its disk)."""

    RUNNING = "running"
    STOPPED = "stopped"  # powered off, disk kept: ``start`` brings it back
    STARTING = "starting"  # powering on (or still being made)
    STOPPING = "stopping"  # powering off
    UNKNOWN = "unknown"  # the provider could not tell (a BMC did not answer)


@fast_init
@dataclass(frozen=True, slots=True)
class GearCounts:
    """Gears on one node by state; ``active`` = total - idle - stopped."""

    total: int = 0
    active: int = 0
    started: int = 0
    idle: int = 0
    stopped: int = 0
    deploying: int = 0
    unknown: int = 0


@fast_init
@dataclass(frozen=True, slots=True)
class NodeFacts:
    """What one node says about itself (one facts message, typed)."""

    identity: str
    node_profile: str
    max_active_gears: int
    gears: GearCounts
    district_uuid: str | None = None
    district_active: bool = True
    no_overcommit_active: bool = False
    public_hostname: str | None = None
    produced_at: float | None = None  # the message's own ts, when it has one
    seq: int | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    bad_reason: str | None = None  # set when the facts cannot be used for density
    signed: bool = False  # signed with the node's own key (see gearshift.signing)

    @property
    def active_density(self) -> float | None:
        if self.bad_reason or self.max_active_gears <= 0:
            return None
        return self.gears.active / self.max_active_gears


@dataclass(frozen=True, slots=True)
class Machine:
    """A machine a provider made for us (found again after a restart by its tag)."""

    provider: str
    machine_id: str
    name: str  # the node identity it will publish facts as
    blueprint: str | None = None
    pool: str | None = None
    created_at: float | None = None
    key: str | None = None  # the idempotency key it was created with
    # As the provider's listing saw it; an observation, not part of the machine's identity.
    power: PowerState = field(default=PowerState.UNKNOWN, compare=False)


@fast_init
@dataclass(frozen=True, slots=True)
class Node:
    """One node as the planner sees it."""

    identity: str
    state: NodeState
    facts: NodeFacts | None
    last_seen: float | None
    machine: Machine | None = None  # None: not ours, gearshift never retires it
    why_unknown: str | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class PendingNode:
    """A node we asked for that has not published facts yet."""

    identity: str
    pool: str
    provider: str
    blueprint: str
    max_active_gears: int
    requested_at: float


# (``warm``: a machine made for a warm pool, drained as soon as it is up, then parked.)
DrainCause = Literal["scale_in", "preemption", "burst_return", "consolidation", "warm"]


@fast_init
@dataclass(frozen=True, slots=True)
class DrainProgress:
    """A drain in flight: the node is deactivated and its gears are moving away."""

    identity: str
    pool: str
    started_at: float
    deadline: float
    phase: str  # its journal phase: deactivating | moving | removing | retiring | cancelling
    reason: str = ""
    cause: DrainCause | None = None  # why it drains (None: recorded before causes were)


@dataclass(frozen=True, slots=True)
class ParkedMachine:
    """A machine kept in a placement's warm pool: its node drained and deactivated in its
    district, the machine stopped (``parking``: being stopped; ``resuming``: being started
    again, its node reactivated once it publishes facts)."""

    identity: str
    pool: str
    provider: str
    machine_id: str
    blueprint: str
    max_active_gears: int
    phase: str  # filling (being made for the pool) | parking | parked | resuming
    since: float  # when it entered that phase


@dataclass(frozen=True, slots=True)
class CapacityRequest:
    """The PaaS (or an SRE) asking for room for ``gears`` more active gears in a pool."""

    request_id: str
    pool: str
    gears: int
    expires_at: float
    reason: str = ""
    # A broker-side hook's report of gears it refused ("No nodes available"): demand that
    # did not fit, on top of the active gears, rather than room held for gears to come.
    unplaced: bool = False


@dataclass(frozen=True, slots=True)
class Signal:
    """The latest value of one extra policy signal (a PromQL query); None when it failed."""

    pool: str
    name: str
    value: float | None
    observed_at: float | None


@dataclass(frozen=True)
class FleetSnapshot:
    """Everything the planner may look at, taken at one instant."""

    taken_at: float
    nodes: tuple[Node, ...]
    pending: tuple[PendingNode, ...] = ()
    drains: tuple[DrainProgress, ...] = ()
    requests: tuple[CapacityRequest, ...] = ()
    signals: tuple[Signal, ...] = ()
    facts_fresh: bool = True  # the fact source is connected and caught up
    forecasts: tuple[Forecast, ...] = ()  # each pool's demand ahead (predictive scaling)
    parked: tuple[ParkedMachine, ...] = ()  # the warm pools' machines
    # Identity -> position in ``nodes``, when the source keeps one between snapshots (the
    # fleet model does): ``by_id`` then costs nothing per snapshot at 100k nodes.
    index: Mapping[str, int] | None = field(default=None, repr=False, compare=False)

    @cached_property
    def by_id(self) -> Mapping[str, Node]:
        """Each node by identity (built once per snapshot unless the source indexed it)."""
        if self.index is not None:
            return _Indexed(self.nodes, self.index)
        return {n.identity: n for n in self.nodes}


class _Indexed(Mapping[str, Node]):
    """Nodes by identity, through an index of positions the source already keeps."""

    __slots__ = ("_index", "_nodes")

    def __init__(self, nodes: tuple[Node, ...], index: Mapping[str, int]) -> None:
        self._nodes = nodes
        self._index = index

    def __getitem__(self, identity: str) -> Node:
        return self._nodes[self._index[identity]]

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


@fast_init
@dataclass(frozen=True, slots=True)
class ProviderStatus:
    """What the executor knows about a provider right now (breakers, back-off, speed)."""

    name: str
    available: bool = True
    why_unavailable: str | None = None
    boot_time: float | None = None  # measured time-to-ready, when known
    resume_time: float | None = None  # measured start-to-facts of a parked machine, when known
    # When it last refused to make a node (quota or capacity error), and what it said:
    # placement puts it after healthy providers for a while even once its back-off ends.
    capacity_error_at: float | None = None
    capacity_error: str | None = None


@dataclass(frozen=True, slots=True)
class Candidate:
    """One placement the planner considered for a scale-out, and what it made of it."""

    provider: str
    blueprint: str
    chosen: int
    free: int
    note: str
    rank: int | None = None  # position in the order placement tried them (1 = first)
    cost_per_hour: float | None = None
    time_to_ready: float | None = None  # measured, else configured, seconds


@dataclass(frozen=True, slots=True)
class ScaleOut:
    """Make ``count`` new nodes for ``pool`` on ``provider`` from ``blueprint``."""

    kind: ClassVar[str] = "scale_out"
    pool: str
    provider: str
    blueprint: str
    count: int
    reason: str
    candidates: tuple[Candidate, ...] = ()
    # Burst-and-return: the burst nodes these new nodes will replace (make-before-break).
    replaces: tuple[str, ...] = ()
    warm: bool = False  # made to be parked in the placement's warm pool (``decide.warm``)


@dataclass(frozen=True, slots=True)
class NodeCandidate:
    """One node the planner considered taking away, and what it made of it."""

    identity: str
    provider: str | None
    chosen: bool
    note: str


@dataclass(frozen=True, slots=True)
class Drain:
    """Deactivate a node and move its gears away, ahead of retiring it."""

    kind: ClassVar[str] = "drain"
    pool: str
    identity: str
    reason: str
    cause: DrainCause = "scale_in"
    preempted_by: str | None = None  # the higher-priority pool that takes its quota
    candidates: tuple[NodeCandidate, ...] = ()


@dataclass(frozen=True, slots=True)
class CancelDrain:
    """Reactivate a draining node (demand returned, or its drain ran out of time)."""

    kind: ClassVar[str] = "cancel_drain"
    pool: str
    identity: str
    reason: str


@dataclass(frozen=True, slots=True)
class Retire:
    """Destroy the machine behind a drained, empty node."""

    kind: ClassVar[str] = "retire"
    pool: str
    identity: str
    provider: str
    machine_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Abandon:
    """Destroy a node that never came up (no fresh facts within its provisioning timeout),
    and back its provider off: it may be short of capacity, or unable to boot that image."""

    kind: ClassVar[str] = "abandon"
    pool: str
    identity: str
    provider: str
    machine_id: str
    op_id: str  # the create being given up
    reason: str
    timeout: float  # the provisioning timeout it ran out of, seconds
    waited: float  # seconds since it was asked for
    resumed: bool = False  # its destroy failed before: only the destroy is tried again


@dataclass(frozen=True, slots=True)
class DestroyAgain:
    """Destroy again the machine behind a retired node (out of its district) whose destroy
    failed."""

    kind: ClassVar[str] = "destroy_again"
    pool: str
    identity: str
    provider: str
    machine_id: str
    op_id: str  # the drain whose last step this is
    reason: str


@dataclass(frozen=True, slots=True)
class _OnMachine:
    """The fields ``Park``, ``Resume`` and ``RetireParked`` share (each its own kind)."""

    pool: str
    identity: str
    provider: str
    machine_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Park(_OnMachine):
    """Stop the machine behind a drained, empty node and keep it in its placement's warm
    pool, deactivated in its district, instead of destroying it."""

    kind: ClassVar[str] = "park"


@dataclass(frozen=True, slots=True)
class Resume(_OnMachine):
    """Start a parked machine again; its node is reactivated once it publishes facts."""

    kind: ClassVar[str] = "resume"


@dataclass(frozen=True, slots=True)
class RetireParked(_OnMachine):
    """Destroy a parked machine (idle too long, or more than its warm pool keeps)."""

    kind: ClassVar[str] = "retire_parked"


Action = (ScaleOut | Drain | CancelDrain | Retire | Abandon | DestroyAgain | Park | Resume
          | RetireParked)

