"""BusProxy with real sockets in one process: forwarding, filtering, counters, errors."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import zmq
import zmq.asyncio
from tests.integration.broker.brokerkit import free_port, wait_for

from plantd.bus import AsyncSubscriber, BusError, BusProxy, Publisher, Subscriber, bus_endpoints

pytestmark = pytest.mark.integration


@pytest.fixture
def ctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    c: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield c
    c.destroy(linger=0)


@pytest.fixture
def bus(ctx: zmq.Context[zmq.Socket[bytes]]) -> Iterator[BusProxy]:
    front, back = bus_endpoints("127.0.0.1", (free_port(), free_port()))
    proxy = BusProxy("test", front, back, context=ctx)
    proxy.start()
    yield proxy
    proxy.stop()


def _drain(sub: Subscriber, timeout: float = 0.3) -> list[tuple[bytes, bytes]]:
    out = []
    while (msg := sub.recv(timeout=timeout)) is not None:
        out.append((msg.topic, msg.payload))
    return out


def test_forwards_with_prefix_filtering(bus: BusProxy, ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    state = Subscriber(bus.backend_endpoint, [b"state."], context=ctx)
    everything = Subscriber(bus.backend_endpoint, context=ctx)
    pubs = [Publisher(bus.frontend_endpoint, context=ctx) for _ in range(2)]
    for p in pubs:
        assert p.wait_for_subscriber(b"state.a", timeout=10)
        assert p.wait_for_subscriber(b"event.a", timeout=10)  # the catch-all subscription
    pubs[0].publish(b"state.a", b"1")
    pubs[1].publish("event.b", b"2")
    pubs[1].publish(b"state.c", b"3")
    got_state = _drain(state)
    got_all = _drain(everything)
    # Order holds per publisher, not across two publishers' connections.
    assert sorted(got_state) == [(b"state.a", b"1"), (b"state.c", b"3")]
    assert sorted(got_all) == [(b"event.b", b"2"), (b"state.a", b"1"), (b"state.c", b"3")]
    stats = bus.stats()
    assert stats.frames_in == 6  # three two-frame messages
    assert stats.bytes_in == len(b"state.a1event.b2state.c3")
    assert stats.subscription_frames >= 2
    state.close()
    everything.close()
    for p in pubs:
        p.close()


def test_publisher_filters_before_the_wire(
    bus: BusProxy, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    sub = Subscriber(bus.backend_endpoint, [b"wanted"], context=ctx)
    pub = Publisher(bus.frontend_endpoint, context=ctx)
    assert pub.wait_for_subscriber(b"wanted", timeout=10)
    assert not pub.has_subscriber(b"unwanted")
    for _ in range(10):
        pub.publish(b"unwanted", b"x")
    pub.publish(b"wanted", b"y")
    assert _drain(sub) == [(b"wanted", b"y")]
    # Unsubscribed topics never reached the proxy: only the one message was counted.
    wait_for(lambda: bus.stats().frames_in == 2, 5, "the proxy to count one message")
    sub.close()
    pub.close()


def test_malformed_messages_are_dropped_not_fatal(
    bus: BusProxy, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    sub = Subscriber(bus.backend_endpoint, context=ctx)
    raw = ctx.socket(zmq.PUB)
    raw.connect(bus.frontend_endpoint)
    pub = Publisher(bus.frontend_endpoint, context=ctx)
    assert pub.wait_for_subscriber(b"t", timeout=10)

    def try_raw() -> bool:  # the raw PUB has no subscription wait: resend until seen
        raw.send_multipart([b"t", b"a", b"b"])
        raw.send(b"single")
        return sub._sock.poll(100) != 0

    wait_for(try_raw, 10, "the raw publisher to be connected")
    pub.publish(b"t", b"ok")
    msg = sub.recv(timeout=5)
    assert msg is not None and msg.payload == b"ok"
    assert sub.malformed >= 2
    raw.close(0)
    sub.close()
    pub.close()


async def test_async_subscriber(bus: BusProxy, ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    actx = zmq.asyncio.Context()
    try:
        async with AsyncSubscriber(bus.backend_endpoint, ["m."], context=actx) as sub:
            pub = Publisher(bus.frontend_endpoint, context=ctx)
            assert await asyncio.to_thread(pub.wait_for_subscriber, "m.x", 10)
            for i in range(3):
                pub.publish("m.x", str(i).encode())
            received = []
            async with asyncio.timeout(10):
                async for msg in sub:
                    received.append(msg.payload)
                    if len(received) == 3:
                        break
            assert received == [b"0", b"1", b"2"]
            pub.close()
    finally:
        actx.destroy(linger=0)


def test_bind_conflict_names_the_endpoint(
    bus: BusProxy, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    clash = BusProxy("clash", bus.frontend_endpoint, f"tcp://127.0.0.1:{free_port()}", context=ctx)
    with pytest.raises(BusError, match=bus.frontend_endpoint.replace("*", r"\*")):
        clash.start()
    assert not clash.running


def test_stop_is_idempotent_and_keeps_counts(
    bus: BusProxy, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    sub = Subscriber(bus.backend_endpoint, context=ctx)
    pub = Publisher(bus.frontend_endpoint, context=ctx)
    assert pub.wait_for_subscriber(b"x", timeout=10)
    pub.publish(b"x", b"y")
    assert sub.recv(timeout=5) is not None
    bus.stop()
    bus.stop()
    assert not bus.running
    assert bus.stats().frames_in == 2
    sub.close()
    pub.close()


def test_bad_payload_type_is_a_clear_error(
    bus: BusProxy, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    with Publisher(bus.frontend_endpoint, context=ctx) as pub:
        with pytest.raises(TypeError, match="payload must be bytes"):
            pub.publish("t", "text")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="topic must be str or bytes"):
            pub.publish(3, b"x")  # type: ignore[arg-type]
