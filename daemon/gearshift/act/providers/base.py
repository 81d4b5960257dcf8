"""The one contract every provider (rack, vCenter, oVirt, EC2, simulated) fulfils.

Shaped after the cluster-autoscaler's cloudprovider interface, smaller:

* ``create(request)`` makes one machine; the request's ``key`` is an idempotency key, so
  asking twice with the same key returns the same machine instead of a second one;
* ``list_owned()`` finds every machine gearshift made (by a tag or custom attribute),
  so a restart can find them again;
* ``destroy(machine_id)`` removes one; an unknown or already-gone machine is not an error;
* ``stop(machine_id)`` powers one off and keeps its disk (and its place in the quota);
  ``start(machine_id)`` powers it on again, without reprovisioning it. Both are
  idempotent (stopping a stopped machine is fine) and return once the provider reports the
  new power state; an unknown machine is ``NotFound`` (there is nothing to stop or resume,
  unlike destroy, where gone is what was wanted), one without gearshift's marks a
  ``PermanentError``. ``list_owned`` reports each machine's ``power``;
* ``quota()`` says how many nodes it may hold and holds now;
* ``create_many(requests)`` makes several at once (bounded concurrency), each as ``create``
  would, and reports every request's own outcome.

Failures raise the ``ProviderError`` subclasses from ``gearshift.errors``. Blocking SDKs
must run in a thread (``asyncio.to_thread`` or ``common.Blocking``) so the event loop never
stalls. A provider whose single call may legitimately take long (a vSphere clone waits for
its task) says so in ``call_timeout``, and the guard around it allows that long.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from gearshift.errors import ProviderError
from gearshift.model import Machine
from gearshift.policy.schema import Blueprint
from gearshift.records import Allocations

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

    #: the longest one call may take (seconds); None: the guard's default applies
    call_timeout: float | None = None

    def __init__(self, name: str) -> None:
        self.name = name

    def keep_state_in(self, journal: Allocations) -> None:  # noqa: B027 - most keep none
        """Where a provider that records its machines itself (bare metal) keeps that
        record; the others find their machines by tag and ignore it."""

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
    async def stop(self, machine_id: str) -> None:
        """Power a machine off, keeping its disk; already stopped is fine."""

    @abc.abstractmethod
    async def start(self, machine_id: str) -> None:
        """Power a stopped machine on again as it was; already running is fine."""

    @abc.abstractmethod
    async def quota(self) -> QuotaInfo:
        """The provider's node quota and how much of it is used."""

    async def create_many(self, requests: Sequence[CreateRequest], *, concurrency: int = 10
                          ) -> list[Machine | ProviderError]:
        """Create every request, ``concurrency`` at a time; one outcome per request, in order.

        A failed create does not stop the others: its ``ProviderError`` takes its place in
        the result, so the caller can journal each node's outcome on its own.
        """
        limit = asyncio.Semaphore(max(1, concurrency))

        async def one(request: CreateRequest) -> Machine | ProviderError:
            async with limit:
                try:
                    return await self.create(request)
                except ProviderError as exc:
                    return exc

        return list(await asyncio.gather(*(one(r) for r in requests)))

    async def close(self) -> None:  # noqa: B027 - providers without connections need nothing
        """Close connections."""
