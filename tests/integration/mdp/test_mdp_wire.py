"""Exact frames on a real socket: READY is answered at once, Go-shaped legacy peers, MMI on a
busy service, and errors counted by dialect."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator

import pytest
import zmq
from mdp_helpers import Peers, service_up, wait_for

from plantd.mdp import (
    AsyncClient,
    AsyncWorker,
    Broker,
    BrokerError,
    Client,
    Dialect,
    ErrorCode,
    Worker,
)

pytestmark = pytest.mark.integration

SLOW_HB_MS = 10_000  # far longer than any wait below: a reply cannot be a periodic heartbeat


@pytest.fixture
def dealers() -> Iterator[Callable[[str], zmq.Socket[bytes]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    made: list[zmq.Socket[bytes]] = []

    def make(endpoint: str) -> zmq.Socket[bytes]:
        s = ctx.socket(zmq.DEALER)
        s.linger = 0
        s.connect(endpoint)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close(0)


def _recv(sock: zmq.Socket[bytes], timeout: float = 3.0) -> list[bytes]:
    assert sock.poll(int(timeout * 1000)), "no message within the deadline"
    return sock.recv_multipart()


@pytest.mark.parametrize(
    ("ready", "heartbeat"),
    [
        ([b"MDPW02", b"\x01", b"svc"], [b"MDPW02", b"\x05"]),
        ([b"", b"MDPW01", b"\x01", b"svc"], [b"", b"MDPW01", b"\x04"]),
        ([b"", b"MDPW02", b"READY", b"svc"], [b"MDPW02", b"HEARTBEAT"]),
    ],
    ids=["mdp02", "mdp01", "legacy"],
)
def test_ready_is_answered_with_a_heartbeat_at_once(
    make_broker: Callable[..., Broker],
    dealers: Callable[[str], zmq.Socket[bytes]],
    ready: list[bytes],
    heartbeat: list[bytes],
) -> None:
    b = make_broker(heartbeat_ms=SLOW_HB_MS)
    w = dealers(b.endpoints[0])
    t0 = time.monotonic()
    w.send_multipart(ready)
    assert _recv(w, 2.0) == heartbeat
    assert time.monotonic() - t0 < 2.0  # not the periodic heartbeat, 10 s away


async def test_worker_is_connected_without_waiting_a_heartbeat_interval(
    make_broker: Callable[..., Broker],
) -> None:
    b = make_broker(heartbeat_ms=SLOW_HB_MS)
    w = AsyncWorker(b.endpoints[0], "quick", lambda f: f, heartbeat_ms=SLOW_HB_MS)
    task = asyncio.create_task(w.run())
    try:
        t0 = time.monotonic()
        await asyncio.wait_for(w.connected.wait(), 3.0)
        assert time.monotonic() - t0 < 3.0
    finally:
        await w.stop(1.0)
        await asyncio.wait_for(task, 5)


def test_go_shaped_legacy_worker_and_client(
    broker: Broker, dealers: Callable[[str], zmq.Socket[bytes]]
) -> None:
    """The original Go library's frames exactly (reference plantd-original.md §3.2)."""
    ep = broker.endpoints[0]
    worker = dealers(ep)
    worker.send_multipart([b"", b"MDPW02", b"READY", b"go.echo"])  # W1
    assert _recv(worker) == [b"MDPW02", b"HEARTBEAT"]  # W6, sent on READY
    client = dealers(ep)
    client.send_multipart([b"", b"MDPC02", b"REQUEST", b"go.echo", b"hello", b"world"])  # C1
    req = _recv(worker)  # W2
    assert req[:2] == [b"MDPW02", b"REQUEST"] and req[3:] == [b"", b"hello", b"world"]
    client_id = req[2]

    # The only worker is busy: mmi.service still says 200 (the original said 404).
    with Client(ep, timeout=3) as c:
        assert c.mmi("mmi.service", "go.echo") == [b"200"]

    worker.send_multipart([b"", b"MDPW02", b"HEARTBEAT"])  # W5, while busy
    worker.send_multipart([b"", b"MDPW02", b"PARTIAL", client_id, b"p1"])  # W3, no delimiter
    worker.send_multipart([b"", b"MDPW02", b"FINAL", client_id, b"hello", b"world"])  # W4
    assert _recv(client) == [b"MDPC02", b"PARTIAL", b"go.echo", b"p1"]  # C2
    assert _recv(client) == [b"MDPC02", b"FINAL", b"go.echo", b"hello", b"world"]  # C3

    # W8: a Go worker that leaves while holding a request fails it at once, in the dialect.
    client.send_multipart([b"", b"MDPC02", b"REQUEST", b"go.echo", b"again"])
    assert _recv(worker)[4:] == [b"again"]
    worker.send_multipart([b"", b"MDPW02", b"DISCONNECT"])
    err = _recv(client)
    # In the original's envelope: the Go client JSON-decodes the first body frame.
    assert err[:3] == [b"MDPC02", b"FINAL", b"go.echo"] and len(err) == 4
    assert json.loads(err[3]) == {
        "success": False,
        "error": "worker disconnected",
        "code": "WORKER_LOST",
    }
    assert broker.stats().workers["go.echo"] == 0
    assert broker.stats().dialect_errors["go.echo", "legacy", "WORKER_LOST"] == 1


def test_errors_are_counted_by_service_dialect_and_code(
    make_broker: Callable[..., Broker], peers: Peers
) -> None:
    b = make_broker(max_queue=0)  # no queue: a request finding the worker busy is refused
    ep = b.endpoints[0]
    peers.worker(ep, "busy", "--mode", "slow", "--delay", "3")
    service_up(ep, "busy")

    async def go() -> list[str]:
        async with AsyncClient(ep, timeout=5, retries=0) as hold:
            held = asyncio.create_task(hold.request("busy", "hold"))
            await asyncio.to_thread(
                wait_for, lambda: b.snapshot().services[0].in_flight == 1, 5, "dispatch"
            )
            codes = []
            for d in (Dialect.MDP02, Dialect.LEGACY, Dialect.LEGACY, Dialect.MDP01):
                with Client(ep, timeout=3, retries=0, dialect=d) as c:
                    try:
                        c.request("busy", d.label)
                    except BrokerError as exc:
                        codes.append(exc.code)
            held.cancel()
            return codes

    assert asyncio.run(go()) == [ErrorCode.QUEUE_FULL] * 4
    stats = b.stats()
    assert stats.dialect_errors == {
        ("busy", "mdp02", "QUEUE_FULL"): 1,
        ("busy", "legacy", "QUEUE_FULL"): 2,
        ("busy", "mdp01", "QUEUE_FULL"): 1,
    }
    assert stats.errors == {("busy", "QUEUE_FULL"): 4}


def test_stopped_worker_says_disconnect(make_broker: Callable[..., Broker]) -> None:
    """A clean stop unregisters at once (DISCONNECT), not after the 30 s expiry."""
    b = make_broker(heartbeat_ms=SLOW_HB_MS)
    ep = b.endpoints[0]
    w = Worker(ep, "leaving", lambda f: f, heartbeat_ms=SLOW_HB_MS).start()
    with Client(ep, timeout=3) as c:
        wait_for(lambda: c.mmi("mmi.service", "leaving") == [b"200"], 5, "registration")
        assert c.request("leaving", "x") == [b"x"]
        t0 = time.monotonic()
        w.stop(2.0)
        wait_for(lambda: c.mmi("mmi.service", "leaving") == [b"404"], 5, "the DISCONNECT")
    assert time.monotonic() - t0 < 5.0
    assert b.stats().workers["leaving"] == 0
