"""A late reply must never answer the next request (issue 7, item 9).

MDP replies carry no request id: a client tells its replies apart only by the socket they
arrive on. So after a timeout, a retry, or an abandoned stream, the socket that may still
receive the old request's reply must not serve another request. Each test lets a real worker
answer late through a real broker process, *before* the next request is answered (the worker
has credit 1, so the broker forwards the late reply first), and checks that the next request
gets its own answer. A client that reused its socket would read the late reply instead.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Generator, Iterator

import pytest
import zmq
from tests.kit import HEARTBEAT_MS, BrokerProcess, http_get, metric_value, start_broker, wait_for

from plantd.mdp import AsyncClient, BrokerError, Client, ErrorCode, RequestTimeout, Worker, codec

pytestmark = pytest.mark.integration

HOLD_MAX = 30.0  # a held request is released by the test long before this


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    b = start_broker(tmp_path_factory.mktemp("late-reply"))
    try:
        yield b
    finally:
        b.stop()


class Gate:
    """A handler that holds the first request whose body is ``b"hold"`` until released, then
    answers it late; every other request is answered at once. Answers name their request."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.answered: list[bytes] = []  # bodies, in the order their FINALs were produced
        self._held_once = False
        self._lock = threading.Lock()

    def handle(self, frames: list[bytes]) -> list[bytes] | Iterator[list[bytes]]:
        """A sync generator's ``return`` value is the FINAL (plantd.mdp.worker)."""
        if frames[0] == b"stream":
            return self._stream()
        with self._lock:
            hold = frames[0] == b"hold" and not self._held_once
            self._held_once = self._held_once or hold
        if hold:
            self.entered.set()
            self.release.wait(HOLD_MAX)
        with self._lock:
            self.answered.append(frames[0])
        return [b"reply-to-" + frames[0]]

    def _stream(self) -> Generator[list[bytes], None, list[bytes]]:
        """PARTIAL ``part-1`` at once, the FINAL only when released."""
        yield [b"part-1"]
        self.entered.set()
        self.release.wait(HOLD_MAX)
        with self._lock:
            self.answered.append(b"hold")  # counts as a late reply for _late_replies_sent
        return [b"stream-final"]


@pytest.fixture
def served(broker: BrokerProcess, request: pytest.FixtureRequest) -> Iterator[tuple[str, Gate]]:
    """A fresh service (named after the test) with a credit-1 Worker behind ``Gate``."""
    service = f"late.{request.node.name}"[:100]
    gate = Gate()
    w = Worker(broker.endpoint, service, gate.handle, heartbeat_ms=HEARTBEAT_MS).start()
    with Client(broker.endpoint, timeout=1.0, retries=0) as probe:

        def up() -> bool:
            try:
                return probe.mmi("mmi.service", service) == [b"200"]
            except (RequestTimeout, OSError):
                return False

        wait_for(up, 20, f"a worker for {service}")
    try:
        yield service, gate
    finally:
        gate.release.set()
        w.stop(2.0)


def _late_replies_sent(gate: Gate, n: int) -> None:
    wait_for(lambda: gate.answered.count(b"hold") >= n, 20, f"{n} late replies")


def test_sync_late_reply_after_timeout(broker: BrokerProcess, served: tuple[str, Gate]) -> None:
    service, gate = served
    with Client(broker.endpoint, timeout=1.0, retries=0) as c:
        with pytest.raises(RequestTimeout):
            c.request(service, "hold")
        assert gate.entered.is_set()
        gate.release.set()
        _late_replies_sent(gate, 1)
        assert c.request(service, "next", timeout=20) == [b"reply-to-next"]
        assert c.request(service, "again", timeout=20) == [b"reply-to-again"]


def test_sync_late_replies_after_retries(broker: BrokerProcess, served: tuple[str, Gate]) -> None:
    """Two attempts of one request time out; both are answered late (the second is queued
    behind the first), then the next request must get its own answer."""
    service, gate = served
    with Client(broker.endpoint, timeout=1.0, retries=1) as c:
        with pytest.raises(RequestTimeout) as info:
            c.request(service, "hold", idempotent=True)
        assert info.value.attempts == 2
        gate.release.set()
        _late_replies_sent(gate, 2)
        assert c.request(service, "next", timeout=20) == [b"reply-to-next"]


def test_sync_a_retry_answered_by_the_first_attempt(
    broker: BrokerProcess, served: tuple[str, Gate]
) -> None:
    """The first attempt's late reply answers the call (same request, so that is right); the
    second attempt's reply, still to come, must not answer the next call."""
    service, gate = served
    with Client(broker.endpoint, timeout=1.0, retries=5) as c:

        def release_after_the_first_timeout() -> None:
            gate.entered.wait(HOLD_MAX)
            # The client retries after one full timeout: once the broker has the retry (queued
            # behind the held request), let the worker answer the first attempt.
            wait_for(lambda: _requests_seen(broker, service) >= 2, 20, "the retry at the broker")
            gate.release.set()

        t = threading.Thread(target=release_after_the_first_timeout)
        t.start()
        try:
            assert c.request(service, "hold", idempotent=True) == [b"reply-to-hold"]
        finally:
            gate.release.set()
            t.join()
        _late_replies_sent(gate, 2)
        assert c.request(service, "next", timeout=20) == [b"reply-to-next"]


def test_sync_abandoned_stream_parts_do_not_leak(
    broker: BrokerProcess, served: tuple[str, Gate]
) -> None:
    """A stream closed after its first PARTIAL: its FINAL, still to come, must not answer the
    next request."""
    service, gate = served
    with Client(broker.endpoint, timeout=20, retries=0) as c:
        parts = c.stream(service, "stream")
        assert next(parts) == [b"part-1"]
        parts.close()
        gate.release.set()
        _late_replies_sent(gate, 1)
        assert c.request(service, "next") == [b"reply-to-next"]


def _requests_seen(broker: BrokerProcess, service: str) -> int:
    """Client requests the broker has received for ``service`` (from its /metrics)."""
    status, text = http_get(f"{broker.url}/metrics")
    if status != 200:
        return 0
    return int(metric_value(text, "plantd_broker_requests_total", {"service": service}))


# --------------------------------------------------------------------------- AsyncClient


def test_async_late_reply_after_timeout(broker: BrokerProcess, served: tuple[str, Gate]) -> None:
    """One socket in the pool, so a socket kept after the timeout would serve the next call."""
    service, gate = served

    async def scenario() -> tuple[list[bytes], list[bytes]]:
        async with AsyncClient(broker.endpoint, timeout=1.0, retries=0, max_sockets=1) as c:
            with pytest.raises(RequestTimeout):
                await c.request(service, "hold")
            gate.release.set()
            await asyncio.to_thread(_late_replies_sent, gate, 1)
            a = await c.request(service, "next", timeout=20)
            b = await c.request(service, "again", timeout=20)
            return a, b

    assert asyncio.run(scenario()) == ([b"reply-to-next"], [b"reply-to-again"])


def test_async_late_replies_after_retries(broker: BrokerProcess, served: tuple[str, Gate]) -> None:
    service, gate = served

    async def scenario() -> list[bytes]:
        async with AsyncClient(broker.endpoint, timeout=1.0, retries=1, max_sockets=1) as c:
            with pytest.raises(RequestTimeout) as info:
                await c.request(service, "hold", idempotent=True)
            assert info.value.attempts == 2
            gate.release.set()
            await asyncio.to_thread(_late_replies_sent, gate, 2)
            return await c.request(service, "next", timeout=20)

    assert asyncio.run(scenario()) == [b"reply-to-next"]


def test_async_concurrent_callers_never_swap_replies(
    broker: BrokerProcess, served: tuple[str, Gate]
) -> None:
    """Pool of 2 sockets, 20 concurrent callers, one of them timing out on a held request: every
    other caller gets the answer to its own request."""
    service, gate = served

    async def scenario() -> dict[bytes, list[bytes] | str]:
        async with AsyncClient(broker.endpoint, timeout=20, retries=0, max_sockets=2) as c:

            async def call(body: bytes, wait: float) -> tuple[bytes, list[bytes] | str]:
                try:
                    return body, await c.request(service, body, timeout=wait)
                except RequestTimeout:
                    return body, "timeout"

            held = asyncio.create_task(call(b"hold", 1.0))
            await asyncio.to_thread(gate.entered.wait, HOLD_MAX)
            others = [asyncio.create_task(call(f"n{i}".encode(), 20)) for i in range(20)]
            first = await held
            gate.release.set()
            rest = await asyncio.gather(*others)
            return dict([first, *rest])

    got = asyncio.run(scenario())
    assert got.pop(b"hold") == "timeout"
    assert got == {f"n{i}".encode(): [f"reply-to-n{i}".encode()] for i in range(20)}


def test_client_reuses_its_socket_when_nothing_more_can_come(broker: BrokerProcess) -> None:
    """The guard is not a socket per request: a clean exchange keeps the socket."""
    with Client(broker.endpoint, timeout=10, retries=0) as c:
        c.mmi("mmi.service", "x")
        sock = c._sock
        c.mmi("mmi.service", "x")
        assert c._sock is sock


# ------------------------------------------------- an error that leaves the request with a worker


class ErrThenLate:
    """A ROUTER answering like a broker that gave up on a request a worker still holds: the
    first request gets ``code``, and that request's real reply is sent to the same socket just
    before the answer to the next request from it (the worst moment). Runs in a thread."""

    def __init__(self, code: str) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.linger = 0
        self.endpoint = f"tcp://127.0.0.1:{self.sock.bind_to_random_port('tcp://127.0.0.1')}"
        self.code = code
        self.stop = threading.Event()
        self.identities: list[bytes] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        first: bytes | None = None
        while not self.stop.is_set():
            if not self.sock.poll(50):
                continue
            ident, *frames = self.sock.recv_multipart()
            req = codec.decode_inbound(frames)
            assert isinstance(req, codec.Request)
            self.identities.append(ident)
            reply = functools.partial(codec.encode_reply, req.service, final=True)
            if first is None:
                first = ident
                body = codec.error_reply_body(req.dialect, self.code, "gave up")
                self.sock.send_multipart([ident, *reply(body, dialect=req.dialect)])
                continue
            if ident == first:  # the old socket: the held request's reply comes first
                self.sock.send_multipart([ident, *reply([b"late"], dialect=req.dialect)])
            self.sock.send_multipart(
                [ident, *reply([b"reply-to-" + req.body[0]], dialect=req.dialect)]
            )

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close(0)
        self.ctx.term()


@pytest.mark.parametrize("code", [ErrorCode.DEADLINE_EXCEEDED, ErrorCode.WORKER_LOST])
def test_sync_error_that_may_be_followed_replaces_the_socket(code: str) -> None:
    fake = ErrThenLate(code)
    try:
        with Client(fake.endpoint, timeout=10, retries=0) as c:
            with pytest.raises(BrokerError) as info:
                c.request("svc", "first")
            assert info.value.code == code
            assert c.request("svc", "next") == [b"reply-to-next"]
        assert len(set(fake.identities)) == 2
    finally:
        fake.close()


@pytest.mark.parametrize("code", [ErrorCode.DEADLINE_EXCEEDED, ErrorCode.WORKER_LOST])
def test_async_error_that_may_be_followed_replaces_the_socket(code: str) -> None:
    fake = ErrThenLate(code)

    async def scenario() -> list[bytes]:
        async with AsyncClient(fake.endpoint, timeout=10, retries=0, max_sockets=1) as c:
            with pytest.raises(BrokerError):
                await c.request("svc", "first")
            return await c.request("svc", "next")

    try:
        assert asyncio.run(scenario()) == [b"reply-to-next"]
        assert len(set(fake.identities)) == 2
    finally:
        fake.close()


def test_other_errors_keep_the_socket() -> None:
    """QUEUE_FULL and the like settle the request: no late reply, the socket is kept (so a
    client refused under load keeps its routing id, and its place in per-client budgets)."""
    fake = ErrThenLate(ErrorCode.QUEUE_FULL)
    try:
        with Client(fake.endpoint, timeout=10, retries=0) as c:
            with pytest.raises(BrokerError):
                c.request("svc", "first")
            # The fake sends "late" first to a reused socket; a settled error means none will
            # come from a real broker, so reading it here proves the socket was kept.
            assert c.request("svc", "next") == [b"late"]
        assert len(set(fake.identities)) == 1
    finally:
        fake.close()
