"""plantd.common.breaker: the circuit breaker's states, pauses and bounds (no I/O)."""

from __future__ import annotations

import pytest

from plantd.common.breaker import BreakerPolicy, Breakers, BreakerState, CircuitBreaker

POLICY = BreakerPolicy(failures=3, base_s=1.0, cap_s=8.0)


def breaker(jitter: float = 1.0) -> CircuitBreaker:
    return CircuitBreaker(POLICY, rng=lambda: jitter)  # 1.0: the whole pause; 0.0: half


def open_it(b: CircuitBreaker, now: float) -> None:
    for _ in range(POLICY.failures):
        assert b.admit(now).allowed
        b.failure(now)
    assert b.state is BreakerState.OPEN


def test_failures_in_a_row_open_it_and_a_success_between_resets_the_count() -> None:
    b = breaker()
    b.failure(0.0)
    b.failure(0.0)
    b.success()
    b.failure(0.0)
    b.failure(0.0)
    assert b.state is BreakerState.CLOSED
    assert b.failure(0.0) is True
    assert b.state is BreakerState.OPEN


def test_open_refuses_with_the_time_left_then_lets_one_probe_through() -> None:
    b = breaker()
    open_it(b, 10.0)
    refused = b.admit(10.4)
    assert not refused.allowed and refused.retry_after_s == pytest.approx(0.6)
    probe = b.admit(11.0)
    assert probe.allowed and probe.probe
    assert b.state is BreakerState.HALF_OPEN
    assert not b.admit(11.1).allowed  # one probe at a time
    b.success()
    assert b.state is BreakerState.CLOSED and b.admit(11.2) == b.admit(11.2)


def test_a_failed_probe_reopens_with_a_doubled_pause_up_to_the_cap() -> None:
    b = breaker()
    open_it(b, 0.0)
    now, pauses = 0.0, []
    for _ in range(6):
        opened_at = now
        while not b.admit(now).allowed:
            now += 0.5
        pauses.append(now - opened_at)
        b.failure(now, probe=True)
    assert pauses == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    b.success()
    open_it(b, now)  # after a success the pause starts again from base_s
    assert not b.admit(now + 0.9).allowed and b.admit(now + 1.0).allowed


def test_jitter_takes_each_pause_between_half_and_all_of_it() -> None:
    b = breaker(jitter=0.0)
    open_it(b, 0.0)
    assert not b.admit(0.49).allowed
    assert b.admit(0.5).allowed


def test_only_the_probe_decides_and_an_abandoned_probe_frees_the_slot() -> None:
    b = breaker()
    open_it(b, 0.0)
    assert b.failure(0.5) is False  # in flight before it opened: the pause stands
    probe = b.admit(1.0)
    assert b.failure(1.0, probe=False) is False  # not the probe
    assert b.state is BreakerState.HALF_OPEN
    b.abandon(probe.probe)  # the probe's caller went away
    assert b.admit(1.1).probe


def test_zero_failures_means_never_open() -> None:
    b = CircuitBreaker(BreakerPolicy(failures=0))
    for _ in range(100):
        b.failure(0.0)
    assert b.admit(0.0).allowed and b.state is BreakerState.CLOSED


def test_breakers_are_bounded_and_evict_closed_ones_first() -> None:
    evicted: list[str] = []
    reg = Breakers(POLICY, max_names=2, rng=lambda: 1.0, on_evict=evicted.append)
    open_it(reg.get("down"), 0.0)
    reg.get("a")
    reg.get("b")  # full: "a" (closed) goes, "down" (open) stays
    assert evicted == ["a"]
    assert reg.state("down") is BreakerState.OPEN
    for n in range(100):  # a caller naming a new service each time
        reg.get(f"junk-{n}")
    assert len(list(reg.items())) == 2
    assert reg.state("never-seen") is BreakerState.CLOSED


@pytest.mark.parametrize(
    "kwargs", [{"failures": -1}, {"base_s": 0.0}, {"base_s": 2.0, "cap_s": 1.0}]
)
def test_policy_refuses_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BreakerPolicy(**kwargs)  # type: ignore[arg-type]
