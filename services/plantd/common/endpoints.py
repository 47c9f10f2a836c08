"""ZeroMQ endpoint grammar: the one check every setting, client and worker uses.

Pure (standard library only). Stricter than libzmq where libzmq is lax: its connect accepts
``tcp://[::1`` or ``tcp://host:99999`` and then never connects, which a caller can only see as a
timeout. ``bind=True`` also allows the ``*`` host (all interfaces).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final, NamedTuple


class InvalidEndpoint(ValueError):
    """An endpoint that cannot be used as written; ``reason`` says why."""

    def __init__(self, endpoint: str, reason: str) -> None:
        shown = endpoint if len(endpoint) <= 200 else endpoint[:200] + "..."
        super().__init__(
            f"invalid endpoint {shown!r}: {reason}; expected tcp://HOST:PORT "
            "(e.g. tcp://127.0.0.1:9797), ipc://PATH or inproc://NAME"
        )
        self.endpoint = endpoint
        self.reason = reason


_HOSTNAME: Final = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?")
MAX_ENDPOINT_CHARS: Final = 1024  # ipc paths are ~108 bytes at most, DNS names 253


def check_endpoint(endpoint: str, *, bind: bool = False) -> str:
    """Return ``endpoint`` if it can be connected to (or, with ``bind``, bound), else raise."""
    if not isinstance(endpoint, str):
        raise InvalidEndpoint(repr(endpoint), "an endpoint is a string")
    if len(endpoint) > MAX_ENDPOINT_CHARS:
        raise InvalidEndpoint(endpoint, f"longer than {MAX_ENDPOINT_CHARS} characters")
    scheme, sep, rest = endpoint.partition("://")
    if not sep:
        raise InvalidEndpoint(endpoint, "no transport (tcp://, ipc:// or inproc://)")
    if scheme in ("ipc", "inproc"):
        if not rest:
            raise InvalidEndpoint(endpoint, f"{scheme}:// needs a name")
        return endpoint
    if scheme != "tcp":
        raise InvalidEndpoint(endpoint, f"transport {scheme!r} is not supported")
    addr = rest.rpartition(";")[2]  # libzmq's optional "source;" prefix is left to libzmq
    host, colon, port = addr.rpartition(":")
    if not colon or addr.endswith("]"):
        raise InvalidEndpoint(endpoint, "no port (tcp://HOST:PORT)")
    if not (port.isascii() and port.isdigit() and len(port) <= 5 and 1 <= int(port) <= 65535):
        raise InvalidEndpoint(endpoint, f"port {port[:20]!r} is not a number in 1-65535")
    if host.startswith("["):
        if not host.endswith("]"):
            raise InvalidEndpoint(endpoint, "an IPv6 address in '[' lacks its closing ']'")
        if not _is_ipv6(host[1:-1]):
            raise InvalidEndpoint(endpoint, f"{host[:60]!r} is not an IPv6 address")
    elif host == "*":
        if not bind:
            raise InvalidEndpoint(
                endpoint, "'*' (all interfaces) is for binding; connect to a host"
            )
    elif not host:
        raise InvalidEndpoint(endpoint, "no host")
    elif not (_HOSTNAME.fullmatch(host) and len(host) <= 253) and not _is_ipv6(host):
        raise InvalidEndpoint(endpoint, f"{host[:60]!r} is not a host name or IP address")
    return endpoint


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


# ---- broker sets: one setting naming every broker of a plant (docs/ha.md) -------------------

DNS_PREFIX: Final = "dns:"
MAX_SET_ENTRIES: Final = 64


class SetEntry(NamedTuple):
    """One entry of a broker set: an endpoint, or (``discover``) a ``tcp://NAME:PORT`` whose
    every address is a broker (a Kubernetes headless Service), re-resolved as they change."""

    endpoint: str
    discover: bool


def parse_endpoint_set(value: str) -> tuple[SetEntry, ...]:
    """``tcp://a:9797,tcp://b:9797`` or ``dns:tcp://broker-peers.ns.svc:9797`` (or a mix)
    -> entries, each checked as a connect endpoint; raise InvalidEndpoint on the first bad one.

    A single endpoint is a set of one, so every existing setting stays valid as written."""
    if not isinstance(value, str):
        raise InvalidEndpoint(repr(value), "an endpoint is a string")
    if len(value) > MAX_ENDPOINT_CHARS * 4:
        raise InvalidEndpoint(value, f"longer than {MAX_ENDPOINT_CHARS * 4} characters")
    parts = [p.strip() for p in value.split(",")]
    if len(parts) > MAX_SET_ENTRIES:
        raise InvalidEndpoint(value, f"more than {MAX_SET_ENTRIES} brokers")
    entries: list[SetEntry] = []
    for part in parts:
        if not part:
            raise InvalidEndpoint(value, "an empty entry (two commas, or a trailing comma)")
        discover = part.startswith(DNS_PREFIX)
        endpoint = check_endpoint(part[len(DNS_PREFIX) :] if discover else part)
        if discover and not endpoint.startswith("tcp://"):
            raise InvalidEndpoint(part, "dns: discovery needs a tcp://NAME:PORT")
        entry = SetEntry(endpoint, discover)
        if entry in entries:
            raise InvalidEndpoint(value, f"{part!r} is listed twice")
        entries.append(entry)
    return tuple(entries)


def check_endpoint_set(value: str) -> str:
    """``value`` if :func:`parse_endpoint_set` accepts it, else raise InvalidEndpoint."""
    parse_endpoint_set(value)
    return value


def split_tcp(endpoint: str) -> tuple[str, int]:
    """``tcp://host:port`` (as checked above) -> ``(host, port)``; brackets of IPv6 removed."""
    host, _, port = endpoint[len("tcp://") :].rpartition(";")[2].rpartition(":")
    return host.strip("[]"), int(port)


def tcp_endpoint(address: str, port: int) -> str:
    """An address as resolved (``10.0.0.7`` or ``fd00::7``) and a port -> a tcp:// endpoint."""
    return f"tcp://[{address}]:{port}" if ":" in address else f"tcp://{address}:{port}"
