"""Issue 7 case 4: budgets in bytes and frames, not only in message counts."""

from __future__ import annotations

import re
import time

import pytest
import zmq
from tests.adversarial.advkit import (
    Bounds,
    MakeStack,
    Stack,
    error_code,
    recv_until,
    under_attack,
    wait_settled,
)
from tests.kit.wait import wait_for

pytestmark = pytest.mark.adversarial

MIB = 1024 * 1024
ECHO = b"org.plantd.module.Echo"


def test_slow_consumer_of_big_replies(make_stack: MakeStack) -> None:
    """400 x 1 MiB echo requests from a client that never reads (receive HWM 1, 4 KiB kernel
    buffer), as in the issue (the broker went 56 -> 531 MB). The broker's peak stays within
    200 MB of its baseline: past the per-client, per-service or broker-wide byte budget the
    client gets TOO_MANY_REQUESTS / QUEUE_FULL / OVERLOADED, and the probe keeps answering."""
    stack: Stack = make_stack(with_state=False)
    payload = b"x" * MIB
    with under_attack(stack, "case 4 slow consumer", Bounds({"broker": 200})):
        sock = stack.dealer("attacker", rcvhwm=1, rcvbuf=4096)
        t0 = time.monotonic()
        for _ in range(400):
            sock.send_multipart([b"MDPC02", b"\x01", ECHO, b"echo", payload], copy=False)
        # The replies (and refusals) pile up wherever the budgets let them: let the broker
        # reach its worst (RSS flat for 2 s), then read what came back.
        wait_settled([stack.pid("broker"), stack.pid("echo")])
        flood_s = time.monotonic() - t0
        codes: dict[str, int] = {}
        for reply in recv_until(sock, 10.0, count=400):
            code = error_code(reply) or "ok"
            codes[code] = codes.get(code, 0) + 1
        sock.close(0)
    print(f"[case 4 slow consumer] settled after {flood_s:.1f} s; replies by code {codes}")
    refused = sum(codes.get(c, 0) for c in ("TOO_MANY_REQUESTS", "QUEUE_FULL", "OVERLOADED"))
    assert refused > 0, f"400 MiB from one slow client and no budget refused any: {codes}"


def test_one_message_of_many_empty_frames(make_stack: MakeStack) -> None:
    """One request of 50,000 empty frames (0 payload bytes, so no byte limit applies; 12 x
    the default max_frames of 4096). The issue used 3 million (+266 MB, a stalled loop). With
    CURVE every frame is its own crypto box, decrypted by the broker's libzmq I/O thread
    before the broker can count them: 300,000 frames cost ~1 s of that thread (measured
    unloaded; 3 probe timeouts under load, and at 100,000 one 1 s probe timeout in a CI run),
    whatever the dispatcher does, so a sixth of that (as in bench.soak) proves the frame limit
    without measuring libzmq. The sender gets MESSAGE_TOO_LARGE, the
    message never reaches the worker, and the probe keeps answering. libzmq holds the whole
    multipart message (~64 B per frame) first, hence an RSS bound of 100 MB, not ~0."""
    stack: Stack = make_stack(with_state=False)
    with under_attack(stack, "case 4 frames", Bounds({"broker": 100, "echo": 50})):
        sock = stack.dealer("attacker")
        frames = [b"MDPC02", b"\x01", ECHO, b"echo"] + [b""] * 50_000
        t0 = time.monotonic()
        sock.send_multipart(frames)
        del frames
        got = recv_until(sock, 30.0)
        took = time.monotonic() - t0
        sock.close(0)
    assert got, "no reply to a 100,000-frame request within 30 s"
    print(f"[case 4 frames] reply of {len(got[0])} frames after {took:.1f} s")
    assert error_code(got[0]) == "MESSAGE_TOO_LARGE", got[0][:6]


def _dropped(metrics: str) -> float:
    """Bus messages refused in /metrics: dropped by the forwarder (too large, too many frames)
    plus publisher connections libzmq closed for a frame over the bus size limit."""
    total = 0.0
    for line in metrics.splitlines():
        if re.match(r"plantd_bus_(dropped_messages|publisher_disconnects)(_total)?[{ ]", line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_big_publish_to_a_slow_subscriber(make_stack: MakeStack) -> None:
    """3 x 100 MiB published on the event bus to a subscriber that never reads (the issue:
    3 x 200 MiB peaked the broker at 1.85 GB; half the size still proves it at ~0.9 GB).
    Past the bus message-size limit the messages are dropped (never forwarded) and counted
    in /metrics (a frame over it makes libzmq close the publisher's connection: counted too);
    the broker stays within 200 MB and the bus keeps carrying small messages."""
    stack: Stack = make_stack(with_state=False)
    pub_ep, sub_ep = stack.bus("event")
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    slow = ctx.socket(zmq.SUB)
    slow.rcvhwm, slow.rcvbuf, slow.linger = 1, 4096, 0
    stack.curve("attacker").apply(slow)
    slow.subscribe(b"")
    slow.connect(sub_ep)
    good = ctx.socket(zmq.SUB)
    good.linger = 0
    stack.curve("client").apply(good)
    good.subscribe(b"small")
    good.connect(sub_ep)
    pub = ctx.socket(zmq.PUB)
    pub.linger = 0
    stack.curve("attacker").apply(pub)
    pub.connect(pub_ep)

    def small_arrives() -> bool:
        pub.send_multipart([b"small", b"x"])
        return bool(good.poll(100))

    wait_for(small_arrives, 20.0, "a small event through the bus before the attack")
    while good.poll(0):
        good.recv_multipart()
    big = b"y" * (100 * MIB)
    with under_attack(stack, "case 4 bus", Bounds({"broker": 200})):
        for _ in range(3):
            pub.send_multipart([b"big", big], copy=False)
        wait_for(small_arrives, 30.0, "a small event through the bus after the big ones")
        dropped = wait_for(lambda: _dropped(stack.metrics()), 10.0, "a bus drop counted")
    for s in (slow, good, pub):
        s.close(0)
    print(f"[case 4 bus] dropped counted in /metrics: {dropped}")
