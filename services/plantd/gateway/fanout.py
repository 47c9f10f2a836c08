"""One state-bus subscription per gateway, fanned out to every watch of every scope.

A watch used to open its own SUB socket: 5,000 WebSocket watchers were 5,000 sockets in the
gateway, 5,000 TCP connections into the broker, and one update was decrypted and copied 5,000
times. Here the process holds one :class:`Source` (one SUB socket), subscribes each scope's
topic once while at least one watch follows it, and hands every message to the readers of its
exact topic (a ZeroMQ subscription is a prefix: "plant1" also hears "plant10").

Each reader has a buffer bounded in messages and bytes. A reader that falls behind loses the
*new* messages (counted in ``dropped``), never slows the others, and never grows memory past
its budget; :class:`plantd.gateway.watch.Watch` sees the revision gap and reads what it lost
from the state service, so a drop costs one ``changes-since``, not an event (a watch whose
reader dropped reads from where it is itself, on silence too: the tail of a burst may be what
it lost).

A silent scope is checked for a lost last event once per ``resync_s`` by *one* of its watches
(:meth:`Reader.shared_catch_up`): what that one reads is delivered to every reader of the scope
like bus events. Measured here (``python -m bench.gateway``, 5,000 WebSocket watchers of one
scope): with a ``changes-since`` per watch per second the 5,000 took 73 s to connect and one
update reached them at p99 6.4 s; with one per scope, 5.4 s and 0.99 s; with each update's
response and frame built once for all (watch.py, rest/render.py), 4.1 s and 0.21 s; with live
events written by the fan-out pass itself to idle WebSockets (:attr:`Reader.direct`), 3.6 s and
0.09 s (README).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from plantd.bus import BusMessage
from plantd.gateway.bus_relay import buffered_size

_log = logging.getLogger(__name__)


class Source(Protocol):
    """The shared subscription: one socket, topics added and removed as watches come and go."""

    def subscribe(self, topic: str | bytes) -> None: ...

    def unsubscribe(self, topic: str | bytes) -> None: ...

    async def recv(self) -> BusMessage: ...

    def close(self) -> None: ...


class SourceClosed(Exception):
    """The shared subscription ended; every reader's ``recv`` raises it (the watch ends)."""


class Reader:
    """One watch's view of the shared subscription: ``recv`` and ``close``, like a socket."""

    def __init__(self, fanout: Fanout, topic: bytes, max_messages: int, max_bytes: int) -> None:
        self.fanout = fanout
        self.topic = topic
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.buffered_bytes = 0
        self.dropped = 0
        self.closed = False
        self._buffer: deque[tuple[BusMessage, int]] = deque()
        # The loop and a bare future, not an asyncio.Event: Event.wait looks the loop up each
        # time (Python 3.11's get_running_loop calls getpid()); measured in a fan-out to 5,000
        # watchers, 36 -> 33 us of gateway CPU per watcher per update.
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Future[None] | None = None
        # recv's time bound: a deadline, and one timer that re-arms itself only if it fires
        # before the deadline (see recv).
        self._deadline: float | None = None
        self._expired = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        # A synchronous consumer of the messages that need no waiting task (watch.Watch's live
        # path to a WebSocket): True when it handled the message.
        self.direct: Callable[[BusMessage], bool] | None = None

    def offer(self, message: BusMessage) -> bool:
        """Hand one message to the direct consumer, else buffer it, or drop it when the budget
        is spent; False when dropped.

        The direct consumer is asked only while the reader's one consumer waits in ``recv``
        with nothing buffered: what it handles is then exactly what ``recv`` would have
        returned next, in order."""
        if self.direct is not None and self._waiter is not None and not self._buffer:
            try:
                if self.direct(message):
                    return True
            except Exception:  # a bug there must not cost the other readers this message
                _log.exception("the direct consumer of %r failed", self.topic)
                self.direct = None
        size = buffered_size(message)
        if len(self._buffer) >= self.max_messages or self.buffered_bytes + size > self.max_bytes:
            self.dropped += 1
            return False
        self._buffer.append((message, size))
        self.buffered_bytes += size
        self.wake()
        return True

    async def recv(self, timeout_s: float | None = None) -> BusMessage:
        """The next message for this topic; ``TimeoutError`` after ``timeout_s`` without one.

        A watch waits again after every message, so the bound is a deadline moved forward on
        each wait and one timer per reader that re-arms itself only when it fires before the
        deadline, not an ``asyncio.timeout`` per wait: that costs ~5 us under uvloop (a call_at
        and a cancel), a third of what a watcher cost per update in a fan-out to 5,000
        (py-spy of ``bench.gateway``)."""
        if not self._buffer:
            self._expired = False
            if timeout_s is not None:
                self._deadline = self._loop.time() + timeout_s
                if self._timer is None or self._timer_at > self._deadline:
                    self._arm(self._deadline)
            try:
                while not self._buffer:
                    if self.fanout.error is not None:
                        raise SourceClosed(self.fanout.error)
                    if self._expired:
                        raise TimeoutError(f"no message for {self.topic!r} in {timeout_s} s")
                    self._waiter = self._loop.create_future()
                    await self._waiter
            finally:
                self._deadline = None  # the timer, if it fires, finds nobody waiting
                self._waiter = None
        message, size = self._buffer.popleft()
        self.buffered_bytes -= size
        return message

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._on_timer)
        self._timer_at = when

    def _on_timer(self) -> None:
        self._timer = None
        if self._deadline is None or self.closed:
            return  # not waiting: the next wait arms a new timer
        if self._loop.time() >= self._deadline:
            self._expired = True
            self.wake()
        else:
            self._arm(self._deadline)

    @property
    def pending(self) -> int:
        """Messages buffered, not yet read."""
        return len(self._buffer)

    def poll(self) -> BusMessage | None:
        """The next buffered message without waiting, or None."""
        if not self._buffer:
            return None
        message, size = self._buffer.popleft()
        self.buffered_bytes -= size
        return message

    async def shared_catch_up(
        self, fetch: Callable[[], Awaitable[Sequence[BusMessage]]], interval_s: float
    ) -> bool:
        """Run ``fetch`` (this reader's read of the history) for all readers of the topic, at
        most once per ``interval_s``; what it returns is delivered to each of them. False when
        another reader did it within the interval (its results are in this buffer too)."""
        return await self.fanout.shared_catch_up(self.topic, fetch, interval_s)

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.direct = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._buffer.clear()
            self.buffered_bytes = 0
            self.fanout.release(self)


class Fanout:
    """Readers per exact topic over one :class:`Source`; the pump task runs while any is open."""

    def __init__(self, source: Source, *, buffer_messages: int, buffer_bytes: int) -> None:
        self.source = source
        self.buffer_messages = buffer_messages
        self.buffer_bytes = buffer_bytes
        self.readers: dict[bytes, set[Reader]] = {}
        self.dropped = 0  # messages a reader's full buffer refused, all readers together
        self.unmatched = 0  # messages for a topic only a prefix of which is watched
        self.error: str | None = None
        self._pump: asyncio.Task[None] | None = None
        self._caught_up_at: dict[bytes, float] = {}  # topic -> when one of its readers did

    def subscribe(self, topic: str) -> Reader:
        """A reader of ``topic``: the first one subscribes the source to it."""
        if self.error is not None:
            raise SourceClosed(self.error)
        key = topic.encode()
        reader = Reader(self, key, self.buffer_messages, self.buffer_bytes)
        group = self.readers.get(key)
        if group is None:
            group = self.readers[key] = set()
            self.source.subscribe(key)
        group.add(reader)
        if self._pump is None or self._pump.done():
            self._pump = asyncio.get_running_loop().create_task(self._run())
        return reader

    def release(self, reader: Reader) -> None:
        group = self.readers.get(reader.topic)
        if group is None or reader not in group:
            return
        group.discard(reader)
        if not group:
            del self.readers[reader.topic]
            self._caught_up_at.pop(reader.topic, None)
            self.source.unsubscribe(reader.topic)

    async def shared_catch_up(
        self,
        topic: bytes,
        fetch: Callable[[], Awaitable[Sequence[BusMessage]]],
        interval_s: float,
        now: Callable[[], float] = time.monotonic,
    ) -> bool:
        started = now()
        last = self._caught_up_at.get(topic)
        if last is not None and started - last < interval_s:
            return False
        self._caught_up_at[topic] = started  # before the await: the others skip meanwhile
        for message in await fetch():
            self.deliver(message)
        return True

    def deliver(self, message: BusMessage) -> int:
        """Hand one bus message to each reader of its topic; how many took it."""
        group = self.readers.get(message.topic)
        if not group:
            self.unmatched += 1
            return 0
        taken = 0
        for reader in group:
            if reader.offer(message):
                taken += 1
            else:
                self.dropped += 1
        return taken

    async def _run(self) -> None:
        try:
            while True:
                self.deliver(await self.source.recv())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.error = f"the state bus subscription failed: {exc}"
            for group in self.readers.values():
                for reader in group:
                    reader.wake()

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        self.error = self.error or "the gateway is stopping"
        for group in list(self.readers.values()):
            for reader in group:
                reader.wake()
        self.source.close()


class FanoutCollector:
    """Prometheus view of a :class:`Fanout`, read at scrape time (nothing on the hot path)."""

    def __init__(self, fanout: Fanout) -> None:
        self.fanout = fanout

    def collect(self) -> Iterator[Metric]:
        f = self.fanout
        yield GaugeMetricFamily(
            "plantd_gateway_watch_scopes",
            "scopes the gateway's one state-bus subscription follows",
            value=len(f.readers),
        )
        yield GaugeMetricFamily(
            "plantd_gateway_watch_readers",
            "watches reading the shared state-bus subscription",
            value=sum(len(group) for group in f.readers.values()),
        )
        yield CounterMetricFamily(
            "plantd_gateway_watch_dropped",
            "state-bus events a slow watch's full buffer refused (the watch reads them from the "
            "state history instead)",
            value=f.dropped,
        )
        yield CounterMetricFamily(
            "plantd_gateway_watch_unmatched",
            "state-bus events received for no watched scope (a subscription is a prefix: a watch "
            "of plant1 also receives plant10's events, which the gateway drops)",
            value=f.unmatched,
        )
