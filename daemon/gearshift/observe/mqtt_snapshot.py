"""One look at the fleet over MQTT, for ``gearshift plan`` without a running daemon.

It runs the daemon's fact source until the retained facts are in, then returns what it
saw; kept apart from ``observe.mqtt`` so that module holds only the fact source.
"""

from __future__ import annotations

import asyncio
import time

from gearshift.errors import FactsUnavailable
from gearshift.model import FleetSnapshot
from gearshift.observe.fleet import FleetModel
from gearshift.observe.mqtt import MqttFactSource
from gearshift.settings import Settings


async def collect_snapshot(settings: Settings, *, wait: float) -> FleetSnapshot:
    """Connect, read the retained facts for ``wait`` seconds, return a snapshot."""
    fleet = FleetModel(stale_after=settings.reconcile.stale_after,
                       forget_after=settings.trust.forget_after,
                       max_nodes=settings.trust.max_nodes)
    source = MqttFactSource(settings.mqtt, fleet, trust=settings.trust,
                            keyring=settings.trust.keyring())
    stop = asyncio.Event()
    task = asyncio.create_task(source.run(stop))
    caught_up = False
    try:
        try:
            async with asyncio.timeout(wait + 10):
                await source.connected.wait()
        except TimeoutError:
            raise FactsUnavailable(f"no MQTT broker answered at {settings.mqtt.host}:"
                                   f"{settings.mqtt.port} within {wait + 10:g}s") from None
        try:  # the catch-up marker says when the retained facts are all in
            async with asyncio.timeout(wait):
                await source.caught_up.wait()
            caught_up = True
        except TimeoutError:
            pass
    finally:
        stop.set()
        await task
    # Not caught up: the plan must not shrink on a partial fleet (scale-in stays frozen).
    fleet.source_up = caught_up
    return fleet.snapshot(time.time())
