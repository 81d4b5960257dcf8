"""The one contract every provider (rack, vCenter, oVirt, EC2, simulated) fulfils.

Shaped after the cluster-autoscaler's cloudprovider interface, smaller:

* ``create(request)`` makes one machine; the request's ``key`` is an idempotency key, so
  asking twice with the same key returns the same machine instead of a second one;
* ``list_owned()`` finds every machine gearshift made (by a tag or custom attribute),
  so a restart can find them again;
* ``destroy(machine_id)`` removes one; an unknown or already-gone machine is not an error;
* ``quota()`` says how many nodes it may hold and holds now.

Failures raise the ``ProviderError`` subclasses from ``gearshift.errors``. Blocking SDKs
must run in a thread (``asyncio.to_thread``) so the event loop never stalls.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from gearshift.model import Machine
from gearshift.policy.schema import Blueprint

OWNER_TAG = "gearshift-owner"  # the tag (or custom attribute) that marks a machine as ours
KEY_TAG = "gearshift-key"
POOL_TAG = "gearshift-pool"
BLUEPRINT_TAG = "gearshift-blueprint"


@dataclass(frozen=True)
class CreateRequest:
    """One node to make. ``key`` doubles as the journal's operation id."""

    key: str
    name: str  # the host name; the node publishes facts under it
    pool: str
    blueprint: Blueprint


@dataclass(frozen=True)
class QuotaInfo:
    max_nodes: int
    used: int

    @property
    def free(self) -> int:
        return max(0, self.max_nodes - self.used)


class Provider(abc.ABC):
    """Somewhere nodes come from."""

    def __init__(self, name: str) -> None:
        self.name = name

    @abc.abstractmethod
    async def create(self, request: CreateRequest) -> Machine:
        """Make (or find, by ``request.key``) one machine and start it."""

    @abc.abstractmethod
    async def list_owned(self) -> list[Machine]:
        """Every machine this provider holds that carries gearshift's tag."""

    @abc.abstractmethod
    async def destroy(self, machine_id: str) -> None:
        """Remove a machine; already gone is fine."""

    @abc.abstractmethod
    async def quota(self) -> QuotaInfo:
        """The provider's node quota and how much of it is used."""

    async def close(self) -> None:  # noqa: B027 - providers without connections need nothing
        """Close connections."""
