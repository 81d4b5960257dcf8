"""What gearshift asks of the PaaS to take a node in or out of service.

The OpenShift v2 commands behind each step (run on the broker):

* ``deactivate``: ``oo-admin-ctl-district -c deactivate-node -n DISTRICT -i HOST``
* ``activate``:   ``oo-admin-ctl-district -c activate-node -n DISTRICT -i HOST``
* ``move_gears``: ``oo-admin-move --gear_uuid UUID[,UUID...]`` (slow, may fail)
* ``remove``:     ``oo-admin-ctl-district -c remove-node -n DISTRICT -i HOST``
* ``add``:        ``oo-admin-ctl-district -c add-node -n DISTRICT -i HOST``

Every step must be idempotent: a drain resumed after a restart repeats the last one.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass


@dataclass(frozen=True)
class NodeRef:
    identity: str
    district: str | None


@dataclass(frozen=True)
class GearCount:
    """What the platform itself says a node holds: the second witness before a retire."""

    total: int
    active: int | None  # None: this platform cannot tell active gears from idle ones
    source: str  # where it comes from, for the log ("oo-admin-ctl-gears list", ...)

    @property
    def empty_enough(self) -> bool:
        """No active gears (or, where active is unknown, no gears at all)."""
        return self.active == 0 if self.active is not None else self.total == 0


@dataclass(frozen=True)
class MoveReport:
    """What one ``move_gears`` call did: moves started, moves that failed, gears left."""

    started: int
    failed: int
    remaining: int


class Platform(abc.ABC):
    @abc.abstractmethod
    async def deactivate(self, node: NodeRef) -> None:
        """Stop new gears landing on the node; existing ones keep running."""

    @abc.abstractmethod
    async def activate(self, node: NodeRef) -> None:
        """Let the node take gears again (cancels a drain)."""

    @abc.abstractmethod
    async def move_gears(self, node: NodeRef, *, limit: int) -> MoveReport:
        """Start moving up to ``limit`` gears off the node to others in its district."""

    @abc.abstractmethod
    async def remove(self, node: NodeRef) -> None:
        """Take an inactive, empty node out of its district."""

    @abc.abstractmethod
    async def add(self, node: NodeRef) -> None:
        """Put a new, empty node into a district (if the platform needs it)."""

    async def gears(self, node: NodeRef) -> GearCount | None:
        """The gears on ``node`` as the platform sees them; None: it cannot tell."""
        return None

    async def members(self) -> frozenset[str] | None:
        """Every node in a district (the platform vouches for it); None: it cannot tell."""
        return None

    async def close(self) -> None:  # noqa: B027 - platforms without resources need nothing
        """Finish or interrupt work in flight and release connections (at shutdown)."""
