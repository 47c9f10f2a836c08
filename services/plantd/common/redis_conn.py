"""How plantd services connect to Redis: one recipe for the state and identity stores.

A client from :func:`client_for` decodes replies to ``str``, gives up on a reply after
``socket_timeout``, and never retries on its own (a retried pipeline or script could apply a
write twice; each store decides what a connection error means). An idle pooled connection is
PINGed before use, so a Redis restart during a quiet spell costs no failed request. The
password comes from the URL, ``password`` or ``password_file`` (the file wins; it is read when
the client is made); ``ca_file`` is the CA that signed a ``rediss://`` server's certificate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

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


def redact_url(url: str) -> str:
    """``redis://user:secret@host`` -> ``redis://user:***@host``: URLs go to logs and /readyz."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


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
    if target.ca_file is not None and target.url.startswith("rediss://"):
        kwargs["ssl_ca_certs"] = str(target.ca_file)
    try:
        return aioredis.Redis.from_url(target.url, **kwargs)
    except ValueError as exc:
        raise RedisSetupError(f"bad Redis URL {redact_url(target.url)}: {exc}") from exc
