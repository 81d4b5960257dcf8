"""The provider contract, run against every kind's simulator.

vsphere → vcsim, ovirt → the fake engine driven by the real ovirtsdk4, ec2 → moto,
redfish → sushy-tools, foreman → sushy-tools plus the fake Foreman. Each test says one
thing every provider must do, whatever it runs on: make, find again and remove machines,
stop and start them with their disk kept, and fail with the right kind of error.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from gearshift.act.providers.base import Provider
from gearshift.errors import (
    CapacityUnavailable,
    NotFound,
    PermanentError,
    QuotaExceeded,
    TransientError,
)
from gearshift.model import Machine, PowerState
from providers.conftest import Harness, new_key
from simulators import BlackHole

pytestmark = pytest.mark.peer("provider simulators")


async def test_create_list_recreate_destroy(harness: Harness) -> None:
    provider = harness.provider()
    keys = [new_key() for _ in range(harness.nodes)]
    made = await provider.create_many([harness.request(k) for k in keys])
    assert all(not isinstance(m, Exception) for m in made), made
    by_key = {m.key: m for m in made if not isinstance(m, Exception)}
    assert set(by_key) == set(keys)
    assert len({m.machine_id for m in by_key.values()}) == harness.nodes

    owned = await provider.list_owned()
    assert {(m.machine_id, m.key, m.pool) for m in owned} == {
        (m.machine_id, m.key, "small") for m in by_key.values()}

    again = await provider.create_many([harness.request(k) for k in keys])
    assert {m.machine_id for m in again if not isinstance(m, Exception)} == {
        m.machine_id for m in by_key.values()}
    assert len(await provider.list_owned()) == harness.nodes
    assert (await provider.quota()).used == harness.nodes

    # a restart: a new provider built from the same spec finds the same machines
    reborn = harness.provider(name=provider.name)  # (bare metal: on the same journal)
    assert {m.machine_id for m in await reborn.list_owned()} == {
        m.machine_id for m in by_key.values()}

    await asyncio.gather(*(provider.destroy(m.machine_id) for m in by_key.values()))
    assert await provider.list_owned() == []
    assert (await provider.quota()).used == 0
    for machine in by_key.values():  # destroying again: already gone is fine
        await provider.destroy(machine.machine_id)


async def test_destroying_an_unknown_machine_is_fine(harness: Harness) -> None:
    provider = harness.provider()
    await provider.destroy(harness.unknown_id)
    assert await provider.list_owned() == []


async def test_a_full_quota_is_quota_exceeded_and_leaves_nothing(harness: Harness) -> None:
    provider, request = await harness.quota_case()
    before = len(await provider.list_owned())
    with pytest.raises(QuotaExceeded) as caught:
        await provider.create(request)
    assert caught.value.provider == provider.name
    assert len(await provider.list_owned()) == before


async def test_no_capacity_is_capacity_unavailable_and_leaves_nothing(harness: Harness) -> None:
    provider, request = await harness.capacity_case()
    before = {m.machine_id for m in await provider.list_owned()}
    with pytest.raises(CapacityUnavailable) as caught:
        await provider.create(request)
    assert caught.value.provider == provider.name
    assert {m.machine_id for m in await provider.list_owned()} == before
    for machine in await provider.list_owned():
        await provider.destroy(machine.machine_id)


async def test_a_server_that_never_answers_is_transient(harness: Harness,
                                                        blackhole: BlackHole) -> None:
    provider = harness.unreachable(blackhole)
    if harness.kind in ("redfish", "foreman"):
        assert await provider.list_owned() == []  # the pool's state is local: no BMC asked
    else:
        with pytest.raises(TransientError):
            await provider.list_owned()
        for call in (provider.stop, provider.destroy):  # within request_timeout, not a task's
            with pytest.raises(TransientError):
                await call(harness.unknown_id)
    with pytest.raises(TransientError):
        await provider.create(harness.request(new_key()))


async def test_bad_credentials_are_permanent(harness: Harness) -> None:
    provider = await harness.bad_credentials()
    with pytest.raises(PermanentError) as caught:
        await provider.create(harness.request(new_key()))
    assert "not-the-password" not in str(caught.value)
    if harness.kind in ("redfish", "foreman", "ec2"):  # these can still list: nothing was made
        assert await provider.list_owned() == []


async def powered(provider: Provider, machine_id: str, want: PowerState, *,
                  within: float = 60.0) -> Machine:
    """The machine as listed once its power is ``want`` (EC2 and oVirt take the request and
    return; the simulators then move it on in real time)."""
    deadline = time.monotonic() + within
    while True:
        listed = {m.machine_id: m for m in await provider.list_owned()}
        assert machine_id in listed, "a stopped machine is still listed as ours"
        if listed[machine_id].power == want:
            return listed[machine_id]
        assert time.monotonic() < deadline, f"still {listed[machine_id].power}, not {want}"
        await asyncio.sleep(0.2)


async def test_stop_keeps_the_machine_and_start_brings_it_back(harness: Harness) -> None:
    provider = harness.provider()
    machine = await provider.create(harness.request(new_key()))
    await powered(provider, machine.machine_id, PowerState.RUNNING)

    await provider.stop(machine.machine_id)
    await provider.stop(machine.machine_id)  # stopping a stopped machine is fine
    stopped = await powered(provider, machine.machine_id, PowerState.STOPPED)
    assert (stopped.key, stopped.name, stopped.pool) == (machine.key, machine.name, "small")
    assert (await provider.quota()).used == 1  # a stopped machine keeps its place

    await provider.start(machine.machine_id)
    await provider.start(machine.machine_id)  # starting a started machine is fine
    running = await powered(provider, machine.machine_id, PowerState.RUNNING)
    assert running.key == machine.key  # the same machine, not a new one
    assert [m.machine_id for m in await provider.list_owned()] == [machine.machine_id]

    await provider.destroy(machine.machine_id)
    assert await provider.list_owned() == []


@pytest.mark.parametrize("op", ["stop", "start"])
async def test_stopping_or_starting_an_unknown_machine_is_not_found(harness: Harness,
                                                                    op: str) -> None:
    provider = harness.provider()
    with pytest.raises(NotFound) as caught:
        await (provider.stop if op == "stop" else provider.start)(harness.unknown_id)
    assert caught.value.provider == provider.name
    assert f"{op} {harness.unknown_id}" in caught.value.message
    assert await provider.list_owned() == []


@pytest.mark.parametrize("op", ["stop", "start"])
async def test_a_machine_gearshift_did_not_make_is_never_stopped_or_started(
        harness: Harness, op: str) -> None:
    provider = harness.provider()
    theirs = await harness.foreign(provider)
    if harness.kind in ("redfish", "foreman"):
        # A pool's machine gearshift has not allocated: unknown to stop and start alike.
        with pytest.raises(NotFound, match="not allocated") as unknown:
            await (provider.stop if op == "stop" else provider.start)(theirs)
        assert unknown.value.provider == provider.name
        assert await provider.list_owned() == []  # and nothing allocated on the way
        return
    with pytest.raises(PermanentError, match=r"refusing to|not gearshift|not marked") as caught:
        await (provider.stop if op == "stop" else provider.start)(theirs)
    assert caught.value.provider == provider.name
