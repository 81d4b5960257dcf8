"""Credentials never leak: not into logs (ours or the SDKs'), metrics, errors or status.

Each provider runs a real create, stop, start and destroy against its simulator with the session's
distinctive secrets (which proves they reached the server), then meets refused credentials
and a server that never answers; everything it said on the way is searched for them.
"""

from __future__ import annotations

import io
import logging
from dataclasses import asdict

import pytest
from prometheus_client import generate_latest

from gearshift.act.providers.guard import GuardedProvider, GuardSettings
from gearshift.clock import InstantClock
from gearshift.errors import GearshiftError
from gearshift.logs import configure
from gearshift.metrics import Metrics
from providers.conftest import SECRETS, Harness, new_key
from simulators import BlackHole

pytestmark = pytest.mark.peer("provider simulators")


@pytest.mark.parametrize("harness", ["vsphere", "ovirt", "ec2", "foreman"], indirect=True)
async def test_secrets_appear_in_no_log_metric_error_or_status(
        harness: Harness, blackhole: BlackHole, caplog: pytest.LogCaptureFixture) -> None:
    out = io.StringIO()
    configure(level="debug", fmt="json", stream=out)
    caplog.set_level(logging.DEBUG)
    metrics = Metrics()
    said: list[str] = []
    guard_settings = GuardSettings(retry_attempts=2, retry_initial=0.01, retry_max=0.01)

    def guarded(provider: object) -> GuardedProvider:
        return GuardedProvider(provider, clock=InstantClock(),  # type: ignore[arg-type]
                               metrics=metrics, settings=guard_settings)

    try:
        good = guarded(harness.provider())
        said.append(repr(good.provider.__dict__))
        machine = await good.create(harness.request(new_key()))
        assert [m.machine_id for m in await good.list_owned()] == [machine.machine_id]
        await good.stop(machine.machine_id)
        await good.start(machine.machine_id)
        await good.destroy(machine.machine_id)

        for provider in (await harness.bad_credentials(), harness.unreachable(blackhole)):
            guard = guarded(provider)
            with pytest.raises(GearshiftError) as caught:
                await guard.create(harness.request(new_key()))
            said += [str(caught.value), repr(caught.value), str(caught.value.__cause__),
                     str(asdict(guard.status()))]
            with pytest.raises(GearshiftError) as caught:  # a fresh guard: its breaker is shut
                await guarded(provider).stop(machine.machine_id)
            said += [str(caught.value), repr(caught.value), str(caught.value.__cause__)]
    finally:
        configure(level="info", fmt="auto")

    said += [out.getvalue(), caplog.text, generate_latest(metrics.registry).decode()]
    assert out.getvalue(), "the providers logged nothing: the test would prove nothing"
    text = "\n".join(said)
    for name, secret in SECRETS.items():
        assert secret not in text, f"the {name} secret leaked"
