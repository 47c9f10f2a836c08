"""One Subscribe stream: bus messages through a bounded buffer, in batches, losses counted.

A reader task takes every message off the SUB socket as it arrives, numbers it and keeps it in a
buffer bounded in messages and bytes; the stream sends what the buffer holds in batches of up
to ``max_batch`` messages, waiting at most ``max_delay`` for a batch to fill. When the client
reads more slowly than the bus delivers, the buffer fills and *new* messages are dropped (the
order of what is delivered stays the bus's order): each drop uses up a sequence number, so the
client sees the gap, and ``dropped`` in the next response says how many. Memory per stream is
at most the buffer's byte budget, whatever the client does. Topics that are not UTF-8 and
malformed bus messages are dropped and counted the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from plantd.bus import BusMessage
from plantd.v1 import bus_pb2 as pb

_OVERHEAD = 64  # bytes counted per buffered message besides its topic and payload


def buffered_size(message: BusMessage) -> int:
    """The bytes one buffered bus message counts against a byte budget (every stream buffer)."""
    return len(message.topic) + len(message.payload) + _OVERHEAD


class Subscription(Protocol):
    malformed: int

    async def recv(self) -> BusMessage: ...

    def close(self) -> None: ...


class Relay:
    def __init__(
        self,
        sub: Subscription,
        *,
        max_batch: int,
        max_delay_s: float,
        buffer_messages: int,
        buffer_bytes: int,
        recheck: Callable[[], None] | None = None,
        recheck_s: float = 1.0,
    ) -> None:
        self.sub = sub
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.buffer_messages = buffer_messages
        self.buffer_bytes = buffer_bytes
        self.recheck = recheck  # raises to end the stream (the token expired or was revoked)
        self.recheck_s = recheck_s
        self.sequence = 0
        self.dropped = 0  # since the last response
        self.buffered_bytes = 0
        self._buffer: deque[tuple[pb.BusMessage, int]] = deque()
        self._ready = asyncio.Event()
        self._malformed_seen = 0

    def offer(self, message: BusMessage) -> None:
        """Number one message from the bus and buffer it, or drop it (counted)."""
        self.sequence += 1
        size = buffered_size(message)
        if (
            len(self._buffer) >= self.buffer_messages
            or self.buffered_bytes + size > self.buffer_bytes
        ):
            self.dropped += 1
            self._ready.set()  # the next response reports it, within max_delay
            return
        try:
            topic = message.topic.decode()
        except UnicodeDecodeError:
            self.dropped += 1
            self._ready.set()
            return
        item = pb.BusMessage(topic=topic, frames=[message.payload], sequence=self.sequence)
        self._buffer.append((item, size))
        self.buffered_bytes += size
        self._ready.set()

    def _count_malformed(self) -> None:
        seen = self.sub.malformed
        if seen > self._malformed_seen:
            self.sequence += seen - self._malformed_seen
            self.dropped += seen - self._malformed_seen
            self._malformed_seen = seen
            self._ready.set()

    def take(self) -> pb.SubscribeResponse:
        """Up to ``max_batch`` buffered messages and the drops since the last response."""
        response = pb.SubscribeResponse(dropped=self.dropped)
        self.dropped = 0
        while self._buffer and len(response.messages) < self.max_batch:
            item, size = self._buffer.popleft()
            self.buffered_bytes -= size
            response.messages.append(item)
        if not self._buffer:
            self._ready.clear()
        return response

    async def _read(self) -> None:
        while True:
            message = await self.sub.recv()
            self._count_malformed()
            self.offer(message)

    async def responses(self) -> AsyncIterator[pb.SubscribeResponse]:
        reader = asyncio.get_running_loop().create_task(self._read())
        checked = time.monotonic()
        try:
            while True:
                if reader.done():
                    reader.result()  # the subscription failed: raise its error
                    return
                try:
                    async with asyncio.timeout(self.recheck_s):
                        await self._ready.wait()
                except TimeoutError:
                    pass
                self._count_malformed()  # also when no good message follows them
                now = time.monotonic()
                if self.recheck is not None and now - checked >= self.recheck_s:
                    self.recheck()
                    checked = now
                if not self._buffer and not self.dropped:
                    continue
                if len(self._buffer) < self.max_batch and self.max_delay_s > 0:
                    await asyncio.sleep(self.max_delay_s)  # let a batch fill (bounded wait)
                yield self.take()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
