"""plantd.gateway.guarded_bus: which outcomes count against a service's breaker (a scripted
bus client and clock; real processes: tests/integration/gateway/test_gateway_circuit.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry

from plantd.api.errors import GatewayCode
from plantd.common.breaker import BreakerPolicy, Breakers, BreakerState
from plantd.gateway.guarded_bus import BreakerMetrics, GuardedBus
from plantd.gateway.state_map import RpcFailure
from plantd.mdp.client import StreamPart
from plantd.mdp.errors import BrokerError, ErrorCode, RequestTimeout

SVC = "org.plantd.State"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Scripted:
    """Each request takes ``took`` seconds of the fake clock, then raises or answers."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.outcome: BaseException | None = None
        self.took = 0.0
        self.sent: list[str] = []

    async def request(
        self,
        service: bytes | str,
        *body: bytes | str,
        timeout: float | None = None,  # noqa: ASYNC109 - the protocol's
        idempotent: bool = False,
    ) -> list[bytes]:
        self.sent.append(str(service))
        self.clock.now += self.took
        if self.outcome is not None:
            raise self.outcome
        return [b"ok"]

    async def stream_parts(
        self,
        service: bytes | str,
        *body: bytes | str,
        timeout: float | None = None,  # noqa: ASYNC109 - the protocol's
    ) -> AsyncIterator[StreamPart]:
        self.sent.append(str(service))
        self.clock.now += self.took
        if self.outcome is not None:
            raise self.outcome
        yield StreamPart([b"part"], False)
        yield StreamPart([b"end"], True)


def make(failures: int = 2) -> tuple[GuardedBus, Scripted, Clock, CollectorRegistry]:
    clock = Clock()
    client = Scripted(clock)
    registry = CollectorRegistry()
    metrics = BreakerMetrics(registry)
    breakers = Breakers(
        BreakerPolicy(failures=failures, base_s=1.0),
        rng=lambda: 1.0,
        on_evict=metrics.forget,
        on_create=metrics.closed,
    )
    bus = GuardedBus(client, breakers, min_timeout_s=1.0, metrics=metrics, clock=clock)
    return bus, client, clock, registry


async def fail(bus: GuardedBus, exc: type[BaseException] | BaseException) -> None:
    with pytest.raises(exc if isinstance(exc, type) else type(exc)):
        await bus.request(SVC, "x", timeout=2.0)


async def test_unanswered_calls_open_it_and_then_nothing_is_sent() -> None:
    bus, client, clock, registry = make()
    client.outcome, client.took = RequestTimeout(SVC, 2.0, 1), 2.0
    await fail(bus, RequestTimeout)
    await fail(bus, RequestTimeout)
    assert bus.breakers.state(SVC) is BreakerState.OPEN and not bus.ready(SVC)
    sent = len(client.sent)
    with pytest.raises(RpcFailure) as refused:
        await bus.request(SVC, "x", timeout=2.0)
    assert len(client.sent) == sent  # refused without a bus request
    assert refused.value.code == GatewayCode.CIRCUIT_OPEN
    assert refused.value.metadata["retry_after_s"] == "1"
    labels = {"service": SVC}
    assert registry.get_sample_value("plantd_gateway_circuit_state", labels) == 2
    assert registry.get_sample_value("plantd_gateway_circuit_opened_total", labels) == 1
    assert registry.get_sample_value("plantd_gateway_circuit_refused_total", labels) == 1
    clock.now += 1.0  # the pause is over: the next call is the probe, and it works
    assert bus.ready(SVC)  # ready again before the probe: an unready pod would get none
    client.outcome = None
    assert await bus.request(SVC, "x", timeout=2.0) == [b"ok"]
    assert bus.ready(SVC)
    assert registry.get_sample_value("plantd_gateway_circuit_state", labels) == 0


async def test_a_service_that_answers_with_an_error_is_up() -> None:
    bus, client, _, _ = make()
    client.outcome = BrokerError(ErrorCode.HANDLER_ERROR, "KeyError", SVC)
    for _ in range(5):
        await fail(bus, BrokerError)
    assert bus.breakers.state(SVC) is BreakerState.CLOSED


@pytest.mark.parametrize(
    "code", [ErrorCode.BROKER_LOST, ErrorCode.SERVICE_UNAVAILABLE, ErrorCode.WORKER_LOST]
)
async def test_errors_that_mean_the_service_is_not_there_count(code: str) -> None:
    bus, client, _, _ = make()
    client.outcome = BrokerError(code, "gone", SVC)
    await fail(bus, BrokerError)
    await fail(bus, BrokerError)
    assert bus.breakers.state(SVC) is BreakerState.OPEN


async def test_short_waits_never_count_whoever_gave_up() -> None:
    """A caller with a tiny deadline must not open the breaker for everyone."""
    bus, client, _, _ = make()
    client.took = 0.01
    for outcome in (RequestTimeout(SVC, 0.01, 1), asyncio.CancelledError()):
        client.outcome = outcome
        for _ in range(3):
            await fail(bus, type(outcome))
    assert bus.breakers.state(SVC) is BreakerState.CLOSED


async def test_a_caller_giving_up_after_a_long_wait_counts() -> None:
    """gRPC cancels a call at its deadline, usually just before the bus client times out."""
    bus, client, _, _ = make()
    client.outcome, client.took = asyncio.CancelledError(), 1.5
    await fail(bus, asyncio.CancelledError)
    await fail(bus, asyncio.CancelledError)
    assert bus.breakers.state(SVC) is BreakerState.OPEN


async def test_mmi_goes_around_the_breakers() -> None:
    bus, client, _, _ = make()
    client.outcome, client.took = RequestTimeout("mmi.service", 2.0, 1), 2.0
    for _ in range(5):
        with pytest.raises(RequestTimeout):
            await bus.request("mmi.service", SVC, timeout=2.0)
    assert list(bus.breakers.items()) == []


async def test_a_stream_is_judged_by_its_first_part() -> None:
    bus, client, _, _ = make(failures=1)
    parts = [p async for p in bus.stream_parts("some.module", "x", timeout=2.0)]
    assert [p.final for p in parts] == [False, True]
    client.outcome, client.took = BrokerError(ErrorCode.SERVICE_UNAVAILABLE, "no", ""), 0.0
    with pytest.raises(BrokerError):
        async for _ in bus.stream_parts("some.module", "x", timeout=2.0):
            pass
    assert bus.breakers.state("some.module") is BreakerState.OPEN
    with pytest.raises(RpcFailure):
        async for _ in bus.stream_parts("some.module", "x", timeout=2.0):
            pass


async def test_an_evicted_breaker_takes_its_series_along() -> None:
    clock = Clock()
    registry = CollectorRegistry()
    metrics = BreakerMetrics(registry)
    breakers = Breakers(
        BreakerPolicy(), max_names=1, on_evict=metrics.forget, on_create=metrics.closed
    )
    bus = GuardedBus(Scripted(clock), breakers, min_timeout_s=1.0, metrics=metrics, clock=clock)
    await bus.request("a.one", timeout=1.0)
    await bus.request("b.two", timeout=1.0)
    assert registry.get_sample_value("plantd_gateway_circuit_state", {"service": "a.one"}) is None
    assert registry.get_sample_value("plantd_gateway_circuit_state", {"service": "b.two"}) == 0
