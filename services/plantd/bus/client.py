"""Publishing to and subscribing from a plantd bus.

Messages are two frames, ``[topic, payload]``. Subscribers filter by topic *prefix*
(``b"org.plantd.state."`` matches ``b"org.plantd.state.set"``); ``b""`` receives everything.

Publishing never blocks: a message nobody has subscribed to yet is dropped (the ZeroMQ
"slow joiner"), and so is one for a subscriber whose queue is full. A publisher that must not lose
its first messages calls :meth:`Publisher.wait_for_subscriber` first. Messages that are not
exactly two frames are dropped by subscribers and counted in ``malformed``.

Connect a publisher to a bus's publisher port (e.g. 11000 for ``state``) and a subscriber to its
subscriber port (11001); see :data:`plantd.common.contract.BUS_PORTS`.

Several brokers (docs/ha.md): a publisher's endpoint may be a broker set
(``tcp://a:11000,tcp://b:11000`` or ``dns:tcp://NAME:11000``) and it publishes to every broker, so
a subscriber on any one of them sees each message once (brokers never forward to each other: no
loops). :meth:`Publisher.rediscover` follows ``dns:`` entries as brokers come and go. A
subscriber connects to one broker: connected to two it would get every message twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Final, NamedTuple, Self

import zmq
import zmq.asyncio

from plantd.common.curve import CurveClient
from plantd.common.discovery import BrokerSet, resolve_brokers

log = logging.getLogger("plantd.bus")

DEFAULT_HWM: Final = 10_000


class BusMessage(NamedTuple):
    topic: bytes
    payload: bytes


def _as_bytes(value: str | bytes, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise TypeError(f"{what} must be str or bytes, not {type(value).__name__}")


class Publisher:
    """Publishes ``[topic, payload]`` to a bus.

    The socket is an XPUB rather than a PUB: it sends the same way, and it also hears which
    topics subscribers want, which :meth:`wait_for_subscriber` uses.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        curve: CurveClient | None = None,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        hwm: int = DEFAULT_HWM,
        linger_ms: int = 1000,
    ) -> None:
        self.endpoint = endpoint
        self.brokers = BrokerSet(endpoint)  # InvalidEndpoint if it is not a broker set
        ctx = context if context is not None else zmq.Context.instance()
        self._sock: zmq.Socket[bytes] = ctx.socket(zmq.XPUB)
        self._sock.sndhwm = hwm
        self._sock.linger = linger_ms  # flush queued messages briefly on close
        if curve is not None:
            curve.apply(self._sock)
        self.connected_to: list[str] = []
        self._connect_to(resolve_brokers(endpoint))
        self._subscriptions: set[bytes] = set()
        self.published = 0

    def _connect_to(self, brokers: list[str]) -> None:
        for gone in [ep for ep in self.connected_to if ep not in brokers]:
            with contextlib.suppress(zmq.ZMQError):
                self._sock.disconnect(gone)
            log.info("publisher %s: broker %s is gone; not publishing to it", self.endpoint, gone)
        for new in [ep for ep in brokers if ep not in self.connected_to]:
            self._sock.connect(new)
        self.connected_to = list(brokers)

    async def rediscover(self) -> list[str]:
        """Look up the ``dns:`` entries again; publish to the brokers they name now."""
        if self.brokers.discovering:
            self._connect_to(await self.brokers.resolve())
        return self.connected_to

    def publish(self, topic: str | bytes, payload: bytes) -> None:
        """Send one message; never blocks (dropped if nobody is subscribed or queues are full)."""
        t = _as_bytes(topic, "topic")
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
        try:
            self._sock.send_multipart([t, payload], zmq.NOBLOCK)
        except zmq.Again:
            return  # HWM reached: PUB semantics are to drop
        self.published += 1

    def _drain_subscriptions(self, timeout_ms: int) -> None:
        if not self._sock.poll(timeout_ms):
            return
        while True:
            try:
                frame = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if frame[:1] == b"\x01":
                self._subscriptions.add(frame[1:])
            elif frame[:1] == b"\x00":
                self._subscriptions.discard(frame[1:])

    def has_subscriber(self, topic: str | bytes) -> bool:
        """True if some subscriber's prefix matches ``topic`` (as far as heard so far)."""
        self._drain_subscriptions(0)
        t = _as_bytes(topic, "topic")
        return any(t.startswith(prefix) for prefix in self._subscriptions)

    def wait_for_subscriber(self, topic: str | bytes, timeout: float = 5.0) -> bool:
        """Block until a subscription matching ``topic`` has reached this publisher."""
        t = _as_bytes(topic, "topic")
        deadline = time.monotonic() + timeout
        while True:
            self._drain_subscriptions(0)
            if any(t.startswith(prefix) for prefix in self._subscriptions):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._drain_subscriptions(int(min(left, 0.1) * 1000) + 1)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def follow_brokers(publishers: Iterable[Publisher], every_s: float = 10.0) -> None:
    """Keep publishers with ``dns:`` broker sets on the brokers their names resolve to now
    (runs until cancelled; returns at once when none of them discovers)."""
    following = [p for p in publishers if p.brokers.discovering]
    while following:
        await asyncio.sleep(every_s)
        for publisher in following:
            await publisher.rediscover()


def _prefixes(topics: Iterable[str | bytes]) -> list[bytes]:
    return [_as_bytes(t, "topic") for t in topics]


class Subscriber:
    """Receives ``[topic, payload]`` messages whose topic starts with one of ``topics``.

    Blocking: ``recv(timeout)`` or ``for msg in subscriber`` (ends when closed).
    """

    def __init__(
        self,
        endpoint: str,
        topics: Iterable[str | bytes] = (b"",),
        *,
        curve: CurveClient | None = None,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        hwm: int = DEFAULT_HWM,
    ) -> None:
        self.endpoint = endpoint
        ctx = context if context is not None else zmq.Context.instance()
        self._sock: zmq.Socket[bytes] = ctx.socket(zmq.SUB)
        self._sock.rcvhwm = hwm
        self._sock.linger = 0
        if curve is not None:
            curve.apply(self._sock)
        for prefix in _prefixes(topics):
            self._sock.subscribe(prefix)
        self._sock.connect(endpoint)
        self.malformed = 0

    def subscribe(self, topic: str | bytes) -> None:
        self._sock.subscribe(_as_bytes(topic, "topic"))

    def unsubscribe(self, topic: str | bytes) -> None:
        self._sock.unsubscribe(_as_bytes(topic, "topic"))

    def recv(self, timeout: float | None = None) -> BusMessage | None:
        """The next well-formed message, or None after ``timeout`` seconds (None = wait forever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if deadline is not None:
                left_ms = max(0, int((deadline - time.monotonic()) * 1000))
                if not self._sock.poll(left_ms):
                    return None
            frames = self._sock.recv_multipart()
            if len(frames) == 2:
                return BusMessage(frames[0], frames[1])
            self.malformed += 1
            log.debug("dropped malformed bus message", extra={"frames": len(frames)})

    def __iter__(self) -> Iterator[BusMessage]:
        """Messages forever; ``break`` to stop (a socket must not be closed from another thread)."""
        while True:
            msg = self.recv()
            if msg is not None:
                yield msg

    def close(self) -> None:
        self._sock.close(0)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncSubscriber:
    """asyncio version of :class:`Subscriber`: ``await recv()`` or ``async for``."""

    def __init__(
        self,
        endpoint: str,
        topics: Iterable[str | bytes] = (b"",),
        *,
        curve: CurveClient | None = None,
        context: zmq.asyncio.Context | None = None,
        hwm: int = DEFAULT_HWM,
    ) -> None:
        self.endpoint = endpoint
        ctx = context if context is not None else zmq.asyncio.Context.instance()
        self._sock = ctx.socket(zmq.SUB)
        self._sock.rcvhwm = hwm
        self._sock.linger = 0
        if curve is not None:
            curve.apply(self._sock)  # type: ignore[arg-type]
        for prefix in _prefixes(topics):
            self._sock.subscribe(prefix)
        self._sock.connect(endpoint)
        self.malformed = 0

    def subscribe(self, topic: str | bytes) -> None:
        self._sock.subscribe(_as_bytes(topic, "topic"))

    def unsubscribe(self, topic: str | bytes) -> None:
        self._sock.unsubscribe(_as_bytes(topic, "topic"))

    async def recv(self) -> BusMessage:
        """The next well-formed message; bound the wait with ``asyncio.timeout``."""
        while True:
            frames = await self._sock.recv_multipart()
            if len(frames) == 2:
                return BusMessage(frames[0], frames[1])
            self.malformed += 1
            log.debug("dropped malformed bus message", extra={"frames": len(frames)})

    async def __aiter__(self) -> AsyncIterator[BusMessage]:
        """Messages forever; ``break`` or cancel the task to stop."""
        while True:
            yield await self.recv()

    def close(self) -> None:
        self._sock.close(0)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
