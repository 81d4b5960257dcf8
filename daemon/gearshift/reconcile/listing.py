"""A provider's listing of our machines, looked up by key, machine id or name.

Recovery asks, for every open operation and every machine the journal owns, which listed
machine is it. Scanning the list each time made a sweep quadratic in the fleet (at 2 000
machines, 4 M comparisons every sweep); the listing is indexed once instead, and a lookup
answers exactly what the scan did: the first listed machine whose key or machine id
matches (in the provider's order), else the first whose name does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from gearshift.model import Machine


class Listing:
    """The machines one ``list_owned()`` call returned, in its order, indexed."""

    __slots__ = ("_by_id", "_by_key", "_by_name", "machines")

    def __init__(self, machines: Iterable[Machine]) -> None:
        self.machines = tuple(machines)
        self._by_key: dict[str, int] = {}
        self._by_id: dict[str, int] = {}
        self._by_name: dict[str, int] = {}
        for position, machine in enumerate(self.machines):
            if machine.key is not None:
                self._by_key.setdefault(machine.key, position)
            self._by_id.setdefault(machine.machine_id, position)
            self._by_name.setdefault(machine.name, position)

    def __iter__(self) -> Iterator[Machine]:
        return iter(self.machines)

    def __len__(self) -> int:
        return len(self.machines)

    def find(self, *, key: str | None = None, machine_id: str | None = None,
             name: str | None = None) -> Machine | None:
        """The first machine listed with ``key`` or ``machine_id``, else with ``name``."""
        hits = [found for found in (
            self._by_key.get(key) if key is not None else None,
            self._by_id.get(machine_id) if machine_id is not None else None)
            if found is not None]
        if hits:
            return self.machines[min(hits)]
        if name is not None and (found := self._by_name.get(name)) is not None:
            return self.machines[found]
        return None
