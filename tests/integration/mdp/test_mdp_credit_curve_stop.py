"""Credit window, batch handler, many requests in flight, CURVE allow/deny, graceful stop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq
from mdp_helpers import HB_MS, Peers, require, service_up, wait_for

from plantd.common.curve import CurveClient, CurveServer, generate_keypair, write_keypair
from plantd.mdp import (
    AsyncClient,
    AsyncWorker,
    Broker,
    BrokerError,
    Client,
    ErrorCode,
    RequestTimeout,
)

pytestmark = pytest.mark.integration


async def _burst(ep: str, service: str, n: int, wait: float = 5) -> list[list[bytes]]:
    async with AsyncClient(ep, timeout=wait) as c:
        return list(await asyncio.gather(*(c.request(service, str(i)) for i in range(n))))


def test_credit_window_runs_requests_concurrently(broker: Broker, peers: Peers) -> None:
    ep = broker.endpoints[0]
    peers.worker(ep, "wide", "--mode", "slow", "--delay", "0.5", "--credit", "4")
    peers.worker(ep, "narrow", "--mode", "slow", "--delay", "0.5")
    service_up(ep, "wide")
    service_up(ep, "narrow")
    t0 = time.monotonic()
    assert asyncio.run(_burst(ep, "wide", 4)) == [[str(i).encode()] for i in range(4)]
    wide = time.monotonic() - t0
    t0 = time.monotonic()
    assert asyncio.run(_burst(ep, "narrow", 3)) == [[str(i).encode()] for i in range(3)]
    narrow = time.monotonic() - t0
    assert wide < 1.2, f"credit=4 worker took {wide:.2f}s for 4 x 0.5s requests"
    assert narrow > 1.4, f"a standard worker must take one at a time ({narrow:.2f}s)"
    credits = {w.service: w.credit for w in broker.snapshot().workers}
    assert credits == {"wide": 4, "narrow": 1}


def test_batch_handler_gets_batches(broker: Broker, peers: Peers) -> None:
    ep = broker.endpoints[0]
    peers.worker(ep, "batch", "--mode", "batch", "--delay", "0.2", "--credit", "50")
    service_up(ep, "batch")
    replies = asyncio.run(_burst(ep, "batch", 40))
    # Each reply is [request, batch size]; requests match and at least one batch held several.
    assert [r[0] for r in replies] == [str(i).encode() for i in range(40)]
    assert max(int(r[1]) for r in replies) > 1


async def test_async_client_many_in_flight_in_process(broker: Broker) -> None:
    ep = broker.endpoints[0]
    seen: list[int] = []

    async def batch(reqs: list[list[bytes]]) -> list[list[bytes]]:
        seen.append(len(reqs))
        await asyncio.sleep(0.01)
        return [[b"re:" + r[0]] for r in reqs]

    w = AsyncWorker(ep, "inproc.echo", batch_handler=batch, heartbeat_ms=HB_MS, credit=64)
    task = asyncio.create_task(w.run())
    try:
        await asyncio.wait_for(w.connected.wait(), 5)
        async with AsyncClient(ep, timeout=5, max_sockets=32) as c:
            out = await asyncio.gather(*(c.request("inproc.echo", f"m{i}") for i in range(200)))
            assert out == [[f"re:m{i}".encode()] for i in range(200)]
            assert c.sockets_open <= 32
        assert sum(seen) == 200 and max(seen) > 1
    finally:
        await w.stop(1.0)
        await asyncio.wait_for(task, 5)


def _curve_setup(
    tmp_path: Path,
) -> tuple[CurveServer, CurveClient, CurveClient, Path, Path, Path]:
    server = generate_keypair()
    good = generate_keypair()
    bad = generate_keypair()
    assert server.secret and good.secret and bad.secret
    write_keypair(tmp_path, "server", server)
    _, good_file = write_keypair(tmp_path / "clients", "good", good)
    _, bad_file = write_keypair(tmp_path / "strangers", "bad", bad)
    cs = CurveServer(server.secret, server.public, {good.public})
    return (
        cs,
        CurveClient(good.secret, good.public, server.public),
        CurveClient(bad.secret, bad.public, server.public),
        good_file,
        bad_file,
        tmp_path / "server.key",
    )


def test_curve_allow_and_deny(
    make_broker: Callable[..., Broker], peers: Peers, tmp_path: Path
) -> None:
    require(zmq.has("curve"), "libzmq built without CURVE")
    cs, good, bad, good_file, bad_file, server_pub = _curve_setup(tmp_path)
    b = make_broker(curve=cs)
    ep = b.endpoints[0]
    # A worker with an unknown key cannot register: its handshake is refused.
    peers.worker(ep, "evil", "--curve-keys", str(bad_file), "--server-key", str(server_pub))
    wait_for(lambda: b.stats().handshakes.get("auth_failed", 0) >= 1, 10, "the refused worker")
    peers.worker(ep, "echo", "--curve-keys", str(good_file), "--server-key", str(server_pub))
    service_up(ep, "echo", curve=good)
    with Client(ep, timeout=3, curve=good) as c:
        assert c.mmi("mmi.service", "evil") == [b"404"]
    assert [w.service for w in b.snapshot().workers] == ["echo"]
    with Client(ep, timeout=3, curve=good) as c:
        assert c.request("echo", "secret") == [b"secret"]
    with Client(ep, timeout=1.0, retries=0, curve=bad) as c, pytest.raises(RequestTimeout):
        c.mmi("mmi.service", "echo")
    # A client without CURVE at all gets nothing either.
    with Client(ep, timeout=0.5, retries=0) as c, pytest.raises(RequestTimeout):
        c.request("echo", "plain")
    wait_for(lambda: b.stats().handshakes.get("auth_failed", 0) >= 1, 3, "a counted rejection")
    assert b.stats().requests.get(("echo", "mdp02"), 0) >= 1


def test_graceful_stop(make_broker: Callable[..., Broker], peers: Peers) -> None:
    b = make_broker()
    ep = b.endpoints[0]
    w = peers.worker(ep, "slow", "--mode", "slow", "--delay", "0.6")
    service_up(ep, "slow")
    results: dict[str, object] = {}

    def inflight() -> None:
        with Client(ep, timeout=5) as c:
            results["inflight"] = c.request("slow", "finish-me")

    t = threading.Thread(target=inflight)
    t.start()
    wait_for(lambda: any(s.in_flight for s in b.snapshot().services), 3, "dispatch")
    stopper = threading.Thread(target=b.stop, kwargs={"drain_timeout": 3.0})
    stopper.start()
    wait_for(lambda: b.snapshot().draining, 2, "draining")
    with Client(ep, timeout=3) as c, pytest.raises(BrokerError) as info:
        c.request("slow", "too-late")
    assert info.value.code == ErrorCode.SHUTTING_DOWN
    t.join(5)
    stopper.join(5)
    assert results["inflight"] == [b"finish-me"]
    assert b.wait_stopped(1)
    # The worker was told to DISCONNECT; it stays alive, trying to reconnect.
    assert w.poll() is None


def test_stop_fails_requests_past_drain_timeout(
    make_broker: Callable[..., Broker], peers: Peers
) -> None:
    b = make_broker()
    ep = b.endpoints[0]
    peers.worker(ep, "slow", "--mode", "slow", "--delay", "5")
    service_up(ep, "slow")
    err: list[BaseException] = []

    def call() -> None:
        try:
            with Client(ep, timeout=5) as c:
                c.request("slow", "x")
        except BaseException as exc:
            err.append(exc)

    t = threading.Thread(target=call)
    t.start()
    wait_for(lambda: any(s.in_flight for s in b.snapshot().services), 3, "dispatch")
    t0 = time.monotonic()
    b.stop(drain_timeout=0.3)
    t.join(5)
    assert time.monotonic() - t0 < 2.0
    # In flight at the drain deadline: it may have run, so it is lost, not refused.
    assert isinstance(err[0], BrokerError) and err[0].code == ErrorCode.WORKER_LOST
