"""Rate limits shared by every gateway replica: the same token buckets, kept in Redis.

One Lua script per call takes a token from each of the call's buckets (the subject's and the
source's, :func:`plantd.gateway.ratelimit.plan`) or from none, atomically, on Redis's clock
(``TIME``), so N replicas give a caller the configured rate, not N times it. A bucket is a
hash (``tokens``, ``stamp`` in microseconds) that expires once it would be full again, so
Redis holds only the callers of the last few seconds. All keys carry one hash tag (``{rl}``):
on a Redis Cluster the script's keys share a slot.

Redis is a dependency of the limit, not of the API: when it does not answer within
``timeout_s`` the call is decided by this replica's own buckets (:class:`LocalLimiter`, the
limits of one process, as without Redis) and counted in
``plantd_gateway_rate_limit_fallbacks_total``; Redis is then left alone for ``retry_s``, so an
outage costs one timeout per period, not one per call. A lost limit is a smaller harm than a
gateway that refuses every call while Redis restarts (Envoy's and Kong's default too).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Protocol

from prometheus_client import CollectorRegistry, Counter
from redis import exceptions as rexc

from plantd.gateway.calls import Decision, RouteClass
from plantd.gateway.ratelimit import LocalLimiter, Policies, plan, refused_by

log = logging.getLogger("plantd.gateway.ratelimit")

# KEYS: the buckets; ARGV: rate, burst of each (per second, tokens). Returns {1} (taken from
# all) or {0, microseconds until the emptiest has a token, index of that bucket}. Numbers go
# to Redis as shortest round-trip decimals (no precision is lost on the stamps).
TAKE_ALL: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local have = {}
local worst, worst_i = 0, 0
for i = 1, #KEYS do
  local rate = tonumber(ARGV[2 * i - 1]) / 1000000
  local burst = tonumber(ARGV[2 * i])
  local h = redis.call('HMGET', KEYS[i], 'tokens', 'stamp')
  local tokens, stamp = tonumber(h[1]), tonumber(h[2])
  if tokens == nil or stamp == nil then
    tokens, stamp = burst, now
  end
  if now > stamp then
    tokens = math.min(burst, tokens + (now - stamp) * rate)
  end
  have[i] = tokens
  if tokens < 1 then
    local wait = (1 - tokens) / rate
    if wait > worst then
      worst, worst_i = wait, i
    end
  end
end
if worst_i > 0 then
  return {0, math.ceil(worst), worst_i - 1}
end
for i = 1, #KEYS do
  local rate = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  redis.call('HSET', KEYS[i], 'tokens', have[i] - 1, 'stamp', now)
  redis.call('PEXPIRE', KEYS[i], math.ceil(burst / rate * 1000) + 1000)
end
return {1}
"""
MAX_KEY_PART: Final = 128  # longer subjects are hashed: a key's size is bounded


class Script(Protocol):
    async def __call__(self, keys: Sequence[str], args: Sequence[float]) -> Any: ...


def bucket_key(prefix: str, kind: str, route: RouteClass, key: str) -> str:
    """``<prefix>{rl}:<kind>:<route>:<key>``, the key hashed when it is long."""
    if len(key) > MAX_KEY_PART:
        key = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    return f"{prefix}{{rl}}:{kind}:{route.value}:{key}"


class RedisLimiter:
    """The gateway's ``Limiter`` with buckets in Redis; ``fallback`` decides while Redis
    does not answer."""

    def __init__(
        self,
        script: Script,
        policies: Policies,
        fallback: LocalLimiter,
        *,
        prefix: str,
        timeout_s: float = 0.25,
        retry_s: float = 1.0,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
        close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.script = script
        self.policies = policies
        self.fallback = fallback
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.clock = clock
        self._skip_until = 0.0
        self._close = close
        self.fallbacks = Counter(
            "plantd_gateway_rate_limit_fallbacks",
            "Calls rate-limited by this replica alone because Redis did not answer",
            registry=registry,
        )

    async def check(self, subject: str | None, source: str, route: RouteClass) -> Decision:
        if self.clock() < self._skip_until:
            return self._local(subject, source, route)
        wanted = plan(self.policies, subject, source, route)
        keys = [bucket_key(self.prefix, kind, route, key) for kind, key, _ in wanted]
        args = [x for _, _, policy in wanted for x in (policy.rate, policy.burst)]
        try:
            async with asyncio.timeout(self.timeout_s):
                reply = await self.script(keys=keys, args=args)
        except (rexc.RedisError, OSError, TimeoutError) as exc:
            self._skip_until = self.clock() + self.retry_s
            log.warning(
                "rate limits: Redis did not answer (%s); this replica limits alone for %.0f s",
                type(exc).__name__,
                self.retry_s,
            )
            return self._local(subject, source, route)
        if int(reply[0]) == 1:
            return Decision(True)
        return Decision(False, int(reply[1]) / 1_000_000, refused_by(wanted[int(reply[2])][0]))

    async def close(self) -> None:
        """Close the Redis connection (the gateway is stopping)."""
        if self._close is not None:
            with contextlib.suppress(Exception):
                await self._close()

    def _local(self, subject: str | None, source: str, route: RouteClass) -> Decision:
        self.fallbacks.inc()
        return self.fallback.decide(subject, source, route)
