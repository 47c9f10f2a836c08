"""Failure handling: dead workers, broker restarts, deadlines, bounds, bad input."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq
from mdp_helpers import EXPIRY_S, HB_MS, Peers, await_for, free_port, service_up, wait_for

from plantd.mdp import (
    AsyncClient,
    Broker,
    BrokerError,
    Client,
    Dialect,
    ErrorCode,
    StreamPart,
)

pytestmark = pytest.mark.integration

RIDE_OUT_S = 30.0  # how long a client's retries keep trying through a broker restart


async def _done(tasks: list[asyncio.Task[list[bytes]]], n: int) -> bool:
    return sum(t.done() for t in tasks) >= n


def test_worker_killed_mid_request_fails_fast(broker: Broker, peers: Peers) -> None:
    ep = broker.endpoints[0]
    w = peers.worker(ep, "slow", "--mode", "slow", "--delay", "30")
    service_up(ep, "slow")
    with Client(ep, timeout=10) as c:
        sock_ready = time.monotonic()

        def kill_soon() -> None:
            wait_for(lambda: broker.snapshot().services[0].in_flight == 1, 5, "dispatch")
            os.kill(w.pid, signal.SIGKILL)

        import threading

        t = threading.Thread(target=kill_soon)
        t.start()
        with pytest.raises(BrokerError) as info:
            c.request("slow", "x")
        t.join()
        waited = time.monotonic() - sock_ready
    assert info.value.code == ErrorCode.WORKER_LOST
    # Expiry is liveness x heartbeat plus up to one heartbeat tick; x3 leaves room for load.
    assert waited < 3 * HB_MS / 1000 * 3 + 1.0, f"WORKER_LOST took {waited:.2f}s"
    assert broker.stats().errors["slow", "WORKER_LOST"] == 1


def test_broker_restart_workers_reregister_clients_recover(peers: Peers) -> None:
    port = free_port()
    ep = f"tcp://127.0.0.1:{port}"
    b1 = peers.start("broker", "--endpoint", ep)
    peers.worker(ep, "echo")
    service_up(ep, "echo")
    # The retries must outlast, on a loaded box: a new broker process starting (seconds), the
    # worker noticing the loss (EXPIRY_S) and its reconnect backoff (0.25 s doubling). 20 x 0.5 s
    # ran out under load; the budget is a deadline, not an estimate of the restart time.
    with Client(ep, timeout=0.5, retries=int(RIDE_OUT_S / 0.5)) as c:
        assert c.request("echo", "before") == [b"before"]
        b1.send_signal(signal.SIGKILL)
        b1.wait(5)
        peers.start("broker", "--endpoint", ep)
        # Same client object: the idempotent retries ride out the restart.
        assert c.request("echo", "after", idempotent=True) == [b"after"]


def test_unknown_service_waits_then_service_unavailable(make_broker: Callable[..., Broker]) -> None:
    b = make_broker(request_timeout=0.3)
    with Client(b.endpoints[0], timeout=3) as c:
        t0 = time.monotonic()
        with pytest.raises(BrokerError) as info:
            c.request("nobody.home", "x")
        assert 0.25 < time.monotonic() - t0 < 2.0
    assert info.value.code == ErrorCode.SERVICE_UNAVAILABLE
    assert "nobody.home" in info.value.message


def test_unknown_service_served_if_worker_arrives_in_time(
    make_broker: Callable[..., Broker], peers: Peers
) -> None:
    b = make_broker(request_timeout=5.0)
    ep = b.endpoints[0]

    async def go() -> list[bytes]:
        async with AsyncClient(ep, timeout=5) as c:
            task = asyncio.create_task(c.request("late", "x"))
            await asyncio.sleep(0.3)
            peers.worker(ep, "late")
            return await task

    assert asyncio.run(go()) == [b"x"]


def test_queue_deadline_exceeded(
    make_broker: Callable[..., Broker], peers: Peers, tmp_path: Path
) -> None:
    b = make_broker(request_timeout=0.4)
    ep = b.endpoints[0]
    gate = tmp_path / "gate"
    # Busy until the queued request has expired: "served after the deadline" is a condition,
    # not a 2 s delay racing a 0.4 s deadline on a loaded box.
    peers.worker(ep, "slow", "--mode", "gate", "--gate", str(gate))
    service_up(ep, "slow")

    async def go() -> list[object]:
        async with AsyncClient(ep, timeout=30) as c:
            tasks = [asyncio.create_task(c.request("slow", x)) for x in ("a", "b")]
            await await_for(lambda: _done(tasks, 1), 20, "the queued request to expire")
            gate.touch()
            return list(await asyncio.gather(*tasks, return_exceptions=True))

    results = asyncio.run(go())
    errors = [r for r in results if isinstance(r, BrokerError)]
    assert [e.code for e in errors] == [ErrorCode.DEADLINE_EXCEEDED]
    assert [b"a"] in results or [b"b"] in results


def test_queue_full(make_broker: Callable[..., Broker], peers: Peers, tmp_path: Path) -> None:
    b = make_broker(max_queue=2, request_timeout=30)
    ep = b.endpoints[0]
    gate = tmp_path / "gate"
    # Busy until the refusals are in, so how many fit depends on max_queue alone, not on how
    # fast a loaded box delivers 6 requests compared with a fixed handler delay.
    peers.worker(ep, "slow", "--mode", "gate", "--gate", str(gate))
    service_up(ep, "slow")

    async def go() -> list[object]:
        async with AsyncClient(ep, timeout=30) as c:
            tasks = [asyncio.create_task(c.request("slow", str(i))) for i in range(6)]
            await await_for(lambda: _done(tasks, 3), 20, "3 requests refused")
            gate.touch()
            return list(await asyncio.gather(*tasks, return_exceptions=True))

    results = asyncio.run(go())
    full = [r for r in results if isinstance(r, BrokerError) and r.code == ErrorCode.QUEUE_FULL]
    ok = [r for r in results if isinstance(r, list)]
    assert len(full) == 3 and len(ok) == 3  # 1 in flight + 2 queued are served


def test_handler_error_reply_and_worker_survives(broker: Broker, peers: Peers) -> None:
    ep = broker.endpoints[0]
    peers.worker(ep, "fail", "--mode", "fail")
    service_up(ep, "fail")
    with Client(ep, timeout=3) as c:
        with pytest.raises(BrokerError) as info:
            c.request("fail", "boom")
        assert info.value.code == ErrorCode.HANDLER_ERROR
        assert "exploded on purpose" in info.value.message
        assert c.request("fail", "ok") == [b"ok"]


def test_random_frame_spray_while_serving(broker: Broker, peers: Peers) -> None:
    ep = broker.endpoints[0]
    peers.worker(ep, "echo")
    service_up(ep, "echo")
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    spray = ctx.socket(zmq.DEALER)
    spray.linger = 0
    spray.connect(ep)
    rng = random.Random(7)
    atoms = [b"", b"MDPC02", b"MDPW02", b"MDPC01", b"MDPW01", b"\x01", b"\x04", b"FINAL", b"READY"]
    with Client(ep, timeout=3) as c:
        for i in range(300):
            n = rng.randint(1, 6)
            frames = [
                rng.choice(atoms) if rng.random() < 0.6 else rng.randbytes(rng.randint(0, 9))
                for _ in range(n)
            ]
            spray.send_multipart(frames)
            if i % 30 == 0:
                assert c.request("echo", str(i)) == [str(i).encode()]
        assert c.request("echo", "last") == [b"last"]
    spray.close()
    stats = broker.stats()
    assert stats.total_malformed > 50, stats.malformed
    assert stats.workers["echo"] == 1  # the real worker was not disturbed


def test_oversized_messages_refused(make_broker: Callable[..., Broker], peers: Peers) -> None:
    b = make_broker(max_frame_size=1024, max_message_size=4096)
    ep = b.endpoints[0]
    peers.worker(ep, "echo")
    service_up(ep, "echo")
    with Client(ep, timeout=3) as c:
        # Total above the message limit (each frame below the frame limit): an error reply.
        with pytest.raises(BrokerError) as info:
            c.request("echo", *([b"x" * 1000] * 5))
        assert info.value.code == ErrorCode.MESSAGE_TOO_LARGE
        assert c.request("echo", b"x" * 1000) == [b"x" * 1000]
    # One frame above the frame limit: libzmq drops the connection; nothing is delivered,
    # and the client hears of it at once (the drop is its request's), not at its timeout.
    with Client(ep, timeout=10, retries=0) as c, pytest.raises(BrokerError) as lost:
        started = time.monotonic()
        c.request("echo", b"y" * 5000)
    assert lost.value.code == ErrorCode.BROKER_LOST
    assert time.monotonic() - started < 2
    with Client(ep, timeout=3) as c:
        assert c.request("echo", "still fine") == [b"still fine"]
    assert b.stats().malformed.get("message_too_large") == 1


def test_oversized_stream_part_fails_the_request_and_nothing_leaks(
    make_broker: Callable[..., Broker], peers: Peers
) -> None:
    b = make_broker(max_frame_size=1024, max_message_size=4096)
    ep = b.endpoints[0]
    peers.worker(ep, "big", "--mode", "bigstream")
    service_up(ep, "big")
    with Client(ep, timeout=3) as c:
        got: list[StreamPart] = []
        with pytest.raises(BrokerError) as info:
            for part in c.stream_parts("big", "big"):
                got.append(part)
        assert info.value.code == ErrorCode.MESSAGE_TOO_LARGE
        assert "streamed reply part of" in info.value.message
        assert got == [StreamPart([b"small"], False)]
        # Same socket: the swallowed FINAL must not answer this request, and the worker's
        # credit came back (a credit-1 worker would otherwise never be sent another request).
        assert list(c.stream("big", "ok")) == [[b"small"], [b"end", b"ok"]]
    with Client(ep, timeout=3, dialect=Dialect.MDP01) as c:
        # MDP/0.1: parts are buffered for the one REPLY; the buffer is bounded while it grows.
        with pytest.raises(BrokerError) as info:
            c.request("big", "many")
        assert info.value.code == ErrorCode.MESSAGE_TOO_LARGE
        assert c.request("big", "ok") == [b"small", b"end", b"ok"]
    stats = b.stats()
    assert stats.errors[("big", ErrorCode.MESSAGE_TOO_LARGE)] == 2
    assert stats.busy_workers["big"] == 0 and stats.workers["big"] == 1


def test_long_handler_keeps_heartbeating(broker: Broker, peers: Peers) -> None:
    """A handler running 2x the expiry time: heartbeats continue, the worker is not dropped."""
    ep = broker.endpoints[0]
    delay = 2 * EXPIRY_S
    peers.worker(ep, "slow", "--mode", "slow", "--delay", str(delay))
    service_up(ep, "slow")
    ident = broker.snapshot().workers[0].identity
    with Client(ep, timeout=delay + 20) as c:
        assert c.request("slow", "long") == [b"long"]
    assert [w.identity for w in broker.snapshot().workers] == [ident]
    assert not broker.stats().errors
