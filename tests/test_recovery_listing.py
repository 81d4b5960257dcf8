"""Recovery's indexed listing answers exactly what its old scan of the list did."""

from __future__ import annotations

import random

from gearshift.model import Machine
from gearshift.reconcile.listing import Listing


def scan(machines: list[Machine], *, key: str | None = None, machine_id: str | None = None,
         name: str | None = None) -> Machine | None:
    """The lookup recovery made before the index: a walk over the listing."""
    for machine in machines:
        if key is not None and machine.key == key:
            return machine
        if machine_id is not None and machine.machine_id == machine_id:
            return machine
    if name is not None:
        return next((m for m in machines if m.name == name), None)
    return None


def test_lookups_match_the_scan_on_random_listings_with_duplicates() -> None:
    rng = random.Random(7)
    for _ in range(300):
        machines = [Machine(provider="p", machine_id=f"m{rng.randrange(6)}",
                            name=f"n{rng.randrange(6)}",
                            key=rng.choice([None, *(f"k{i}" for i in range(6))]))
                    for _ in range(rng.randrange(9))]
        listing = Listing(machines)
        assert list(listing) == machines and len(listing) == len(machines)
        for _ in range(20):
            query = {"key": rng.choice([None, "k0", "k3", "k9"]),
                     "machine_id": rng.choice([None, "m1", "m4", "m9"]),
                     "name": rng.choice([None, "n2", "n5", "n9"])}
            found = listing.find(**query)
            assert found is scan(machines, **query), query


def test_a_key_match_listed_before_an_id_match_wins_and_names_come_last() -> None:
    a = Machine(provider="p", machine_id="m1", name="x", key="k1")
    b = Machine(provider="p", machine_id="m2", name="y", key=None)
    listing = Listing([b, a])
    assert listing.find(key="k1", machine_id="m2") is b  # first in the provider's order
    assert listing.find(key="k9", name="x") is a
    assert listing.find(machine_id="m9") is None
