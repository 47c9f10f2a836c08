"""WatchEntries' ordering logic against a fake state and a fake bus: live events in order,
duplicates and other topics dropped, a gap filled from the history, a compacted history
answered with a snapshot, a token re-checked on silence."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from plantd.bus import BusMessage
from plantd.gateway.fanout import Fanout
from plantd.gateway.watch import Watch
from plantd.v1 import state_pb2 as pb

pytestmark = pytest.mark.unit


def change(rev: int, key: str = "k", op: str = "set") -> dict[str, Any]:
    return {"op": op, "key": key, "value": str(rev), "version": rev, "revision": rev, "ts": 1}


class FakeState:
    def __init__(self, history: list[dict[str, Any]], oldest: int = 0) -> None:
        self.history = history
        self.oldest = oldest
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((operation, body))
        rev = self.history[-1]["revision"] if self.history else 0
        if operation == "snapshot":
            return {"revision": rev, "items": [{"key": "k", "value": "v", "version": rev}]}
        since = body["revision"]
        if since < self.oldest:
            return {"compacted": True, "revision": rev, "changes": [], "more": False}
        changes = [c for c in self.history if c["revision"] > since]
        return {"compacted": False, "revision": rev, "changes": changes, "more": False}


class FakeBus:
    def __init__(self, messages: list[tuple[bytes, dict[str, Any] | bytes]]) -> None:
        self.queue: asyncio.Queue[BusMessage] = asyncio.Queue()
        for topic, payload in messages:
            raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.queue.put_nowait(BusMessage(topic, raw))

    async def recv(self) -> BusMessage:
        return await self.queue.get()


class SilentSource:
    """The shared subscription's source when the bus says nothing (tests hand events to the
    fan-out or the readers themselves)."""

    def subscribe(self, topic: str | bytes) -> None: ...

    def unsubscribe(self, topic: str | bytes) -> None: ...

    async def recv(self) -> BusMessage:
        await asyncio.Event().wait()
        raise AssertionError

    def close(self) -> None: ...


async def take(watch: Watch, n: int) -> list[pb.WatchEntriesResponse]:
    out: list[pb.WatchEntriesResponse] = []
    async with asyncio.timeout(5):
        async for resp in watch.responses():
            out.append(resp)
            if len(out) >= n:
                return out
    return out


async def test_live_events_in_order_and_gaps_filled_from_history() -> None:
    state = FakeState([change(1), change(2)])  # the start point: revision 2
    bus = FakeBus(
        [
            (b"s", change(3)),
            (b"s", change(3)),  # duplicate
            (b"s10", change(4)),  # another scope sharing the prefix
            (b"s", b"not json"),
            (b"s", change(6)),  # gap: 4 and 5 were lost
        ]
    )
    watch = Watch(pb.WatchEntriesRequest(scope="s"), state, bus, recheck=lambda: None, resync_s=5.0)
    responses = watch.responses()
    first = await anext(responses)
    assert first.created and first.revision == 2
    live = await anext(responses)
    assert [c.revision for c in live.changes] == [3]
    state.history = [change(r) for r in range(1, 7)]  # what the lost events wrote
    filled = await anext(responses)
    assert [c.revision for c in filled.changes] == [4, 5, 6]
    await responses.aclose()


async def test_compacted_history_sends_a_snapshot() -> None:
    state = FakeState([change(r) for r in range(1, 10)], oldest=5)
    watch = Watch(
        pb.WatchEntriesRequest(scope="s", start_revision=2),
        state,
        FakeBus([]),
        recheck=lambda: None,
        resync_s=5.0,
    )
    head, snap = await take(watch, 2)
    assert head.created and head.revision == 2
    assert snap.compacted and snap.revision == 9 and snap.snapshot[0].key == "k"


async def test_prefix_filters_keys_but_not_scope_changes() -> None:
    state = FakeState([change(1, "a/1"), change(2, "b/1"), change(3, "", "delete-scope")])
    watch = Watch(
        pb.WatchEntriesRequest(scope="s", key_prefix="a/", start_revision=0),
        state,
        FakeBus([]),
        recheck=lambda: None,
        resync_s=5.0,
    )
    _, batch = await take(watch, 2)
    assert [c.entry.key for c in batch.changes] == ["a/1", ""]
    assert batch.changes[1].type == pb.CHANGE_TYPE_DELETE_SCOPE and batch.revision == 3


async def test_silence_rechecks_the_token_and_reads_the_history() -> None:
    state = FakeState([change(1)])
    checks: list[int] = []

    def recheck() -> None:
        checks.append(1)
        if len(checks) >= 2:
            raise PermissionError("token expired")

    watch = Watch(
        pb.WatchEntriesRequest(scope="s"), state, FakeBus([]), recheck=recheck, resync_s=0.05
    )
    with pytest.raises(PermissionError):
        await take(watch, 10)
    assert len(checks) == 2
    assert [op for op, _ in state.calls].count("changes-since") == 1  # once per silent period


async def test_a_truncated_snapshot_is_refused_not_sent_in_part() -> None:
    from plantd.gateway.state_map import RpcFailure

    async def big(operation: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"revision": 3, "items": [], "truncated": True}

    watch = Watch(
        pb.WatchEntriesRequest(scope="s", send_snapshot=True),
        big,
        FakeBus([]),
        recheck=lambda: None,
        resync_s=5.0,
    )
    with pytest.raises(RpcFailure) as err:
        await take(watch, 1)
    assert err.value.code == "REPLY_TOO_LARGE"


async def test_an_ended_bus_subscription_ends_the_watch_with_where_to_resume() -> None:
    from plantd.gateway.fanout import SourceClosed
    from plantd.gateway.state_map import RpcFailure

    class EndedBus:
        async def recv(self) -> BusMessage:
            raise SourceClosed("the gateway is stopping")

    watch = Watch(
        pb.WatchEntriesRequest(scope="s"),
        FakeState([change(1), change(2)]),
        EndedBus(),
        recheck=lambda: None,
        resync_s=5.0,
    )
    responses = watch.responses()
    assert (await anext(responses)).created
    with pytest.raises(RpcFailure) as failure:
        await anext(responses)
    assert failure.value.code == "SHUTTING_DOWN"
    assert "revision 2" in failure.value.message


async def test_on_the_shared_subscription_one_watch_reads_the_history_for_all() -> None:
    """Two silent watches of one scope: one ``changes-since`` per resync, whose change both
    send (a lost last event), and neither reads the history again within the interval."""

    state = FakeState([change(1), change(2)])  # the start point: revision 2
    fan = Fanout(SilentSource(), buffer_messages=10, buffer_bytes=64 * 1024)
    watches = [
        Watch(
            pb.WatchEntriesRequest(scope="s"),
            state,
            fan.subscribe("s"),
            recheck=lambda: None,
            resync_s=0.2,
        )
        for _ in range(2)
    ]
    streams = [w.responses() for w in watches]
    for stream in streams:
        assert (await anext(stream)).created
    state.history.append(change(3))  # written; its bus event never arrived
    async with asyncio.timeout(5):
        got = await asyncio.gather(*(anext(stream) for stream in streams))
    assert [[c.revision for c in r.changes] for r in got] == [[3], [3]]
    reads = [op for op, _ in state.calls if op == "changes-since"]
    assert len(reads) == 1, state.calls
    for stream in streams:
        await stream.aclose()
    await fan.close()


def test_a_payload_every_watch_receives_is_parsed_once() -> None:
    from plantd.gateway.watch import _RecentEvents

    recent = _RecentEvents(slots=2)
    payload = b'{"op":"set","key":"k","value":"v","version":3,"revision":3}'
    first = recent(payload)
    assert first is not None and first["revision"] == 3
    assert recent(payload) is first, "the same object for every watch"
    live = recent.response(payload, "s")
    assert recent.response(payload, "s") is live, "one response object shared by the watches"
    assert live.revision == 3 and live.changes[0].entry.value == "v"
    assert recent(b"not json") is None
    # An equal payload that is another object is parsed on its own (identity, not equality).
    twin = bytes(bytearray(payload))
    assert recent(twin) == first and recent(twin) is not first
    recent(b'{"revision":9}')
    assert recent(payload) is not first, "pushed out of the two slots, parsed again"


async def test_a_burst_already_waiting_goes_out_packed_and_a_gap_stops_the_pack() -> None:
    """Events buffered behind the one read are sent in one response (in order, the prefix
    applied); at a gap the packing stops, the history fills it, and nothing repeats."""

    state = FakeState([change(1)])  # the start point: revision 1
    fan = Fanout(SilentSource(), buffer_messages=100, buffer_bytes=64 * 1024)
    reader = fan.subscribe("s")
    watch = Watch(
        pb.WatchEntriesRequest(scope="s", key_prefix="k"),
        state,
        reader,
        recheck=lambda: None,
        resync_s=10,
    )
    stream = watch.responses()
    assert (await anext(stream)).created
    burst = [change(2), change(3), change(4, key="other"), change(5), change(7), change(8)]
    state.history += [*burst[:4], change(6, key="k6"), *burst[4:]]  # 6's event was lost
    for c in burst:
        assert reader.offer(BusMessage(b"s", json.dumps(c).encode()))
    async with asyncio.timeout(5):
        packed = await anext(stream)
        filled = await anext(stream)
    # 2..5 in one response (4 is not under the prefix, so not sent, but not a gap either).
    assert [c.revision for c in packed.changes] == [2, 3, 5] and packed.revision == 5
    # 7 was a gap: the history sends 6, 7, 8, and the bus's 7 and 8 are then old news.
    assert [c.revision for c in filled.changes] == [6, 7, 8]
    state.history.append(change(9))
    assert reader.offer(BusMessage(b"s", json.dumps(change(9)).encode()))
    async with asyncio.timeout(5):
        after = await anext(stream)
    assert [c.revision for c in after.changes] == [9], "the bus's 8 was not sent again"
    await stream.aclose()
    await fan.close()


async def test_a_watch_whose_buffer_overflowed_reads_its_own_history() -> None:
    """The tail of a burst overflows a stalled watch's buffer while another watch of the
    scope got everything: the stalled one reads the history from where it is, not the
    shared read from where the other one is (which finds nothing)."""

    state = FakeState([change(1)])
    fan = Fanout(SilentSource(), buffer_messages=2, buffer_bytes=64 * 1024)

    def watch(resync_s: float) -> Watch:
        request = pb.WatchEntriesRequest(scope="s")
        return Watch(request, state, fan.subscribe("s"), recheck=lambda: None, resync_s=resync_s)

    # The fast watch goes silent sooner, so it always leads the shared read.
    fast, slow = watch(0.05), watch(0.2)
    fast_stream, slow_stream = fast.responses(), slow.responses()
    assert (await anext(fast_stream)).created and (await anext(slow_stream)).created
    events = [change(r) for r in range(2, 7)]
    state.history += events
    got: list[int] = []
    for c in events:  # delivered one at a time: the fast watch takes each at once
        fan.deliver(BusMessage(b"s", json.dumps(c).encode()))
        async with asyncio.timeout(5):
            got += [x.revision for x in (await anext(fast_stream)).changes]
    assert got == [2, 3, 4, 5, 6]
    assert slow.sub.dropped == 3  # type: ignore[attr-defined]  # its buffer kept 2 and 3

    async def keep_reading() -> None:
        async for _ in fast_stream:
            raise AssertionError("the fast watch has everything already")

    leader = asyncio.create_task(keep_reading())
    seen: list[int] = []
    async with asyncio.timeout(5):
        while len(seen) < 5:
            seen += [x.revision for x in (await anext(slow_stream)).changes]
    assert seen == [2, 3, 4, 5, 6]
    # Its own read, from where its buffer ended (3), not the shared one from the fast watch's.
    assert ("changes-since", 3) in [(op, b.get("revision")) for op, b in state.calls], state.calls
    leader.cancel()
    await slow_stream.aclose()
    await fan.close()


async def test_a_dropped_tail_is_read_as_soon_as_the_buffer_drains() -> None:
    """A burst overflows a watch's buffer and nothing follows it: once the buffer is read,
    the dropped tail comes from the history at once, not after resync_s of silence."""

    state = FakeState([change(1)])
    fan = Fanout(SilentSource(), buffer_messages=2, buffer_bytes=64 * 1024)
    request = pb.WatchEntriesRequest(scope="s")
    watch = Watch(request, state, fan.subscribe("s"), recheck=lambda: None, resync_s=60)
    stream = watch.responses()
    assert (await anext(stream)).created
    events = [change(r) for r in range(2, 7)]
    state.history += events
    for c in events:  # the client reads nothing meanwhile: 4, 5 and 6 are dropped
        fan.deliver(BusMessage(b"s", json.dumps(c).encode()))
    assert watch.sub.dropped == 3  # type: ignore[attr-defined]
    seen: list[int] = []
    async with asyncio.timeout(2):  # far less than resync_s
        while len(seen) < 5:
            seen += [x.revision for x in (await anext(stream)).changes]
    assert seen == [2, 3, 4, 5, 6]
    await stream.aclose()
    await fan.close()


def event(rev: int, key: str = "k") -> BusMessage:
    return BusMessage(b"s", json.dumps(change(rev, key)).encode())


async def test_live_events_go_to_the_sink_without_the_task_in_order_and_nothing_twice() -> None:
    state = FakeState([change(1)])
    fan = Fanout(SilentSource(), buffer_messages=100, buffer_bytes=64 * 1024)
    reader = fan.subscribe("s")
    sunk: list[pb.WatchEntriesResponse] = []
    accept = [True]

    def sink(response: pb.WatchEntriesResponse) -> bool:
        if accept[0]:
            sunk.append(response)
        return accept[0]

    watch = Watch(
        pb.WatchEntriesRequest(scope="s", key_prefix="k"),
        state,
        reader,
        recheck=lambda: None,
        resync_s=10,
        sink=sink,
    )
    stream = watch.responses()
    assert (await anext(stream)).created  # revision 1
    # Before the watch waits in recv nothing goes direct: the message is buffered for it.
    assert fan.deliver(event(2)) == 1 and reader.pending == 1 and not sunk
    assert [c.revision for c in (await anext(stream)).changes] == [2]
    waiting = asyncio.create_task(anext(stream))
    await asyncio.sleep(0)  # the watch now waits in recv
    fan.deliver(event(3))
    fan.deliver(event(3))  # a duplicate: skipped, as the task would
    fan.deliver(event(4, key="other"))  # outside the prefix: skipped, but counted as seen
    fan.deliver(event(5))
    assert [r.changes[0].revision for r in sunk] == [3, 5] and watch.last == 5
    assert reader.pending == 0 and not waiting.done()
    # A gap goes to the task, which reads the history (6 was lost, 7 arrives).
    state.history += [change(r) for r in range(2, 8)]
    fan.deliver(event(7))
    async with asyncio.timeout(5):
        filled = await waiting
    assert [c.revision for c in filled.changes] == [6, 7] and watch.last == 7
    # A sink that cannot take it now leaves it to the task; the watch's position stays.
    waiting = asyncio.create_task(anext(stream))
    await asyncio.sleep(0)
    accept[0] = False
    fan.deliver(event(8))
    async with asyncio.timeout(5):
        assert [c.revision for c in (await waiting).changes] == [8]
    assert [r.changes[0].revision for r in sunk] == [3, 5]
    await stream.aclose()
    await fan.close()


async def test_a_failing_direct_consumer_is_dropped_and_its_message_buffered() -> None:
    fan = Fanout(SilentSource(), buffer_messages=10, buffer_bytes=64 * 1024)
    reader = fan.subscribe("s")

    def broken(message: BusMessage) -> bool:
        raise RuntimeError("bug")

    reader.direct = broken
    waiting = asyncio.create_task(reader.recv())
    await asyncio.sleep(0)
    other = fan.subscribe("s")
    assert fan.deliver(event(1)) == 2  # the other reader got it too
    async with asyncio.timeout(5):
        assert (await waiting).payload == event(1).payload
    assert reader.direct is None and other.pending == 1
    await fan.close()


@pytest.mark.parametrize("direct", [False, True], ids=["task", "direct"])
async def test_a_busy_watch_rechecks_its_token_as_often_as_a_silent_one(direct: bool) -> None:
    """Events every 10 ms never leave resync_s of silence: the token is verified on the event
    path too, on the task's path and on the direct one alike."""
    fan = Fanout(SilentSource(), buffer_messages=100, buffer_bytes=64 * 1024)
    reader = fan.subscribe("s")
    checks: list[float] = []

    def recheck() -> None:
        checks.append(time.monotonic())
        if len(checks) >= 2:
            raise PermissionError("token revoked")

    def sink(response: pb.WatchEntriesResponse) -> bool:
        return True

    watch = Watch(
        pb.WatchEntriesRequest(scope="s"),
        FakeState([change(1)]),
        reader,
        recheck=recheck,
        resync_s=0.1,
        sink=sink if direct else None,
    )

    async def feed() -> None:
        for rev in range(2, 1000):
            fan.deliver(event(rev))
            await asyncio.sleep(0.01)

    feeder = asyncio.create_task(feed())
    started = time.monotonic()
    with pytest.raises(PermissionError):
        async with asyncio.timeout(5):
            async for _ in watch.responses():
                pass
    feeder.cancel()
    assert len(checks) == 2 and time.monotonic() - started < 1.0, checks
    await fan.close()
