"""The REST edge's stand-in for ``grpc.aio.ServicerContext``, and the headers it reads. Pure.

The servicers see a call only through :class:`plantd.gateway.calls.CallContext`; this gives
them an HTTP request in that shape:

* metadata: ``Authorization``, ``X-Request-Id`` and ``traceparent`` headers, lower-cased as
  gRPC metadata keys are;
* the deadline: a ``grpc-timeout`` header (gRPC's own format, ``500m``, ``2S``) or a
  ``timeout`` query parameter (proto3 JSON duration, ``1.5s``), measured from arrival;
* the peer: the socket's address, or with ``forwarded_hops`` > 0 the address that many
  proxies back in ``X-Forwarded-For`` (never trusted by default: any client can send it);
* ``abort``: raises :class:`EdgeAbort`, which the server renders as AIP-193 JSON.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final, NoReturn

import grpc
from google.protobuf.message import Message

from plantd.gateway.auth import AUTHORIZATION, REQUEST_ID, TRACEPARENT

# Headers passed to the servicers as call metadata (the rest never reach them).
FORWARDED_HEADERS: Final = (AUTHORIZATION, REQUEST_ID, TRACEPARENT)
GRPC_TIMEOUT: Final = "grpc-timeout"
_GRPC_UNITS: Final = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_GRPC_TIMEOUT_RE: Final = re.compile(r"([0-9]{1,8})([HMSmun])")
_DURATION_RE: Final = re.compile(r"([0-9]{1,9})(?:\.([0-9]{1,9}))?s")


class EdgeAbort(Exception):
    """A servicer aborted the call: the gRPC code, message and trailers to render."""

    def __init__(
        self, code: grpc.StatusCode, details: str, trailers: Sequence[tuple[str, str | bytes]]
    ) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.trailers = tuple(trailers)


def parse_grpc_timeout(value: str) -> float | None:
    """Seconds of a ``grpc-timeout`` value (``100m``, ``5S``); None when malformed."""
    match = _GRPC_TIMEOUT_RE.fullmatch(value.strip())
    if match is None:
        return None
    return int(match.group(1)) * _GRPC_UNITS[match.group(2)]


def parse_duration(value: str) -> float | None:
    """Seconds of a proto3 JSON duration (``1.5s``, ``30s``); None when malformed."""
    match = _DURATION_RE.fullmatch(value.strip())
    if match is None:
        return None
    fraction = match.group(2) or ""
    return int(match.group(1)) + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)


def request_timeout(headers: Mapping[str, str], query: Mapping[str, str]) -> float | None:
    """The client's deadline in seconds (header first); None when it set none.

    A malformed value raises ValueError: a client that asked for a deadline must not silently
    get the default one."""
    header = headers.get(GRPC_TIMEOUT)
    if header is not None:
        seconds = parse_grpc_timeout(header)
        if seconds is None:
            raise ValueError(f"grpc-timeout {header[:40]!r} is not like 500m or 2S")
        return seconds
    param = query.get("timeout")
    if param is not None:
        seconds = parse_duration(param)
        if seconds is None:
            raise ValueError(f"timeout {param[:40]!r} is not a duration like 1.5s")
        return seconds
    return None


def peer_string(host: str | None, port: int | None) -> str:
    """A gRPC-style peer (``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5``) for rate limits and logs."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return f"unix:{host}"
    if address.version == 6:
        return f"ipv6:[{host}]:{port or 0}"
    return f"ipv4:{host}:{port or 0}"


def client_host(socket_host: str | None, forwarded_for: str | None, hops: int) -> str | None:
    """The client's address: the socket's, or with ``hops`` trusted proxies in front the entry
    ``hops`` back from the right of ``X-Forwarded-For`` (a client can prepend anything, so only
    what our own proxies appended counts). A short or malformed header falls back to the
    socket's address."""
    if hops <= 0 or not forwarded_for:
        return socket_host
    entries = [e.strip() for e in forwarded_for.split(",")]
    if len(entries) < hops:
        return socket_host
    candidate = entries[-hops]
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return socket_host
    return candidate


def call_metadata(headers: Mapping[str, str], token: str | None = None) -> list[tuple[str, str]]:
    """The forwarded headers as gRPC metadata; ``token`` (a WebSocket's first-message
    authentication) stands in for a missing ``Authorization`` header."""
    metadata = [(name, headers[name]) for name in FORWARDED_HEADERS if name in headers]
    if token is not None and AUTHORIZATION not in headers:
        metadata.append((AUTHORIZATION, f"Bearer {token}"))
    return metadata


class EdgeContext:
    """One REST call as the servicers' :class:`~plantd.gateway.calls.CallContext`."""

    def __init__(
        self,
        metadata: Iterable[tuple[str, str]],
        *,
        peer: str,
        timeout_s: float | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._metadata = tuple(metadata)
        self._peer = peer
        self._clock = clock
        self._deadline = None if timeout_s is None else clock() + timeout_s
        self.trailers: tuple[tuple[str, str | bytes], ...] = ()
        # Set by a WebSocket stream: takes a stream message synchronously when it can be
        # written at once (True), for a servicer that can hand messages over without its task.
        self.stream_sink: Callable[[Message], bool] | None = None

    def invocation_metadata(self) -> grpc.aio.Metadata | None:
        return grpc.aio.Metadata(*self._metadata)

    def time_remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - self._clock())

    def peer(self) -> str:
        return self._peer

    async def abort(
        self,
        code: grpc.StatusCode,
        details: str = "",
        trailing_metadata: Sequence[tuple[str, str | bytes]] = (),
    ) -> NoReturn:
        raise EdgeAbort(code, details, trailing_metadata)

    def set_trailing_metadata(self, trailing_metadata: Sequence[tuple[str, str | bytes]]) -> None:
        self.trailers = tuple(trailing_metadata)
