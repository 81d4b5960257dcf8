"""Where the next nodes of a pool go: its placements scored, in order, spilling over.

Every placement the pool allows is scored on what the planner knows about it:

* **preference**: the order the policy lists them; burst-only placements always come
  last and take only what the others cannot;
* **health**: an unavailable provider (circuit open, backed off after a quota or capacity
  error) is skipped; one that refused capacity recently (``capacity_error_penalty``)
  goes after the healthy ones and gets one node at a time, a probe: if it refuses again
  the rest spills on within the same reconcile, at the cost of one failed call; once a
  node made after the error shows up (booting or registered), the penalty is lifted;
* **room**: the provider's quota left (shared by every pool) and the pool's own
  ``max_nodes`` for that placement; a full placement is skipped and the rest spills on;
* **speed and price**: time-to-ready (measured, else the configured ``boot_time``) and
  ``cost_per_hour``. Normally the policy's order decides and cheap-but-slow is fine.
  When the pool is *urgent* (full now: gears are being refused) the nodes that relieve
  it go first to the placements ready within ``urgency.max_wait``, where a placement
  overtakes a more preferred (often cheaper) one when it is ready at least
  ``urgency.min_time_saved`` sooner (equal speeds keep the policy's order); what they
  cannot cover goes to the slower ones fastest first, burst-only ones included. The
  rest of the shortfall follows the normal order.

Every placement considered becomes a ``Candidate`` saying what happened to it and why,
for ``plan --json`` and the status page. ``Usage`` is shared across pools in one
evaluation: pools are planned highest priority first, so they claim contested quota first.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import chain

from gearshift.durations import format_duration
from gearshift.model import Candidate, Node, PendingNode, ProviderStatus
from gearshift.policy.schema import Blueprint, Placement, PoolPolicy, ProvidersFile, ProviderSpec

PROBE = 1  # nodes asked at once of a provider that refused capacity recently


@dataclass
class Usage:
    """Nodes per provider (all pools) and per pool and provider, including claims so far,
    and the newest node per provider.

    Counted from ``nodes`` (the snapshot's: each machine of ours counts for the pool it was
    made for, the nodes still booting aside) and ``pending`` (asked for, booting) when
    first read or claimed: a plan that places no node never counts. ``machines``, when
    given, sums the machines of ``nodes`` (per provider, per (pool, provider)) from what
    ``decide.pools`` tallied in its pass, so only ``pending`` is added to it."""

    nodes: Sequence[Node] = ()
    pending: Sequence[PendingNode] = ()
    machines: Callable[[], tuple[Counter[str], Counter[tuple[str, str]]]] | None = None
    _counts: tuple[Counter[str], Counter[tuple[str, str]]] | None = field(
        default=None, init=False, repr=False)
    _newest: dict[str, float] | None = field(default=None, init=False, repr=False)

    @property
    def by_provider(self) -> Counter[str]:
        return self._counted()[0]

    @property
    def by_pool_provider(self) -> Counter[tuple[str, str]]:
        return self._counted()[1]

    def _counted(self) -> tuple[Counter[str], Counter[tuple[str, str]]]:
        if self._counts is None:
            if self.machines is not None:
                by_provider, by_pool_provider = self.machines()
            else:
                by_provider, by_pool_provider = self._count_machines()
            for booting_node in self.pending:
                by_provider[booting_node.provider] += 1
                by_pool_provider[(booting_node.pool, booting_node.provider)] += 1
            self._counts = (by_provider, by_pool_provider)
        return self._counts

    def _count_machines(self) -> tuple[Counter[str], Counter[tuple[str, str]]]:
        """The machines of ``nodes`` per provider and per (pool, provider), one pass."""
        booting = {p.identity for p in self.pending}
        owned: dict[str, dict[str | None, int]] = {}  # provider -> pool -> machines
        owned_get = owned.get
        for node in self.nodes:
            machine = node.machine
            if machine is None or (booting and node.identity in booting):
                continue
            counts = owned_get(machine.provider)
            if counts is None:
                counts = owned[machine.provider] = {}
            made_for = machine.pool
            counts[made_for] = counts.get(made_for, 0) + 1
        by_provider: Counter[str] = Counter()
        by_pool_provider: Counter[tuple[str, str]] = Counter()
        for provider, counts in owned.items():
            for pool, count in counts.items():
                by_provider[provider] += count
                if pool is not None:
                    by_pool_provider[(pool, provider)] += count
        return by_provider, by_pool_provider

    def newest(self, provider: str) -> float | None:
        """When the newest node on ``provider`` was made (or asked for, when booting)."""
        if self._newest is None:
            newest: dict[str, float] = {}
            booting = {p.identity for p in self.pending}
            made = chain(((n.machine.provider, n.machine.created_at) for n in self.nodes
                          if n.machine is not None and n.identity not in booting),
                         ((p.provider, p.requested_at) for p in self.pending))
            for name, at in made:
                if at is not None and at > newest.get(name, -math.inf):
                    newest[name] = at
            self._newest = newest
        return self._newest.get(provider)

    def claim(self, pool: str | None, provider: str, count: int) -> None:
        by_provider, by_pool_provider = self._counted()
        by_provider[provider] += count
        if pool is not None:
            by_pool_provider[(pool, provider)] += count


@dataclass(frozen=True)
class Allocation:
    provider: str
    blueprint: str
    count: int
    gears_per_node: int


@dataclass(frozen=True)
class PlacementResult:
    allocations: tuple[Allocation, ...]
    candidates: tuple[Candidate, ...]
    urgent_note: str = ""  # set when urgency put a faster placement ahead of a preferred one

    @property
    def nodes(self) -> int:
        return sum(a.count for a in self.allocations)

    @property
    def gears(self) -> int:
        return sum(a.count * a.gears_per_node for a in self.allocations)


@dataclass
class Option:
    """One placement, scored. ``free`` shrinks as nodes are claimed on it."""

    index: int
    placement: Placement
    spec: ProviderSpec
    blueprint: Blueprint
    status: ProviderStatus
    free: int
    limit: tuple[int, int, bool]  # what limits it: (used, at most, by the placement's max_nodes)
    time_to_ready: float
    recent_error: str | None  # why it is placed after healthy providers, when it is
    taken: int = 0
    urgent_taken: int = 0

    @property
    def burst(self) -> bool:
        return self.placement.burst_only

    @property
    def limit_note(self) -> str:
        used, most, by_placement = self.limit
        return (f"placement max_nodes {used}/{most}" if by_placement
                else f"quota {used}/{most} nodes")

    @property
    def tier(self) -> tuple[bool, bool]:
        """Options only overtake each other within a tier: (burst, recently refused)."""
        return (self.burst, self.recent_error is not None)

    @property
    def per_node(self) -> int:
        return self.blueprint.expected_max_active_gears

    def describe(self) -> str:
        return (f"{self.spec.name} (~{format_duration(round(self.time_to_ready))}, "
                f"{self.spec.cost_per_hour:g}/h)")


@lru_cache(maxsize=256)
def _unreported(name: str) -> ProviderStatus:
    """The status of a provider the executor reports nothing about (immutable: shared)."""
    return ProviderStatus(name=name)


def time_to_ready(spec: ProviderSpec, status: ProviderStatus | None) -> float:
    """Measured time-to-ready when known, else the configured ``boot_time``."""
    if status is not None and status.boot_time is not None:
        return status.boot_time
    return spec.boot_time


def time_to_resume(spec: ProviderSpec, status: ProviderStatus | None) -> float:
    """A parked machine's measured start-to-facts time when known, else the configured
    ``resume_time``, else the time-to-ready of a new machine."""
    if status is not None and status.resume_time is not None:
        return status.resume_time
    return spec.resume_time if spec.resume_time is not None else time_to_ready(spec, status)


def recent_error(spec: ProviderSpec, status: ProviderStatus, now: float,
                 last_made: float | None = None) -> str | None:
    """Why a provider that refused capacity recently should go after healthy ones (None
    when it did not, or has made a node since)."""
    at = status.capacity_error_at
    if at is None or now - at >= spec.capacity_error_penalty:
        return None
    if last_made is not None and last_made > at:
        return None
    ago = format_duration(max(0, round(now - at)))
    return f"refused capacity {ago} ago ({status.capacity_error or 'quota/capacity error'})"


def room_left(pool: str, *, placement: Placement, spec: ProviderSpec,
              usage: Usage) -> tuple[int, tuple[int, int, bool]]:
    """New nodes the pool may still put on ``placement`` (the provider's quota left, or the
    placement's ``max_nodes`` left if fewer; may be negative), and what limits it: (used,
    at most, by the placement's max_nodes)."""
    used = usage.by_provider[spec.name]
    free = spec.quota.max_nodes - used
    limit = (used, spec.quota.max_nodes, False)
    if placement.max_nodes is not None:
        placed = usage.by_pool_provider[(pool, spec.name)]
        if placement.max_nodes - placed < free:
            free = placement.max_nodes - placed
            limit = (placed, placement.max_nodes, True)
    return free, limit


def options_for(policy: PoolPolicy, *, providers: ProvidersFile,
                statuses: Mapping[str, ProviderStatus], usage: Usage, now: float,
                burst: bool = True, slot_below: float | None = None) -> list[Option]:
    """Every placement of ``policy`` with what it offers now, in the policy's order
    (``burst=False``: the burst-only ones left out; ``slot_below``: only those whose
    blueprint's active-gear slot costs less per hour)."""
    options = []
    for index, placement in enumerate(policy.placement):
        if not burst and placement.burst_only:
            continue
        spec = providers.provider(placement.provider)
        blueprint = providers.blueprint(placement.blueprint)
        if spec is None or blueprint is None:  # the loader's cross-check prevents this
            continue
        if slot_below is not None and not (
                spec.cost_per_hour / max(1, blueprint.expected_max_active_gears) < slot_below):
            continue
        name = spec.name
        status = statuses.get(name)
        if status is None:
            status = _unreported(name)
        free, limit = room_left(policy.name, placement=placement, spec=spec, usage=usage)
        options.append(Option(index=index, placement=placement, spec=spec, blueprint=blueprint,
                              status=status, free=max(free, 0), limit=limit,
                              time_to_ready=time_to_ready(spec, status),
                              recent_error=recent_error(
                                  spec, status, now, usage.newest(name)
                                  if status.capacity_error_at is not None else None)))
    return options


def normal_order(options: list[Option]) -> list[Option]:
    """The policy's order, burst-only last, recently refusing providers after healthy ones."""
    return sorted(options, key=lambda o: (o.burst, o.recent_error is not None, o.index))


def urgent_order(options: list[Option], *, min_time_saved: float) -> list[Option]:
    """The normal order, but within a tier a placement goes ahead of every slower one it
    beats by at least ``min_time_saved`` (a stable insertion sort: equal speeds, and
    small differences, keep the policy's order)."""
    ordered: list[Option] = []
    for option in normal_order(options):
        position = len(ordered)
        while position > 0:
            before = ordered[position - 1]
            if before.tier != option.tier or \
                    before.time_to_ready - option.time_to_ready < min_time_saved:
                break
            position -= 1
        ordered.insert(position, option)
    return ordered


def urgent_placements(options: list[Option], *, min_time_saved: float,
                      max_wait: float | None) -> list[Option]:
    """The order urgent nodes are placed in: those ready within ``max_wait`` in
    ``urgent_order``, then the slower ones fastest first, burst-only included (recently
    refusing providers after healthy ones). Without ``max_wait``: ``urgent_order``."""
    if max_wait is None:
        return urgent_order(options, min_time_saved=min_time_saved)
    within = [o for o in options if o.time_to_ready <= max_wait]
    beyond = sorted((o for o in options if o.time_to_ready > max_wait),
                    key=lambda o: (o.recent_error is not None, o.time_to_ready, o.burst, o.index))
    return urgent_order(within, min_time_saved=min_time_saved) + beyond


def place(policy: PoolPolicy, *, providers: ProvidersFile, statuses: Mapping[str, ProviderStatus],
          usage: Usage, min_nodes: int, shortfall_gears: int, max_nodes: int,
          now: float = 0.0, urgent_gears: int = 0) -> PlacementResult:
    """Choose up to ``max_nodes`` nodes giving at least ``min_nodes`` nodes and
    ``shortfall_gears`` active-gear slots, claiming them in ``usage``.

    ``urgent_gears`` of the shortfall are needed *now*: they go to the fastest placements
    first (see the module docstring)."""
    options = options_for(policy, providers=providers, statuses=statuses, usage=usage, now=now)
    normal = normal_order(options)
    nodes = gears = 0
    urgent_note = ""

    def take(option: Option, wanted: int) -> int:
        nonlocal nodes, gears
        count = min(option.free, wanted, max_nodes - nodes)
        if option.recent_error is not None:
            count = min(count, PROBE - option.taken)  # a probe, not a batch
        if count <= 0 or not option.status.available:
            return 0
        option.free -= count
        option.taken += count
        nodes += count
        gears += count * option.per_node
        usage.claim(policy.name, option.spec.name, count)
        return count

    urgent_left = min(max(urgent_gears, 0), max(shortfall_gears, 0))
    if urgent_left > 0 and policy.urgency.enabled:
        fast = urgent_placements(options, min_time_saved=policy.urgency.min_time_saved,
                                 max_wait=policy.urgency.max_wait)
        for option in fast:
            if urgent_left <= 0:
                break
            got = take(option, math.ceil(urgent_left / option.per_node))
            option.urgent_taken += got
            urgent_left -= got * option.per_node
        urgent_note = _urgent_note(fast, normal)

    for option in normal:
        wanted = max(min_nodes - nodes, math.ceil(max(shortfall_gears - gears, 0) / option.per_node))
        take(option, wanted)

    ranks = {id(o): i + 1 for i, o in enumerate(
        urgent_placements(options, min_time_saved=policy.urgency.min_time_saved,
                          max_wait=policy.urgency.max_wait)
        if urgent_note else normal)}
    candidates = tuple(_candidate(o, ranks[id(o)]) for o in sorted(options, key=lambda o: o.index))
    allocations = tuple(Allocation(o.spec.name, o.blueprint.name, o.taken, o.per_node)
                        for o in (sorted(options, key=lambda o: ranks[id(o)])) if o.taken)
    return PlacementResult(allocations, candidates, urgent_note if any(
        o.urgent_taken for o in options) else "")


def _urgent_note(fast: list[Option], normal: list[Option]) -> str:
    """Which placements speed moved ahead of which preferred ones (empty: none moved)."""
    moved = []
    for i, option in enumerate(fast):
        overtaken = [o for o in normal[:normal.index(option)] if o in fast[i + 1:]]
        if overtaken and option.urgent_taken:
            moved.append(f"{option.describe()} ahead of "
                         f"{', '.join(o.describe() for o in overtaken)}")
    return "; ".join(moved)


def _candidate(option: Option, rank: int) -> Candidate:
    name, blueprint, free = option.spec.name, option.blueprint.name, option.free + option.taken

    def candidate(chosen: int, note: str) -> Candidate:
        return Candidate(name, blueprint, chosen, free, note, rank=rank,
                         cost_per_hour=option.spec.cost_per_hour,
                         time_to_ready=option.time_to_ready)

    if option.taken:
        note = f"chosen: {option.taken} of {free} free"
        if option.urgent_taken:
            note += f" ({option.urgent_taken} urgent: ready in " \
                    f"~{format_duration(round(option.time_to_ready))})"
        if option.burst:
            note += " (burst: preferred placements are full or unavailable)"
        if option.recent_error:
            note += f" (a probe, after healthy providers: {option.recent_error})"
        return candidate(option.taken, note)
    if not option.status.available:
        note = f"skipped: {option.status.why_unavailable or 'unavailable'}"
    elif free == 0:
        note = f"skipped: full ({option.limit_note})"
    elif option.burst:
        note = "not needed: preferred placements cover it"
    elif option.recent_error:
        note = f"not needed: healthy providers first ({option.recent_error})"
    else:
        note = "not needed"
    return candidate(0, note)
