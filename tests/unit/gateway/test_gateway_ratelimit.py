"""Token buckets and the local limiter, with a fake clock: burst, refill, both-or-none,
isolation by subject and source, logins per source, IPv6 by /64, bounded memory."""

from __future__ import annotations

import tracemalloc

import pytest

from plantd.gateway.calls import RouteClass
from plantd.gateway.ratelimit import Bucket, LocalLimiter, Policies, Policy, take_both


def test_burst_then_refill() -> None:
    b = Bucket.full(rate=5, burst=10, now=0.0)
    assert all(b.take(0.0) for _ in range(10))
    assert not b.take(0.0)
    assert b.retry_after(0.0) == pytest.approx(0.2)
    assert b.take(0.2)
    assert not b.take(0.2)


def test_refill_caps_at_burst() -> None:
    b = Bucket.full(rate=1, burst=2, now=0.0)
    b.refill(100.0)
    assert b.tokens == 2


def test_both_or_none() -> None:
    a = Bucket.full(rate=1, burst=3, now=0.0)
    b = Bucket.full(rate=1, burst=1, now=0.0)
    assert take_both(a, b, 0.0)[0]
    allowed, retry, which = take_both(a, b, 0.0)
    assert not allowed and which == 1 and retry == pytest.approx(1.0)
    assert a.tokens == 2  # a gave nothing when b said no


def test_bad_settings_refused() -> None:
    with pytest.raises(ValueError):
        Bucket.full(rate=0, burst=1, now=0.0)


def test_ipv6_by_64() -> None:
    from plantd.gateway.ratelimit import source_key

    assert source_key("2001:db8:1:2::1") == source_key("2001:db8:1:2:ffff::9")
    assert source_key("2001:db8:1:3::1") != source_key("2001:db8:1:2::1")
    assert source_key("10.0.0.1") == "10.0.0.1"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def limiter(clock: Clock, max_buckets: int = 1000) -> LocalLimiter:
    per_route = {route: Policy(1.0, 2.0) for route in RouteClass}
    return LocalLimiter(
        Policies(
            subject=per_route,
            source={route: Policy(2.0, 3.0) for route in RouteClass},
            login=Policy(0.5, 1.0),
        ),
        max_buckets=max_buckets,
        clock=clock,
    )


def test_subjects_are_isolated_and_the_source_caps_them_together() -> None:
    clock = Clock()
    lim = limiter(clock)
    ok = [lim.decide("alice", "10.0.0.1", RouteClass.READ).allowed for _ in range(3)]
    assert ok == [True, True, False]  # alice's burst is 2
    no = lim.decide("alice", "10.0.0.1", RouteClass.READ)
    assert no.limit == "sub" and no.retry_after_s == pytest.approx(1.0)
    assert lim.decide("bob", "10.0.0.1", RouteClass.READ).allowed  # the source's 3rd token
    shared = lim.decide("carol", "10.0.0.1", RouteClass.READ)
    assert not shared.allowed and shared.limit == "source"  # one address: 3 at once
    assert lim.decide("carol", "10.0.0.2", RouteClass.READ).allowed  # another address
    assert lim.decide("alice", "10.0.0.1", RouteClass.WRITE).allowed  # its own class
    clock.now = 1.0
    assert lim.decide("alice", "10.0.0.1", RouteClass.READ).allowed  # refilled


def test_a_refused_call_takes_nothing_from_the_other_bucket() -> None:
    clock = Clock()
    lim = limiter(clock)
    for _ in range(2):
        assert lim.decide("alice", "10.0.0.1", RouteClass.READ).allowed
    for _ in range(5):
        assert not lim.decide("alice", "10.0.0.1", RouteClass.READ).allowed
    assert lim.decide("bob", "10.0.0.1", RouteClass.READ).allowed  # the source kept its token


def test_logins_are_limited_per_source_and_ipv6_by_64() -> None:
    clock = Clock()
    lim = limiter(clock)
    assert lim.decide(None, "2001:db8::1", RouteClass.LOGIN).allowed
    refused = lim.decide(None, "2001:db8::ffff", RouteClass.LOGIN)  # the same /64
    assert not refused.allowed and refused.limit == "source"
    assert refused.retry_after_s == pytest.approx(2.0)
    assert lim.decide(None, "2001:db8:0:1::1", RouteClass.LOGIN).allowed  # another /64


def test_buckets_are_bounded_in_count_and_bytes() -> None:
    clock = Clock()
    lim = limiter(clock, max_buckets=500)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(5000):
        lim.decide(f"user{i}", f"10.{i // 250}.{i % 250}.1", RouteClass.READ)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(lim) == 500 and lim.evicted == 2 * 5000 - 500
    assert grown / len(lim) < 600  # bytes per bucket, key included (~0.3 KB measured)
