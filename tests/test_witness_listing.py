"""The second witness lists a provider once per batch of actions, and still refuses."""

from __future__ import annotations

from builders import ListedMachines
from gearshift.act.platform.null import NullPlatform
from gearshift.act.providers.guard import GuardedProvider
from gearshift.act.witness import confirm_retire
from gearshift.clock import ManualClock
from gearshift.model import GearCounts, Machine, NodeFacts


def _empty(identity: str) -> NodeFacts:
    return NodeFacts(identity=identity, node_profile="small", max_active_gears=60,
                     gears=GearCounts(total=0, active=0), district_active=False)


async def test_one_listing_serves_a_batch_and_a_renamed_machine_is_still_refused() -> None:
    provider = ListedMachines("rack-a", owned=[Machine("rack-a", f"m-n{i}", f"n{i}")
                                               for i in range(3)]
                              + [Machine("rack-a", "m-x", "someone-else")])
    guarded = GuardedProvider(provider, clock=ManualClock())
    listed: dict[str, list[Machine]] = {}
    for i in range(3):
        assert await confirm_retire(identity=f"n{i}", facts=_empty(f"n{i}"),
                                    platform=NullPlatform(), provider=guarded,
                                    machine_id=f"m-n{i}", listed=listed) is None
    refused = await confirm_retire(identity="n9", facts=_empty("n9"), platform=NullPlatform(),
                                   provider=guarded, machine_id="m-x", listed=listed)
    assert refused is not None and refused.witness == "provider"
    assert "machine m-x is someone-else" in refused.describe()
    assert provider.listings == 1  # four retires, one listing
    # Without a batch (``listed`` left out) every call lists afresh, as before.
    await confirm_retire(identity="n0", facts=_empty("n0"), platform=NullPlatform(),
                         provider=guarded, machine_id="m-n0")
    assert provider.listings == 2
