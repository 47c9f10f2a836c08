"""Where the brokers of a broker set are now: the I/O half of
:func:`plantd.common.endpoints.parse_endpoint_set` (``dns:`` entries looked up).

Used by clients (when a socket is made), publishers (:meth:`plantd.bus.Publisher.rediscover`)
and :class:`plantd.mdp.fleet.WorkerFleet` (docs/ha.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable

from plantd.common import endpoints

log = logging.getLogger("plantd.discovery")

Resolver = Callable[[str, int], Awaitable[list[str]]]  # (host, port) -> addresses


def addresses_of(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, sorted (a stable order: no churn between lookups)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def _entry_endpoints(entry: endpoints.SetEntry, addresses: list[str]) -> list[str]:
    if not entry.discover:
        return [entry.endpoint]
    port = endpoints.split_tcp(entry.endpoint)[1]
    return [endpoints.tcp_endpoint(a, port) for a in addresses]


def resolve_brokers(value: str) -> list[str]:
    """The endpoints a broker set names now (``dns:`` entries looked up, blocking)."""
    found: list[str] = []
    for entry in endpoints.parse_endpoint_set(value):
        addresses: list[str] = []
        if entry.discover:
            host, port = endpoints.split_tcp(entry.endpoint)
            with contextlib.suppress(OSError):  # nothing yet: a request times out, says so
                addresses = addresses_of(host, port)
        found += _entry_endpoints(entry, addresses)
    return list(dict.fromkeys(found))


async def lookup(host: str, port: int) -> list[str]:
    """:func:`addresses_of` in a thread: a slow DNS server must not stall the loop."""
    return await asyncio.get_running_loop().run_in_executor(None, addresses_of, host, port)


class BrokerSet:
    """The brokers a setting names *now*: static entries as written, ``dns:`` entries resolved.

    A name that stops resolving keeps its last answer (a DNS hiccup must not unregister a
    service from every broker); one that never resolved contributes nothing yet.
    """

    def __init__(self, value: str, resolver: Resolver = lookup) -> None:
        self.value = value
        self.entries = endpoints.parse_endpoint_set(value)  # InvalidEndpoint if bad
        self._resolver = resolver
        self._last: dict[str, list[str]] = {}
        # Names failing now: warned about once per outage (the client pool resolves for every
        # new socket, so a warning per lookup would be one per request while DNS is down).
        self._failing: set[str] = set()

    @property
    def discovering(self) -> bool:
        return any(e.discover for e in self.entries)

    async def resolve(self) -> list[str]:
        found: list[str] = []
        for entry in self.entries:
            if not entry.discover:
                found.append(entry.endpoint)
                continue
            host, port = endpoints.split_tcp(entry.endpoint)
            try:
                addresses = await self._resolver(host, port)
                self._last[entry.endpoint] = [endpoints.tcp_endpoint(a, port) for a in addresses]
                if entry.endpoint in self._failing:
                    self._failing.discard(entry.endpoint)
                    log.info("broker name %s resolves again", host)
            except OSError as exc:
                if entry.endpoint not in self._failing:
                    self._failing.add(entry.endpoint)
                    log.warning(
                        "cannot resolve broker name %s (%s); keeping the %d broker(s) it had",
                        host,
                        exc,
                        len(self._last.get(entry.endpoint, [])),
                    )
            found.extend(self._last.get(entry.endpoint, []))
        return list(dict.fromkeys(found))  # in order, each once
