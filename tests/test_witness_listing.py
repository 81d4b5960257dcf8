"""The second witness lists a provider once per batch of actions, and still refuses."""

from __future__ import annotations

from gearshift.act.platform.null import NullPlatform
from gearshift.act.providers.base import CreateRequest, Provider, QuotaInfo
from gearshift.act.providers.guard import GuardedProvider
from gearshift.act.witness import confirm_retire
from gearshift.clock import ManualClock
from gearshift.model import GearCounts, Machine, NodeFacts


class _Listed(Provider):
    """A provider that only lists (and counts how often it was asked)."""

    def __init__(self, owned: list[Machine]) -> None:
        super().__init__("rack-a")
        self.owned = owned
        self.listings = 0

    async def create(self, request: CreateRequest) -> Machine:
        raise AssertionError("not here")

    async def list_owned(self) -> list[Machine]:
        self.listings += 1
        return list(self.owned)

    async def destroy(self, machine_id: str) -> None:
        raise AssertionError("not here")

    async def stop(self, machine_id: str) -> None:
        raise AssertionError("not here")

    async def start(self, machine_id: str) -> None:
        raise AssertionError("not here")

    async def quota(self) -> QuotaInfo:
        return QuotaInfo(max_nodes=100, used=len(self.owned))


def _empty(identity: str) -> NodeFacts:
    return NodeFacts(identity=identity, node_profile="small", max_active_gears=60,
                     gears=GearCounts(total=0, active=0), district_active=False)


async def test_one_listing_serves_a_batch_and_a_renamed_machine_is_still_refused() -> None:
    provider = _Listed([Machine("rack-a", f"m-n{i}", f"n{i}") for i in range(3)]
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
