"""Subscribe's relay against a fake subscription: a buffer bounded in messages and bytes that
drops new messages and counts them, sequence numbers that show the gaps, batches of at most
max_batch, non-UTF-8 topics and malformed messages counted as drops, a failing token re-check
or subscription ending the stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable

import pytest

from plantd.api.errors import GatewayCode, Origin
from plantd.bus import BusMessage
from plantd.gateway.bus_relay import Relay
from plantd.gateway.state_map import RpcFailure
from plantd.v1 import bus_pb2 as pb

pytestmark = pytest.mark.unit

OVERHEAD = 64  # bytes the relay counts per message besides its topic and payload
DEADLINE_S = 5.0

# What the fake subscription's socket delivers: a message, a malformed frame set (counted in
# ``malformed`` and skipped, as AsyncSubscriber does) or an error recv() raises.
MALFORMED = object()
Delivery = BusMessage | Exception | object


class FakeSubscription:
    """An AsyncSubscriber without a socket: recv() reads an asyncio.Queue."""

    def __init__(self, *deliveries: Delivery) -> None:
        self.queue: asyncio.Queue[Delivery] = asyncio.Queue()
        self.malformed = 0
        self.closed = False
        self.cancelled = False
        self.returned = asyncio.Event()  # set when recv() has handed out a message
        for delivery in deliveries:
            self.queue.put_nowait(delivery)

    async def recv(self) -> BusMessage:
        try:
            while True:
                item = await self.queue.get()
                if item is MALFORMED:
                    self.malformed += 1
                    continue
                if isinstance(item, Exception):
                    raise item
                assert isinstance(item, BusMessage)
                self.returned.set()
                return item
        except asyncio.CancelledError:
            self.cancelled = True
            raise

    def close(self) -> None:
        self.closed = True


def msg(topic: bytes = b"t", payload: bytes = b"p") -> BusMessage:
    return BusMessage(topic, payload)


def relay(
    sub: FakeSubscription | None = None,
    *,
    max_batch: int = 100,
    max_delay_s: float = 0.0,
    buffer_messages: int = 1000,
    buffer_bytes: int = 1 << 20,
    recheck: Callable[[], None] | None = None,
    recheck_s: float = 1.0,
) -> Relay:
    return Relay(
        sub if sub is not None else FakeSubscription(),
        max_batch=max_batch,
        max_delay_s=max_delay_s,
        buffer_messages=buffer_messages,
        buffer_bytes=buffer_bytes,
        recheck=recheck,
        recheck_s=recheck_s,
    )


def sequences(response: pb.SubscribeResponse) -> list[int]:
    return [m.sequence for m in response.messages]


async def collect(
    responses: AsyncIterator[pb.SubscribeResponse],
    done: Callable[[list[pb.SubscribeResponse]], bool],
) -> list[pb.SubscribeResponse]:
    """Responses until ``done`` says enough; the test fails after DEADLINE_S."""
    out: list[pb.SubscribeResponse] = []
    async with asyncio.timeout(DEADLINE_S):
        async for response in responses:
            out.append(response)
            if done(out):
                return out
    raise AssertionError(f"the stream ended after {len(out)} responses")


async def aclose(stream: AsyncIterator[pb.SubscribeResponse]) -> None:
    """Close the stream as gRPC does when the client goes away."""
    assert isinstance(stream, AsyncGenerator)
    await stream.aclose()


def delivered(out: list[pb.SubscribeResponse]) -> int:
    return sum(len(r.messages) for r in out)


def dropped(out: list[pb.SubscribeResponse]) -> int:
    return sum(r.dropped for r in out)


# ---- offer() and take(), driven directly ------------------------------------------------------


def test_messages_come_out_in_order_numbered_from_one() -> None:
    r = relay()
    r.offer(msg(b"a.1", b"one"))
    r.offer(msg(b"a.2", b""))
    r.offer(msg("\u00e9".encode(), b"\xff\x00"))
    response = r.take()
    assert response.dropped == 0
    assert [(m.topic, list(m.frames), m.sequence) for m in response.messages] == [
        ("a.1", [b"one"], 1),
        ("a.2", [b""], 2),
        ("\u00e9", [b"\xff\x00"], 3),
    ]
    assert r.buffered_bytes == 0
    assert r.take() == pb.SubscribeResponse()


def test_take_sends_at_most_max_batch_messages() -> None:
    r = relay(max_batch=2)
    for i in range(5):
        r.offer(msg(b"t%d" % i))
    assert [sequences(r.take()) for _ in range(4)] == [[1, 2], [3, 4], [5], []]


def test_a_full_buffer_drops_new_messages_and_leaves_a_gap() -> None:
    """Drop-new: the oldest are kept; every drop uses a sequence number and is counted once."""
    r = relay(buffer_messages=3)
    for _ in range(5):
        r.offer(msg())
    assert r.dropped == 2
    first = r.take()
    assert (sequences(first), first.dropped) == ([1, 2, 3], 2)
    assert r.dropped == 0
    r.offer(msg())  # room again
    second = r.take()
    assert (sequences(second), second.dropped) == ([6], 0)


def test_the_message_limit_admits_exactly_buffer_messages() -> None:
    r = relay(buffer_messages=1)
    r.offer(msg())
    r.offer(msg())
    response = r.take()
    assert (sequences(response), response.dropped) == ([1], 1)


def test_the_byte_budget_admits_exactly_its_bytes() -> None:
    """Topic, payload and the per-message overhead count; at the budget passes, a byte over not."""
    size = len(b"topic") + len(b"payload") + OVERHEAD
    r = relay(buffer_bytes=2 * size)
    for _ in range(3):
        r.offer(msg(b"topic", b"payload"))
    assert r.buffered_bytes == 2 * size
    response = r.take()
    assert (sequences(response), response.dropped) == ([1, 2], 1)
    assert r.buffered_bytes == 0

    r = relay(buffer_bytes=2 * size - 1)
    r.offer(msg(b"topic", b"payload"))
    r.offer(msg(b"topic", b"payload"))
    assert r.buffered_bytes == size
    response = r.take()
    assert (sequences(response), response.dropped) == ([1], 1)


def test_a_message_larger_than_the_budget_is_dropped_and_smaller_ones_still_pass() -> None:
    r = relay(buffer_bytes=OVERHEAD + 10)
    r.offer(msg(b"big", b"x" * 100))
    r.offer(msg(b"t", b"123456789"))  # exactly the budget
    response = r.take()
    assert (sequences(response), response.dropped) == ([2], 1)


def test_taking_frees_the_bytes_of_what_it_took() -> None:
    size = len(b"t") + len(b"p") + OVERHEAD
    r = relay(max_batch=1, buffer_bytes=2 * size)
    r.offer(msg())
    r.offer(msg())
    assert sequences(r.take()) == [1]
    assert r.buffered_bytes == size
    r.offer(msg())  # fits in the byte freed by take()
    assert r.dropped == 0
    assert sequences(r.take()) == [2]
    assert sequences(r.take()) == [3]


def test_a_non_utf8_topic_is_dropped_and_counted() -> None:
    r = relay()
    r.offer(msg(b"ok"))
    r.offer(msg(b"\xff\xfe"))
    r.offer(msg(b"ok"))
    response = r.take()
    assert (sequences(response), response.dropped) == ([1, 3], 1)
    assert r.buffered_bytes == 0


def test_a_dropped_non_utf8_topic_takes_no_room() -> None:
    r = relay(buffer_messages=1)
    r.offer(msg(b"\x80"))
    r.offer(msg(b"ok"))
    response = r.take()
    assert (sequences(response), response.dropped) == ([2], 1)


# ---- responses(): the reader task and the stream ----------------------------------------------


async def test_the_stream_delivers_every_message_in_order() -> None:
    sub = FakeSubscription(*(msg(b"t.%d" % i, b"%d" % i) for i in range(5)))
    out = await collect(relay(sub, max_delay_s=0.001).responses(), lambda o: delivered(o) >= 5)
    messages = [m for r in out for m in r.messages]
    assert [(m.topic, list(m.frames), m.sequence) for m in messages] == [
        (f"t.{i}", [b"%d" % i], i + 1) for i in range(5)
    ]
    assert dropped(out) == 0


async def test_the_stream_batches_up_to_max_batch() -> None:
    sub = FakeSubscription(*(msg() for _ in range(5)))
    out = await collect(relay(sub, max_batch=2).responses(), lambda o: delivered(o) >= 5)
    assert all(len(r.messages) <= 2 for r in out)
    assert [s for r in out for s in sequences(r)] == [1, 2, 3, 4, 5]


async def test_a_partial_batch_waits_for_more_within_max_delay() -> None:
    """Messages that arrive within max_delay of the first go out in one response."""
    sub = FakeSubscription(msg())
    stream = relay(sub, max_batch=10, max_delay_s=0.5).responses()
    first = asyncio.ensure_future(anext(stream))
    async with asyncio.timeout(DEADLINE_S):
        await sub.returned.wait()  # the reader has taken the first message
    sub.queue.put_nowait(msg())
    async with asyncio.timeout(DEADLINE_S):
        response = await first
    assert sequences(response) == [1, 2]
    await aclose(stream)


async def test_a_slow_consumer_sees_drops_as_gaps_and_counts() -> None:
    """What the buffer cannot hold is dropped; delivered + dropped accounts for every message."""
    sub = FakeSubscription(*(msg() for _ in range(10)))
    stream = relay(sub, buffer_messages=3).responses()
    out = await collect(stream, lambda o: delivered(o) + dropped(o) >= 10)
    seen = [s for r in out for s in sequences(r)]
    assert delivered(out) + dropped(out) == 10
    assert dropped(out) > 0  # ten arrived before the client read: three fit
    assert seen == sorted(set(seen))
    assert len(set(range(1, 11)) - set(seen)) == dropped(out)  # each drop is a gap
    assert out[0].messages[0].sequence == 1  # the oldest are kept


async def test_malformed_messages_are_counted_and_use_sequence_numbers() -> None:
    """The subscription's malformed counter is folded in: a drop each, a gap in the numbers."""
    sub = FakeSubscription(msg(), MALFORMED, MALFORMED, msg(), MALFORMED, msg())
    out = await collect(relay(sub).responses(), lambda o: delivered(o) >= 3)
    assert [s for r in out for s in sequences(r)] == [1, 4, 6]
    assert dropped(out) == 3


async def test_a_drop_without_a_message_is_still_reported() -> None:
    """A non-UTF-8 topic alone yields a response with no messages and dropped = 1."""
    sub = FakeSubscription(msg(b"\xff"))
    out = await collect(relay(sub, recheck_s=0.01).responses(), lambda o: dropped(o) >= 1)
    assert [(len(r.messages), r.dropped) for r in out] == [(0, 1)]


async def test_a_failing_recheck_ends_the_stream_and_stops_the_reader() -> None:
    """The token is re-checked on silence; its refusal is the stream's error."""
    calls = 0
    expired = RpcFailure(Origin.TOKEN, "TOKEN_EXPIRED", "the token expired")

    def recheck() -> None:
        nonlocal calls
        calls += 1
        if calls >= 2:
            raise expired

    sub = FakeSubscription()
    stream = relay(sub, recheck=recheck, recheck_s=0.01).responses()
    with pytest.raises(RpcFailure) as info:
        await collect(stream, lambda o: False)
    assert info.value is expired
    assert calls == 2
    assert sub.cancelled  # the reader task was cancelled, not left waiting on the socket


async def test_a_recheck_runs_while_messages_keep_flowing() -> None:
    """A busy stream is re-checked too: a refusal ends it even when messages keep arriving."""
    denied = RpcFailure(Origin.GATEWAY, GatewayCode.PERMISSION_DENIED, "revoked")
    checked = asyncio.Event()

    def recheck() -> None:
        checked.set()
        raise denied

    sub = FakeSubscription()
    stream = relay(sub, recheck=recheck, recheck_s=0.05).responses()
    got = 0
    with pytest.raises(RpcFailure) as info:
        async with asyncio.timeout(DEADLINE_S):
            sub.queue.put_nowait(msg())
            async for response in stream:
                got += len(response.messages)
                sub.queue.put_nowait(msg())
    assert info.value is denied
    assert checked.is_set()
    assert got >= 1


async def test_a_failing_subscription_ends_the_stream_with_its_error() -> None:
    sub = FakeSubscription(msg(), ConnectionError("bus gone"))
    stream = relay(sub, recheck_s=0.01).responses()
    out: list[pb.SubscribeResponse] = []
    with pytest.raises(ConnectionError, match="bus gone"):
        async with asyncio.timeout(DEADLINE_S):
            async for response in stream:
                out.append(response)
    assert [s for r in out for s in sequences(r)] == [1]


async def test_closing_the_stream_cancels_the_reader() -> None:
    sub = FakeSubscription(msg())
    stream = relay(sub).responses()
    async with asyncio.timeout(DEADLINE_S):
        first = await anext(stream)
    assert sequences(first) == [1]
    await aclose(stream)
    assert sub.cancelled
    assert not sub.closed  # closing the subscription is the caller's (the servicer's) job
