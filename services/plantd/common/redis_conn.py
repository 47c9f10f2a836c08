"""How plantd services connect to Redis: one recipe for the state and identity stores.

A client from :func:`client_for` decodes replies to ``str``, gives up on a reply after
``socket_timeout``, and never retries on its own (a retried pipeline or script could apply a
write twice; each store decides what a connection error means). An idle pooled connection is
PINGed before use, so a Redis restart during a quiet spell costs no failed request. The
password comes from the URL, ``password`` or ``password_file`` (the file wins; it is read when
the client is made); ``ca_file`` is the CA that signed a ``rediss://`` server's certificate.

A ``redis+sentinel://`` URL (``rediss+sentinel://`` for TLS) names Redis Sentinels and the
master they watch instead of one server: every new connection asks a Sentinel where the
primary is, so after a failover the store's reconnect lands on the new primary, and a demoted
primary's ``READONLY`` reply counts as a lost connection. The password (and TLS settings) apply
to the Sentinels as well as to the data nodes, as in Bitnami's chart (Sentinels that can order
a failover should not be open); ``?sentinel_auth=no`` is for Sentinels that take none.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from plantd.common.redis_url import SENTINEL_SCHEMES, parse_sentinel_url, redact_url

HEALTH_CHECK_S = 5  # PING a connection idle this long before using it (never under load)


class RedisSetupError(Exception):
    """The client cannot be made (unreadable password file, malformed URL); says which."""


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where a store's Redis is and how to reach it (no secret in ``repr`` but the URL's)."""

    url: str
    password: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    socket_timeout: float = 2.0
    connect_timeout: float = 1.0

    def __repr__(self) -> str:
        return f"RedisTarget({redact_url(self.url)!r})"


def client_for(target: RedisTarget) -> aioredis.Redis:
    """A (not yet connected) client for ``target``; :class:`RedisSetupError` if it cannot be."""
    kwargs: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": target.socket_timeout,
        "socket_connect_timeout": target.connect_timeout,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": HEALTH_CHECK_S,
    }
    if target.password is not None:
        kwargs["password"] = target.password
    if target.password_file is not None:
        try:
            kwargs["password"] = target.password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise RedisSetupError(
                f"cannot read the Redis password file {target.password_file}: {exc.strerror}"
            ) from exc
    if target.url.startswith(SENTINEL_SCHEMES):
        return _sentinel_client(target, kwargs)
    if target.ca_file is not None and target.url.startswith("rediss://"):
        kwargs["ssl_ca_certs"] = str(target.ca_file)
    try:
        return aioredis.Redis.from_url(target.url, **kwargs)
    except ValueError as exc:
        raise RedisSetupError(f"bad Redis URL {redact_url(target.url)}: {exc}") from exc


def _sentinel_client(target: RedisTarget, kwargs: dict[str, Any]) -> aioredis.Redis:
    """A client whose every new connection goes to the primary the Sentinels name."""
    try:
        parsed = parse_sentinel_url(target.url)
    except ValueError as exc:
        raise RedisSetupError(f"bad Redis URL {redact_url(target.url)}: {exc}") from exc
    if parsed.password is not None:
        kwargs.setdefault("password", parsed.password)
    if parsed.username is not None:
        kwargs["username"] = parsed.username
    if parsed.tls:
        kwargs["ssl"] = True
        if target.ca_file is not None:
            kwargs["ssl_ca_certs"] = str(target.ca_file)
    # The Sentinels get the same timeouts, TLS and (unless ?sentinel_auth=no) credentials,
    # and no retries of their own.
    shared = ("retry", "password", "username") if parsed.sentinel_auth else ("retry",)
    sentinel_kwargs = {
        k: v for k, v in kwargs.items() if k.startswith(("socket_", "ssl")) or k in shared
    }
    sentinel = Sentinel(list(parsed.sentinels), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
    client: aioredis.Redis = sentinel.master_for(parsed.master, db=parsed.db, **kwargs)
    return client
