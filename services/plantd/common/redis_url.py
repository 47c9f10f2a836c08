"""Redis URLs: the Sentinel form's grammar and redaction (pure; settings validate with it
without importing the Redis client)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit, urlunsplit

SENTINEL_SCHEMES: Final = ("redis+sentinel://", "rediss+sentinel://")
DEFAULT_SENTINEL_PORT: Final = 26379


def redact_url(url: str) -> str:
    """``redis://user:secret@host`` -> ``redis://user:***@host``: URLs go to logs and /readyz."""
    if url.startswith(SENTINEL_SCHEMES):  # several hosts: urlsplit cannot parse the netloc
        head, at, hosts = url.rpartition("@")
        scheme, _, auth = head.partition("://")
        user, colon, _secret = auth.partition(":")
        return f"{scheme}://{user}:***@{hosts}" if at and colon else url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


@dataclass(frozen=True, slots=True)
class SentinelUrl:
    """``redis+sentinel://[USER:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/MASTER[/DB]``,
    then optionally ``?sentinel_auth=no`` for Sentinels that take no password (the password
    then goes to the data nodes only; by default the Sentinels get it too)."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    tls: bool = False
    username: str | None = None
    password: str | None = None
    sentinel_auth: bool = True


def parse_sentinel_url(url: str) -> SentinelUrl:
    """The parts of a Sentinel URL; :class:`ValueError` saying what is wrong."""
    scheme = next((p for p in SENTINEL_SCHEMES if url.startswith(p)), None)
    if scheme is None:
        raise ValueError(f"a Sentinel URL starts with {' or '.join(SENTINEL_SCHEMES)}")
    rest, _, query = url[len(scheme) :].partition("?")
    sentinel_auth = True
    for pair in filter(None, query.split("&")):
        name, _, value = pair.partition("=")
        if name != "sentinel_auth" or value not in ("yes", "no"):
            raise ValueError(f"unknown URL option {pair!r}: the one option is sentinel_auth=yes|no")
        sentinel_auth = value == "yes"
    netloc, _, path = rest.partition("/")
    username = password = None
    if "@" in netloc:
        auth, _, netloc = netloc.rpartition("@")
        user, colon, secret = auth.partition(":")
        username = user or None
        password = secret if colon else None
    sentinels: list[tuple[str, int]] = []
    for part in netloc.split(","):
        host, colon, port = part.rpartition(":") if ":" in part else (part, "", "")
        if not host or (colon and not port.isdigit()) or (port and not 0 < int(port) < 65536):
            raise ValueError(f"bad Sentinel address {part!r}: use HOST or HOST:PORT")
        sentinels.append((host, int(port) if port else DEFAULT_SENTINEL_PORT))
    master, _, db = path.partition("/")
    if not master:
        raise ValueError("name the master the Sentinels watch: .../MASTER[/DB]")
    if db and not db.isdigit():
        raise ValueError(f"bad database number {db!r}")
    return SentinelUrl(
        tuple(sentinels),
        master,
        int(db or 0),
        scheme.startswith("rediss"),
        username,
        password,
        sentinel_auth,
    )
