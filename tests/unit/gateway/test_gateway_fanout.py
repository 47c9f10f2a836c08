"""The shared state-bus subscription: one topic subscribed once however many watches follow
it, messages to the readers of their exact topic only, a full reader dropping (counted)
without holding back the others, the topic unsubscribed with its last reader, and every
reader ended when the source fails or the fan-out closes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from plantd.bus import BusMessage
from plantd.gateway.fanout import Fanout, FanoutCollector, Reader, SourceClosed

pytestmark = pytest.mark.unit


class FakeSource:
    """A SUB socket's surface: subscriptions counted as libzmq counts them."""

    def __init__(self) -> None:
        self.subscriptions: list[bytes] = []
        self.queue: asyncio.Queue[BusMessage | Exception] = asyncio.Queue()
        self.closed = False

    def subscribe(self, topic: str | bytes) -> None:
        self.subscriptions.append(topic if isinstance(topic, bytes) else topic.encode())

    def unsubscribe(self, topic: str | bytes) -> None:
        self.subscriptions.remove(topic if isinstance(topic, bytes) else topic.encode())

    async def recv(self) -> BusMessage:
        item = await self.queue.get()
        if isinstance(item, Exception):
            raise item
        return item

    def close(self) -> None:
        self.closed = True


def msg(topic: str, payload: str = "{}") -> BusMessage:
    return BusMessage(topic.encode(), payload.encode())


async def recv(reader: Reader) -> BusMessage:
    async with asyncio.timeout(1.0):
        return await reader.recv()


async def test_one_subscription_per_topic_and_exact_topic_delivery() -> None:
    source = FakeSource()
    fan = Fanout(source, buffer_messages=10, buffer_bytes=64 * 1024)
    a1, a2 = fan.subscribe("plant1"), fan.subscribe("plant1")
    b = fan.subscribe("plant10")
    assert source.subscriptions == [b"plant1", b"plant10"]
    # A prefix subscription hears "plant10" for "plant1" too: only plant10's reader gets it.
    source.queue.put_nowait(msg("plant10", "b"))
    source.queue.put_nowait(msg("plant1", "a"))
    assert (await recv(b)).payload == b"b"
    assert (await recv(a1)).payload == b"a"
    assert (await recv(a2)).payload == b"a"
    assert fan.deliver(msg("plant2")) == 0 and fan.unmatched == 1
    await fan.close()


async def test_the_last_reader_unsubscribes_its_topic() -> None:
    source = FakeSource()
    fan = Fanout(source, buffer_messages=10, buffer_bytes=64 * 1024)
    first, second = fan.subscribe("s"), fan.subscribe("s")
    first.close()
    first.close()  # twice is harmless
    assert source.subscriptions == [b"s"]
    second.close()
    assert source.subscriptions == [] and fan.readers == {}
    again = fan.subscribe("s")
    assert source.subscriptions == [b"s"]
    again.close()
    await fan.close()
    assert source.closed


async def test_a_full_reader_drops_new_messages_and_never_holds_back_another() -> None:
    source = FakeSource()
    fan = Fanout(source, buffer_messages=3, buffer_bytes=64 * 1024)
    slow, fast = fan.subscribe("s"), fan.subscribe("s")
    for i in range(5):
        fan.deliver(msg("s", str(i)))
        assert (await recv(fast)).payload == str(i).encode()
    assert slow.dropped == 2 and fan.dropped == 2
    # The oldest three stay, in order: the watch sees the gap at revision 4 and reads history.
    assert [(await recv(slow)).payload for _ in range(3)] == [b"0", b"1", b"2"]
    assert slow.buffered_bytes == 0
    await fan.close()


async def test_the_byte_budget_bounds_a_reader_whatever_the_count() -> None:
    fan = Fanout(FakeSource(), buffer_messages=1000, buffer_bytes=16 * 1024)
    reader = fan.subscribe("s")
    big = msg("s", "x" * 6000)
    assert [fan.deliver(big) for _ in range(4)] == [1, 1, 0, 0]
    assert reader.buffered_bytes <= 16 * 1024 and reader.dropped == 2
    await fan.close()


async def test_a_failed_source_ends_every_reader_with_a_clear_error() -> None:
    source = FakeSource()
    fan = Fanout(source, buffer_messages=10, buffer_bytes=64 * 1024)
    reader = fan.subscribe("s")
    waiting = asyncio.create_task(recv(reader))
    await asyncio.sleep(0)
    source.queue.put_nowait(RuntimeError("socket gone"))
    with pytest.raises(SourceClosed, match="socket gone"):
        await waiting
    with pytest.raises(SourceClosed):
        fan.subscribe("t")
    await fan.close()


async def test_close_wakes_waiting_readers() -> None:
    fan = Fanout(FakeSource(), buffer_messages=10, buffer_bytes=64 * 1024)
    reader = fan.subscribe("s")
    waiting = asyncio.create_task(recv(reader))
    await asyncio.sleep(0)
    await fan.close()
    with pytest.raises(SourceClosed, match="stopping"):
        await waiting


async def test_a_silent_scope_is_read_once_per_interval_for_all_its_readers() -> None:
    fan = Fanout(FakeSource(), buffer_messages=10, buffer_bytes=64 * 1024)
    a, b = fan.subscribe("s"), fan.subscribe("s")
    other = fan.subscribe("t")
    fetches: list[str] = []
    clock = [100.0]

    def fetch(who: str, topic: str = "s") -> Callable[[], Awaitable[list[BusMessage]]]:
        async def run() -> list[BusMessage]:
            fetches.append(who)
            return [msg(topic, f"from {who}")]

        return run

    def now() -> float:
        return clock[0]

    assert await fan.shared_catch_up(b"s", fetch("a"), 1.0, now)
    assert not await fan.shared_catch_up(b"s", fetch("b"), 1.0, now)  # a did it for both
    assert await fan.shared_catch_up(b"t", fetch("other", "t"), 1.0, now)  # topics are separate
    assert fetches == ["a", "other"]
    assert (await recv(a)).payload == (await recv(b)).payload == b"from a"
    clock[0] += 1.0
    assert await fan.shared_catch_up(b"s", fetch("b"), 1.0, now)  # the interval passed
    assert fetches == ["a", "other", "b"]
    assert (await recv(other)).payload == b"from other"
    await fan.close()


async def test_recv_times_out_after_its_bound_measured_from_the_last_wait() -> None:
    loop = asyncio.get_running_loop()
    fan = Fanout(FakeSource(), buffer_messages=10, buffer_bytes=64 * 1024)
    reader = fan.subscribe("s")
    started = loop.time()
    with pytest.raises(TimeoutError):
        await reader.recv(0.1)
    assert 0.1 <= loop.time() - started < 1.0
    # A message before the bound: recv returns it; the next wait's bound runs from then on,
    # although the one timer was armed by the earlier wait and fires first.
    loop.call_later(0.15, fan.deliver, msg("s", "late"))
    assert (await reader.recv(0.3)).payload == b"late"
    again = loop.time()
    with pytest.raises(TimeoutError):
        await reader.recv(0.3)
    assert loop.time() - again >= 0.3
    # A buffered message is returned at once, whatever the bound; no bound, no timer.
    fan.deliver(msg("s", "ready"))
    assert (await reader.recv(0.0)).payload == b"ready"
    waiting = asyncio.create_task(reader.recv())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    fan.deliver(msg("s", "unbounded"))
    assert (await recv_task(waiting)).payload == b"unbounded"
    await fan.close()


async def test_a_shorter_bound_rearms_the_timer_and_close_cancels_it() -> None:
    loop = asyncio.get_running_loop()
    fan = Fanout(FakeSource(), buffer_messages=10, buffer_bytes=64 * 1024)
    reader = fan.subscribe("s")
    long_wait = asyncio.create_task(reader.recv(30.0))
    await asyncio.sleep(0)
    fan.deliver(msg("s", "x"))
    await recv_task(long_wait)
    started = loop.time()
    with pytest.raises(TimeoutError):  # not after the 30 s the armed timer waits for
        await reader.recv(0.05)
    assert loop.time() - started < 1.0
    pending = asyncio.create_task(reader.recv(30.0))
    await asyncio.sleep(0)
    reader.close()
    pending.cancel()
    assert reader._timer is None  # nothing of a closed reader stays scheduled
    await fan.close()


async def recv_task(task: asyncio.Task[BusMessage]) -> BusMessage:
    async with asyncio.timeout(1.0):
        return await task


async def test_the_collector_reports_readers_drops_and_unmatched_events() -> None:
    fan = Fanout(FakeSource(), buffer_messages=1, buffer_bytes=64 * 1024)
    fan.subscribe("plant1")
    fan.deliver(msg("plant1"))
    fan.deliver(msg("plant1"))  # the one-message buffer is full: dropped
    fan.deliver(msg("plant10"))  # heard through the prefix, watched by nobody
    values = {
        sample.name: sample.value
        for family in FanoutCollector(fan).collect()
        for sample in family.samples
    }
    assert values["plantd_gateway_watch_readers"] == 1
    assert values["plantd_gateway_watch_dropped_total"] == 1
    assert values["plantd_gateway_watch_unmatched_total"] == 1
    await fan.close()
