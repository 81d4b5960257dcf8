"""The simulated world's records: a node (its gears, district, power and moves in flight),
a gear move, and the violations a simulation report counts. Plain data, kept apart from
``world.py``, which is the rules that move them."""

from __future__ import annotations

from dataclasses import dataclass, field

from gearshift.model import GearCounts, NodeFacts


@dataclass
class Move:
    done_at: float
    ok: bool
    state: str  # active | idle | stopped


@dataclass
class SimNode:
    identity: str
    pool: str
    profile: str
    max_active_gears: int
    provider: str
    machine_id: str
    key: str
    created_at: float
    ready_at: float
    district: str = "district-sim"
    blueprint: str | None = None  # what it was made from (a listing tells, as real ones do)
    active: int = 0
    idle: int = 0
    stopped: int = 0
    district_active: bool = True
    moves: list[Move] = field(default_factory=list)
    seq: int = 0
    dirty: bool = True  # facts changed since last published
    tagged: bool = True  # carries gearshift's owner tag (False: someone else's machine)
    powered: bool = True  # False: stopped, disk kept; no facts, no capacity

    def ready(self, now: float) -> bool:
        return self.powered and now >= self.ready_at

    @property
    def total(self) -> int:
        return self.active + self.idle + self.stopped

    def facts(self, now: float) -> NodeFacts:
        self.seq += 1
        return NodeFacts(
            identity=self.identity, node_profile=self.profile,
            max_active_gears=self.max_active_gears,
            gears=GearCounts(total=self.total, active=self.active, started=self.active,
                             idle=self.idle, stopped=self.stopped),
            district_uuid=self.district, district_active=self.district_active,
            produced_at=now, seq=self.seq)


@dataclass
class Violations:
    above_max: int = 0
    below_min: int = 0
    retired_with_active_gears: int = 0
    duplicate_creates: int = 0
    leaked_nodes: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)
