"""Rate limits for the gateway: token buckets (Traefik/Envoy semantics) per caller.

``rate`` tokens per second refill up to ``burst``; a bucket starts full. Time is passed in,
so the core is testable with a fake clock.

:class:`LocalLimiter` (the gateway's ``Limiter``) keeps, per route class, one bucket per token
subject and one per source address (IPv6 by /64); a call takes a token from both or from
neither. Logins are limited per source only (there is no subject yet) with their own strict
policy. Buckets live in an LRU bounded by count (``max_buckets``; ~0.3 KB each, measured with
tracemalloc in the unit test), so a flood of new sources costs bounded memory; an evicted
bucket comes back full. Limits are per gateway process: with N replicas a caller gets N times
the rate (as Dapr's and Kong's ``local`` policies; docs/api.md "Limits").
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from plantd.gateway.calls import Decision, RouteClass


@dataclass(slots=True)
class Bucket:
    """One token bucket; ``tokens`` as of ``stamp`` (seconds, any monotonic clock)."""

    rate: float
    burst: float
    tokens: float
    stamp: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> Bucket:
        """A new bucket, full, as Traefik and Envoy start them."""
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        return cls(rate, burst, burst, now)

    def refill(self, now: float) -> None:
        """Add the tokens earned since the last stamp (a clock going back earns none)."""
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def retry_after(self, now: float) -> float:
        """Seconds until one token is available (0 if one is there now)."""
        self.refill(now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def take(self, now: float) -> bool:
        """Take one token if there is one."""
        self.refill(now)
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


def take_both(a: Bucket, b: Bucket, now: float) -> tuple[bool, float, int]:
    """Take one token from both buckets or from neither (no leak).

    Returns (allowed, retry_after_s, index of the bucket that said no: 0, 1, or -1).
    """
    ra, rb = a.retry_after(now), b.retry_after(now)
    if ra == 0 and rb == 0:
        a.take(now)
        b.take(now)
        return True, 0.0, -1
    return False, max(ra, rb), 0 if ra >= rb else 1


def source_key(address: str) -> str:
    """The bucket key of a source: IPv4 as is, IPv6 by its /64 (one host owns a whole /64)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


@dataclass(frozen=True, slots=True)
class Policy:
    """``rate`` calls per second sustained, ``burst`` at once."""

    rate: float
    burst: float


@dataclass(frozen=True, slots=True)
class Policies:
    """The policies of one gateway: per subject and per source for each route class, and the
    stricter per-source policy of logins."""

    subject: dict[RouteClass, Policy]
    source: dict[RouteClass, Policy]
    login: Policy


# Bucket kinds (separate key spaces); a refusal names "sub" or "source" (refused_by).
BY_SUBJECT = "sub"
BY_SOURCE = "source"
BY_LOGIN_SOURCE = "login"


def refused_by(kind: str) -> str:
    """The ``limit`` a refusal by this kind of bucket names (metrics, the error's metadata)."""
    return BY_SUBJECT if kind == BY_SUBJECT else BY_SOURCE


def plan(
    policies: Policies, subject: str | None, source: str, route: RouteClass
) -> list[tuple[str, str, Policy]]:
    """The buckets one call takes a token from, as (kind, key, policy): a login's source
    bucket; else the subject's and the source's (both or neither), or the source's alone
    with ``--auth off`` (the source is all we know). The same for every limiter."""
    src = source_key(source)
    if route is RouteClass.LOGIN:
        return [(BY_LOGIN_SOURCE, src, policies.login)]
    by_source = (BY_SOURCE, src, policies.source[route])
    if subject is None:
        return [by_source]
    return [(BY_SUBJECT, subject, policies.subject[route]), by_source]


class LocalLimiter:
    """The gateway's in-process limiter (``plantd.gateway.calls.Limiter``)."""

    def __init__(
        self,
        policies: Policies,
        *,
        max_buckets: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policies = policies
        self.max_buckets = max_buckets
        self.clock = clock
        self._buckets: OrderedDict[tuple[str, str, str], Bucket] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def _bucket(self, kind: str, route: RouteClass, key: str, policy: Policy, now: float) -> Bucket:
        ident = (kind, route.value, key)
        bucket = self._buckets.get(ident)
        if bucket is None:
            if len(self._buckets) >= self.max_buckets:
                self._buckets.popitem(last=False)  # the least recently used
                self.evicted += 1
            bucket = self._buckets[ident] = Bucket.full(policy.rate, policy.burst, now)
        else:
            self._buckets.move_to_end(ident)
        return bucket

    def decide(self, subject: str | None, source: str, route: RouteClass) -> Decision:
        """The same as :meth:`check`, synchronously (the local limiter never waits)."""
        now = self.clock()
        wanted = plan(self.policies, subject, source, route)
        buckets = [self._bucket(kind, route, key, policy, now) for kind, key, policy in wanted]
        if len(buckets) == 1:
            if buckets[0].take(now):
                return Decision(True)
            return Decision(False, buckets[0].retry_after(now), refused_by(wanted[0][0]))
        allowed, retry, which = take_both(buckets[0], buckets[1], now)
        if allowed:
            return Decision(True)
        return Decision(False, retry, refused_by(wanted[which][0]))

    async def check(self, subject: str | None, source: str, route: RouteClass) -> Decision:
        return self.decide(subject, source, route)
