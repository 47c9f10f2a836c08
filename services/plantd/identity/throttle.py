"""Brute-force arithmetic (pure): token buckets and per-account exponential backoff.

The store applies these inside one transaction (SQLite ``BEGIN IMMEDIATE``; a Redis store does it
in one Lua script), so replicas sharing a store share the buckets and counters exactly: parallel
attempts cannot slip past a limit (Zitadel GHSA-7h8m-vrxx-vr4m was that race).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Bucket:
    """A token bucket: ``capacity`` tokens, refilled at ``rate`` per second."""

    capacity: float
    rate: float


def take(
    bucket: Bucket, tokens: float, updated: float, now: float, cost: float = 1.0
) -> tuple[bool, float, float]:
    """Try to take ``cost``; returns (allowed, tokens left, seconds until ``cost`` is available).

    ``tokens``/``updated`` are the stored state (a new bucket: capacity, any time)."""
    elapsed = max(0.0, now - updated)
    level = min(bucket.capacity, tokens + elapsed * bucket.rate)
    if level >= cost:
        return True, level - cost, 0.0
    return False, level, (cost - level) / bucket.rate


@dataclass(frozen=True, slots=True)
class Backoff:
    free_failures: int = 3  # failures without any delay (typos)
    base_s: float = 1.0
    max_s: float = 300.0
    max_failures: int = 100  # NIST 800-63B: at most 100 consecutive failures

    def delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` consecutive failures before the next attempt."""
        extra = failures - self.free_failures
        if extra < 0:
            return 0.0
        return float(min(self.max_s, self.base_s * 2 ** min(extra, 30)))

    def wait(self, failures: int, last_failure: float, now: float, *, critical: bool) -> float:
        """Seconds until an attempt is allowed (0 = now); inf when the account is locked.

        Operator-critical accounts are never locked (a lockout would be a denial of service
        against the control room): they stay at the maximum backoff instead."""
        if failures >= self.max_failures and not critical:
            return float("inf")
        return max(0.0, last_failure + self.delay(failures) - now)
