"""Whether the broker connection carrying a client's request dropped (libzmq's socket monitor).

MDP has no request id and no client heartbeat: a request sent to a broker that then dies is
simply never answered, and the client used to wait out its whole timeout. libzmq knows sooner:
the connection's TCP session ends (at once when the broker's process dies; within
``HEARTBEAT_TIMEOUT_MS`` when its machine or network does, through ZMTP heartbeats) and the
socket monitor reports ``DISCONNECTED``. :class:`LinkState` turns those events into "the request
was lost with its broker" — a pure core, fed by :class:`LinkWatch`, the thin shell that reads a
socket's monitor.

Attribution: a DEALER sends each request on one of its connected links, and does not say
which. So a drop is the request's only when one link was up when it was sent, and it is that
link that drops (one broker, e.g. the broker Service on Kubernetes, or a broker set with one
broker connected so far); with no link up, the request waits in the socket and goes out on the
first link that comes up. With several links up the request may be on one that stays, and the
client waits for its reply or its timeout as before (docs/ha.md). Links are told apart by the
endpoint libzmq names in their events (the same string for a connection's handshake and drop).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections import deque
from typing import Any, Final, NamedTuple, cast

import zmq
import zmq.asyncio

EVENTS: Final = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED

# ZMTP heartbeats on client sockets: a broker whose machine vanished (no FIN, no RST) is
# noticed after HEARTBEAT_TIMEOUT_MS instead of never. libzmq answers PINGs itself, so this
# works with any ZMTP 3.1 broker (the original's included).
HEARTBEAT_IVL_MS: Final = 1_000
HEARTBEAT_TIMEOUT_MS: Final = 3_000


class Sent(NamedTuple):
    """A send, as :meth:`LinkState.sent` marks it: the events seen so far, and the link the
    request went out on (None: none was up, so it goes on the next one that comes up)."""

    seq: int
    link: bytes | None


class LinkState:
    """Links up, and the recent events, from monitor events (pure)."""

    __slots__ = ("_log", "seq", "up")

    def __init__(self, history: int = 64) -> None:
        self.up: dict[bytes, int] = {}  # endpoint -> links up to it
        self.seq = 0
        # (seq, event, endpoint) of the last events: more than this many during one request
        # and its drop may go unseen (it then waits for its timeout).
        self._log: deque[tuple[int, int, bytes]] = deque(maxlen=history)

    def apply(self, event: int, endpoint: bytes) -> None:
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.up[endpoint] = self.up.get(endpoint, 0) + 1
        elif event == zmq.EVENT_DISCONNECTED and self.up.get(endpoint, 0) > 0:
            # Only a link that was up counts: a failed handshake (a wrong CURVE key) also ends
            # in DISCONNECTED, and no request ever went over it.
            if self.up[endpoint] == 1:
                del self.up[endpoint]
            else:
                self.up[endpoint] -= 1
        else:
            return
        self.seq += 1
        self._log.append((self.seq, event, endpoint))

    @property
    def links(self) -> int:
        """Links up now (to every endpoint)."""
        return sum(self.up.values())

    def sent(self) -> Sent | None:
        """Mark a send: a token for :meth:`lost`, or None when a drop could not be attributed
        to this request (several links up: it may be on one that stays)."""
        links = self.links
        if links > 1:
            return None
        return Sent(self.seq, next(iter(self.up)) if links else None)

    def lost(self, token: Sent | None) -> bool:
        """True once the link the request marked by ``token`` went out on dropped."""
        if token is None:
            return False
        link = token.link
        for seq, event, endpoint in self._log:
            if seq <= token.seq:
                continue
            if link is None:
                if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    link = endpoint  # the first link up after the send carried it
            elif event == zmq.EVENT_DISCONNECTED and endpoint == link:
                return True
        return False


def parse_event(frames: list[bytes]) -> tuple[int, bytes] | None:
    """(event id, endpoint) of one monitor message (first frame: 16-bit id, 32-bit value;
    second: the endpoint)."""
    if len(frames) != 2 or len(frames[0]) != 6:
        return None
    event: int = struct.unpack_from("=H", frames[0])[0]  # native order, as libzmq writes it
    return event, frames[1]


class LinkWatch:
    """A blocking socket's monitor, read without blocking into a :class:`LinkState` (the
    blocking Client also polls :attr:`socket` while it waits)."""

    def __init__(self, sock: zmq.Socket[Any]) -> None:
        monitor = sock.get_monitor_socket(EVENTS)
        self._monitor = monitor
        self._reader: zmq.Socket[bytes] = zmq.Socket.shadow(monitor.underlying)
        self._sock = sock
        self.state = LinkState()

    @property
    def socket(self) -> zmq.Socket[bytes]:
        """The monitor (sync), for a poller."""
        return self._reader

    def read(self) -> None:
        """Apply every event waiting on the monitor."""
        while True:
            try:
                frames = self._reader.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            event = parse_event(frames)
            if event is not None:
                self.state.apply(*event)

    def sent(self) -> Sent | None:
        self.read()
        return self.state.sent()

    def links(self) -> int:
        self.read()
        return self.state.links

    def lost(self, token: Sent | None) -> bool:
        # Read even when no drop could be the request's: a poller waiting on the monitor
        # would otherwise find it readable again at once, and spin.
        self.read()
        return self.state.lost(token)

    def close(self) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self._sock.disable_monitor()
        self._monitor.close(0)


class AsyncLinkWatch:
    """An asyncio socket's monitor, applied by the event loop as events come (one recv
    future kept armed on it), so a request reads the state without touching the monitor:
    reading it per request cost 9-10 µs (a failed NOBLOCK recv, or 4 µs for a ZMQ_EVENTS
    check: libzmq's getpid fork check each time), measured with timeit here.

    An event the loop has not run yet when a request is sent (within one loop turn) is taken
    as after the send; that can only make a drop at that very moment count as the request's.
    """

    def __init__(self, sock: zmq.asyncio.Socket) -> None:
        self._monitor = sock.get_monitor_socket(EVENTS)
        self._sock = sock
        self.state = LinkState()
        self._pending: asyncio.Future[list[bytes]] | None = None
        self._arm()

    def _arm(self) -> None:
        future = cast("asyncio.Future[list[bytes]]", self._monitor.recv_multipart())
        future.add_done_callback(self._on_event)
        self._pending = future

    def _on_event(self, future: asyncio.Future[list[bytes]]) -> None:
        if future.cancelled() or self._pending is None:
            return  # closed
        if future.exception() is not None:
            self._pending = None  # the monitor is gone (socket closing): nothing more comes
            return
        event = parse_event(future.result())
        if event is not None:
            self.state.apply(*event)
        self._arm()

    def sent(self) -> Sent | None:
        return self.state.sent()

    def links(self) -> int:
        return self.state.links

    def lost(self, token: Sent | None) -> bool:
        return self.state.lost(token)

    def close(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()
        with contextlib.suppress(zmq.ZMQError):
            self._sock.disable_monitor()
        self._monitor.close(0)


def configure_heartbeats(sock: zmq.Socket[Any]) -> None:
    sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
