"""GuardedProvider on fake time: which errors are retried, how often, the breaker's three
states, capacity back-off, metrics, and time-to-ready reaching placement."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import pytest
from prometheus_client import generate_latest

from builders import policy_set, pool
from gearshift.act.executor import Executor
from gearshift.act.platform.null import NullPlatform
from gearshift.act.providers.base import CreateRequest, Provider, QuotaInfo
from gearshift.act.providers.guard import GuardedProvider, GuardSettings
from gearshift.clock import InstantClock, ManualClock
from gearshift.errors import (
    CapacityUnavailable,
    CircuitOpen,
    NotFound,
    PermanentError,
    ProviderError,
    QuotaExceeded,
    TransientError,
)
from gearshift.metrics import Metrics
from gearshift.model import FleetSnapshot, Machine, ScaleOut
from gearshift.plan import Plan, PlannerState
from gearshift.store.journal import MemoryJournal


class SkippingClock(ManualClock):
    """Sleeps move this clock's time on at once (so a deadline on it can be reached)."""

    def __init__(self) -> None:
        super().__init__()
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.set(self.now() + seconds)
        await asyncio.sleep(0)


class Scripted(Provider):
    """A provider whose every call runs the next step of a script (the last one repeats)."""

    def __init__(self, *steps: Callable[[], object]) -> None:
        super().__init__("fake")
        self.steps = list(steps)
        self.calls = 0
        self.gate: asyncio.Event | None = None

    async def _step(self) -> object:
        self.calls += 1
        step = self.steps[min(self.calls, len(self.steps)) - 1]
        if self.gate is not None:
            await self.gate.wait()
        return step()

    async def create(self, request: CreateRequest) -> Machine:
        await self._step()
        return Machine(provider="fake", machine_id=f"m{self.calls}", name=request.name,
                       key=request.key)

    async def list_owned(self) -> list[Machine]:
        await self._step()
        return []

    async def destroy(self, machine_id: str) -> None:
        await self._step()

    async def stop(self, machine_id: str) -> None:
        await self._step()

    async def start(self, machine_id: str) -> None:
        await self._step()

    async def quota(self) -> QuotaInfo:
        await self._step()
        return QuotaInfo(max_nodes=1, used=0)


def ok() -> object:
    return None


def fail(error: type[ProviderError]) -> Callable[[], object]:
    def raise_it() -> object:
        raise error("fake", f"scripted {error.__name__}")
    return raise_it


def bug() -> object:
    empty: dict[str, object] = {}
    return empty["missing"]


def request() -> CreateRequest:
    blueprint = policy_set(pool()).providers.blueprint("small-bm")  # type: ignore[union-attr]
    assert blueprint is not None
    return CreateRequest(key="k", name="n", pool="small", blueprint=blueprint)


def counted(metrics: Metrics, outcome: str, op: str = "create") -> float:
    value = metrics.registry.get_sample_value(
        "gearshift_provider_calls_total", {"provider": "fake", "op": op, "outcome": outcome})
    return value or 0.0


SETTINGS = GuardSettings(call_timeout=5, retry_deadline=60, retry_attempts=4, retry_initial=1,
                         retry_max=8, breaker_threshold=3, breaker_reset=100,
                         capacity_backoff=300)


async def test_transient_errors_are_retried_a_bounded_number_of_times() -> None:
    provider = Scripted(fail(TransientError))
    metrics = Metrics()
    guard = GuardedProvider(provider, clock=InstantClock(), metrics=metrics, settings=SETTINGS)
    with pytest.raises(TransientError):
        await guard.create(request())
    assert provider.calls == 4
    assert counted(metrics, "transient") == 4
    assert guard.failures == 1  # one failed call, however many attempts


async def test_retries_stop_at_the_deadline_on_the_injected_clock() -> None:
    clock = SkippingClock()
    start = clock.now()
    settings = GuardSettings(retry_deadline=20, retry_attempts=100, retry_initial=1,
                             retry_max=8, call_timeout=5)
    provider = Scripted(fail(TransientError))
    guard = GuardedProvider(provider, clock=clock, settings=settings)
    with pytest.raises(TransientError):
        await guard.create(request())
    assert clock.now() - start <= 20  # never sleeps past the deadline
    assert 3 <= provider.calls < 100
    waits = clock.slept
    assert all(later >= earlier * 0.5 for earlier, later in itertools.pairwise(waits))
    assert max(waits) <= 8 + 1  # capped at retry_max, plus at most retry_initial of jitter


async def test_a_transient_error_then_success_returns_the_result() -> None:
    provider = Scripted(fail(TransientError), ok)
    guard = GuardedProvider(provider, clock=InstantClock(), settings=SETTINGS)
    machine = await guard.create(request())
    assert machine.machine_id == "m2"
    assert provider.calls == 2
    assert guard.failures == 0


@pytest.mark.parametrize("error", [QuotaExceeded, CapacityUnavailable, PermanentError, NotFound])
async def test_only_transient_errors_are_retried(error: type[ProviderError]) -> None:
    provider = Scripted(fail(error))
    guard = GuardedProvider(provider, clock=InstantClock(), settings=SETTINGS)
    with pytest.raises(error):
        await guard.create(request())
    assert provider.calls == 1


async def test_the_breaker_opens_after_repeated_failures_and_refuses_calls() -> None:
    clock = ManualClock()
    metrics = Metrics()
    provider = Scripted(fail(TransientError))
    settings = GuardSettings(retry_attempts=1, breaker_threshold=3, breaker_reset=100)
    guard = GuardedProvider(provider, clock=clock, metrics=metrics, settings=settings)
    for _ in range(3):
        assert guard.status().available
        with pytest.raises(TransientError):
            await guard.create(request())
    assert guard.breaker() == "open"
    status = guard.status()
    assert not status.available
    assert status.why_unavailable is not None
    assert "circuit open after 3 failure(s)" in status.why_unavailable
    with pytest.raises(CircuitOpen):
        await guard.create(request())
    with pytest.raises(CircuitOpen):
        await guard.list_owned()
    assert provider.calls == 3  # refused calls never reach the provider
    assert counted(metrics, "circuit_open") == 1
    assert counted(metrics, "circuit_open", op="list") == 1
    assert metrics.registry.get_sample_value("gearshift_provider_available",
                                             {"provider": "fake"}) == 0


async def test_half_open_lets_one_trial_through_and_its_success_closes_it() -> None:
    clock = ManualClock()
    provider = Scripted(fail(TransientError), fail(TransientError), ok)
    guard = GuardedProvider(provider, clock=clock, settings=GuardSettings(
        retry_attempts=1, breaker_threshold=2, breaker_reset=100))
    for _ in range(2):
        with pytest.raises(TransientError):
            await guard.create(request())
    assert guard.breaker() == "open"
    await clock.advance(99)
    assert guard.breaker() == "open"
    await clock.advance(1)
    assert guard.breaker() == "half-open"
    assert guard.status().available  # placement may try it again

    provider.gate = asyncio.Event()
    trial = asyncio.create_task(guard.create(request()))
    await asyncio.sleep(0)
    with pytest.raises(CircuitOpen, match="trial call is running"):
        await guard.create(request())  # only one trial at a time
    provider.gate.set()
    assert (await trial).machine_id == "m3"
    assert guard.breaker() == "closed"
    assert guard.failures == 0
    await guard.create(request())
    assert provider.calls == 4


async def test_a_failed_trial_opens_the_breaker_again() -> None:
    clock = ManualClock()
    provider = Scripted(fail(TransientError))
    guard = GuardedProvider(provider, clock=clock, settings=GuardSettings(
        retry_attempts=1, breaker_threshold=2, breaker_reset=100))
    for _ in range(2):
        with pytest.raises(TransientError):
            await guard.create(request())
    await clock.advance(100)
    with pytest.raises(TransientError):
        await guard.create(request())  # the trial
    assert guard.breaker() == "open"
    assert guard.open_until == clock.now() + 100
    with pytest.raises(CircuitOpen):
        await guard.create(request())
    assert provider.calls == 3


async def test_a_permanent_error_opens_the_breaker_at_once() -> None:
    guard = GuardedProvider(Scripted(fail(PermanentError)), clock=ManualClock(),
                            settings=SETTINGS)
    with pytest.raises(PermanentError):
        await guard.create(request())
    assert guard.breaker() == "open"
    assert not guard.status().available


async def test_capacity_backs_off_without_opening_the_breaker() -> None:
    clock = ManualClock()
    guard = GuardedProvider(Scripted(fail(CapacityUnavailable), ok), clock=clock,
                            settings=SETTINGS)
    with pytest.raises(CapacityUnavailable):
        await guard.create(request())
    assert guard.breaker() == "closed"
    status = guard.status()
    assert not status.available
    assert status.why_unavailable is not None
    assert "backed off 300s more: capacity error" in status.why_unavailable
    await clock.advance(300)
    assert guard.status().available
    await guard.create(request())  # calls were never refused: only placement steers away


async def test_not_found_on_destroy_is_done_and_counts_as_reaching_the_provider() -> None:
    clock = ManualClock()
    provider = Scripted(fail(TransientError), fail(NotFound))
    guard = GuardedProvider(provider, clock=clock, settings=GuardSettings(
        retry_attempts=1, breaker_threshold=5))
    with pytest.raises(TransientError):
        await guard.destroy("m1")
    assert guard.failures == 1
    await guard.destroy("m1")  # NotFound: already gone is what we wanted
    assert guard.failures == 0


async def test_a_call_that_never_returns_times_out_as_transient() -> None:
    provider = Scripted(ok)
    provider.gate = asyncio.Event()  # never set
    metrics = Metrics()
    guard = GuardedProvider(provider, clock=InstantClock(), metrics=metrics,
                            settings=GuardSettings(call_timeout=0.05, retry_attempts=2))
    with pytest.raises(TransientError, match=r"timed out after 0\.05s"):
        await guard.list_owned()
    assert provider.calls == 2
    assert counted(metrics, "transient", op="list") == 2


async def test_a_retry_gets_only_what_is_left_of_the_deadline_as_its_timeout() -> None:
    """The first attempt took 19.9 of the 20 s deadline (on the injected clock) and failed;
    the retry that follows may not run for a whole call_timeout on top."""
    clock = SkippingClock()
    gate = asyncio.Event()  # never set: the retry hangs

    def slow_failure() -> object:
        clock.set(clock.now() + 19.9)
        raise TransientError("fake", "connection reset")

    provider = Scripted(slow_failure, ok)
    settings = GuardSettings(retry_deadline=20, retry_attempts=5, retry_initial=0.001,
                             retry_max=0.001, call_timeout=120)
    guard = GuardedProvider(provider, clock=clock, settings=settings)
    original = provider._step

    async def step() -> object:
        if provider.calls >= 1:
            provider.gate = gate
        return await original()

    provider._step = step  # type: ignore[method-assign]
    with pytest.raises(TransientError) as caught:
        await guard.create(request())
    # What was left of the deadline (< 0.1 s), not call_timeout's 120 s.
    timeout = float(caught.value.message.rsplit("after ", 1)[1].rstrip("s"))
    assert 0 < timeout < 0.1
    assert 2 <= provider.calls <= settings.retry_attempts


async def test_a_driver_bug_becomes_a_permanent_error_naming_its_type() -> None:
    guard = GuardedProvider(Scripted(bug), clock=ManualClock(), settings=SETTINGS)
    with pytest.raises(PermanentError, match="unexpected KeyError"):
        await guard.create(request())
    assert guard.breaker() == "open"


async def test_every_attempt_is_counted_and_timed() -> None:
    metrics = Metrics()
    guard = GuardedProvider(Scripted(fail(TransientError), ok), clock=InstantClock(),
                            metrics=metrics, settings=SETTINGS)
    await guard.create(request())
    assert counted(metrics, "transient") == 1
    assert counted(metrics, "ok") == 1
    count = metrics.registry.get_sample_value("gearshift_provider_call_seconds_count",
                                              {"provider": "fake", "op": "create"})
    assert count == 2
    text = generate_latest(metrics.registry).decode()
    assert 'gearshift_provider_calls_total{op="create",outcome="ok",provider="fake"} 1.0' in text


async def test_time_to_ready_is_measured_by_the_executor_and_reaches_placement() -> None:
    clock = ManualClock()
    metrics = Metrics()
    policies = policy_set(pool())
    guard = GuardedProvider(Scripted(ok), clock=clock, metrics=metrics, settings=SETTINGS,
                            boot_time=480.0)
    guard.name = "rack-a"
    assert guard.status().boot_time == 480.0  # the configured value until measured
    journal = MemoryJournal()
    executor = Executor(providers={"rack-a": guard}, platform=NullPlatform(), journal=journal,
                        clock=clock, metrics=metrics)
    plan = Plan(at=clock.now(), actions=(ScaleOut(pool="small", provider="rack-a",
                                                  blueprint="small-bm", count=2, reason="t"),),
                pools={}, state=PlannerState())
    empty = FleetSnapshot(taken_at=clock.now(), nodes=())
    await executor.execute(plan, empty, policies)
    names = [op.identity for op in await journal.open_operations()]
    assert len(names) == 2

    await clock.advance(100)
    await executor.progress(empty, is_fresh=lambda identity: identity == names[0])
    assert guard.status().boot_time == 100.0  # the first measurement replaces the guess
    await clock.advance(50)
    await executor.progress(empty, is_fresh=lambda identity: True)
    assert guard.status().boot_time == pytest.approx(0.8 * 100 + 0.2 * 150)
    assert metrics.registry.get_sample_value("gearshift_provider_time_to_ready_seconds",
                                             {"provider": "rack-a"}) == pytest.approx(110.0)
    assert await journal.open_operations() == []


async def test_stop_and_start_are_retried_counted_and_keep_the_breaker_honest() -> None:
    provider = Scripted(fail(TransientError), ok)
    metrics = Metrics()
    guard = GuardedProvider(provider, clock=InstantClock(), metrics=metrics, settings=SETTINGS)
    await guard.stop("m1")  # one transient failure, then done
    assert provider.calls == 2
    assert counted(metrics, "transient", op="stop") == 1
    assert counted(metrics, "ok", op="stop") == 1
    await guard.start("m1")
    assert counted(metrics, "ok", op="start") == 1
    assert guard.failures == 0 and guard.breaker() == "closed"


@pytest.mark.parametrize("op", ["stop", "start"])
async def test_stopping_an_unknown_machine_is_not_found_and_leaves_the_breaker_closed(
        op: str) -> None:
    # unlike destroy (gone is what was wanted), there is nothing to stop or resume: the
    # caller is told; but one stale id says nothing about the provider's health
    provider = Scripted(fail(NotFound))
    metrics = Metrics()
    guard = GuardedProvider(provider, clock=InstantClock(), metrics=metrics, settings=SETTINGS)
    with pytest.raises(NotFound):
        await (guard.stop if op == "stop" else guard.start)("gone")
    assert provider.calls == 1  # not retried
    assert counted(metrics, "not_found", op=op) == 1
    assert guard.breaker() == "closed" and guard.status().available
