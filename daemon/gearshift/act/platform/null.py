"""``platform.kind: none``: no PaaS integration; drains only wait for gears to leave.

For fleets where nodes are taken out of service by other means (or for trying gearshift
out read-only): deactivate, activate, remove and add do nothing; ``move_gears`` moves
nothing, so a drain completes only if the node empties by itself, and is otherwise
reactivated at its deadline.
"""

from __future__ import annotations

import structlog

from gearshift.act.platform.base import MoveReport, NodeRef, Platform

log = structlog.get_logger(component="gearshift.platform")


class NullPlatform(Platform):
    async def deactivate(self, node: NodeRef) -> None:
        log.info("platform none: not deactivating", node=node.identity)

    async def activate(self, node: NodeRef) -> None:
        log.info("platform none: not activating", node=node.identity)

    async def move_gears(self, node: NodeRef, *, limit: int) -> MoveReport:
        return MoveReport(started=0, failed=0, remaining=-1)

    async def remove(self, node: NodeRef) -> None:
        return None

    async def add(self, node: NodeRef) -> None:
        return None
