"""HANDLER_ERROR from our workers: a handler that raises fails its own request and nothing else,
and the error is sent in the form the worker's broker passes on.

Rule: a worker sends errors in its own dialect. MDP/0.2 and MDP/0.1 workers send
``[b"plantd.error", CODE, message]`` (our broker turns that into the JSON envelope for legacy
clients); a legacy-dialect worker sends the original's envelope
``{"success":false,"error":…,"code":"HANDLER_ERROR"}`` itself, because the broker it was made
for (the original Go broker) forwards bodies untouched and its clients JSON-decode them.

The broker here is a bare ROUTER socket driven by the test, sending exactly what the original
broker (reference/plantd-original.md §3.2 W2) or ours sends: every frame the worker answers is
checked as it is on the wire.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import zmq
from tests.kit import HEARTBEAT_MS, BrokerProcess, start_broker, wait_for

from plantd.mdp import (
    AsyncWorker,
    BrokerError,
    Client,
    Dialect,
    ErrorCode,
    FinalPart,
    RequestTimeout,
    Worker,
    codec,
)
from plantd.mdp.errors import ERROR_MARKER

pytestmark = pytest.mark.integration


class FakeBroker:
    """A ROUTER on a free loopback port that a test drives frame by frame. It heartbeats the
    worker that said READY (every 100 ms while the test waits), so the worker never gives up
    on it, and hides the worker's heartbeats from the test."""

    def __init__(self) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.linger = 0
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.worker: bytes | None = None
        self.heartbeat: list[bytes] = []

    def recv(self, timeout: float = 15.0) -> list[bytes]:
        """The next message that is not a HEARTBEAT (identity frame first)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.worker is not None:
                self.send(self.worker, self.heartbeat)
            assert time.monotonic() < deadline, f"the worker sent nothing in {timeout}s"
            if not self.sock.poll(100):
                continue
            frames = self.sock.recv_multipart()
            msg = codec.decode_inbound(frames[1:])
            if isinstance(msg, codec.Heartbeat):
                continue
            if isinstance(msg, codec.Ready):
                self.worker = frames[0]
                self.heartbeat = codec.encode_broker_heartbeat(msg.dialect, msg.delimited)
            return frames

    def ready(self) -> tuple[bytes, list[bytes]]:
        msg = self.recv()
        assert isinstance(codec.decode_inbound(msg[1:]), codec.Ready), msg
        return msg[0], msg[1:]

    def send(self, worker: bytes, frames: list[bytes]) -> None:
        self.sock.send_multipart([worker, *frames])

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


@pytest.fixture
def fake() -> Iterator[FakeBroker]:
    b = FakeBroker()
    yield b
    b.close()


def _worker(endpoint: str, handler: Any, dialect: Dialect, credit: int = 1) -> Worker:
    return Worker(
        endpoint, "svc", handler, dialect=dialect, credit=credit, heartbeat_ms=HEARTBEAT_MS
    ).start()


def _replies_by_client(fake: FakeBroker, n: int, dialect: Dialect) -> dict[bytes, list[bytes]]:
    """Read ``n`` FINALs; map client address -> body (the worker's own layout checked)."""
    out: dict[bytes, list[bytes]] = {}
    while len(out) < n:
        _, *frames = fake.recv()
        msg = codec.decode_inbound(frames)
        assert isinstance(msg, codec.WorkerReply), frames
        assert msg.dialect is dialect
        if msg.final:
            out[msg.client] = msg.body
    return out


def flaky(frames: list[bytes]) -> list[bytes]:
    if frames[0] == b"bad":
        raise KeyError("no such thing")
    return [b"ok:" + frames[0]]


def test_legacy_worker_sends_the_original_envelope_itself(fake: FakeBroker) -> None:
    w = _worker(fake.endpoint, flaky, Dialect.LEGACY)
    try:
        wid, ready = fake.ready()
        assert ready == [b"", b"MDPW02", b"READY", b"svc"]
        # The original broker's REQUEST (W2): [MDPW02, REQUEST, client, "", body...].
        fake.send(wid, [b"MDPW02", b"REQUEST", b"client-1", b"", b"bad"])
        msg = fake.recv()
        # W4 as the original broker reads it: it drops client and the "" and forwards the rest.
        assert msg[1:6] == [b"", b"MDPW02", b"FINAL", b"client-1", b""]
        (body,) = msg[6:]
        doc = json.loads(body)
        assert doc == {
            "success": False,
            "error": "KeyError: 'no such thing'",
            "code": "HANDLER_ERROR",
        }
    finally:
        w.stop(1.0)


@pytest.mark.parametrize("dialect", [Dialect.MDP02, Dialect.MDP01])
def test_mdp_workers_send_plantd_error(fake: FakeBroker, dialect: Dialect) -> None:
    w = _worker(fake.endpoint, flaky, dialect)
    try:
        wid, _ = fake.ready()
        fake.send(wid, codec.encode_worker_request(b"client-1", [b"bad"], dialect))
        got = _replies_by_client(fake, 1, dialect)
        assert got[b"client-1"] == [ERROR_MARKER, b"HANDLER_ERROR", b"KeyError: 'no such thing'"]
    finally:
        w.stop(1.0)


@pytest.mark.parametrize("dialect", list(Dialect))
def test_a_raising_handler_fails_only_its_own_request(fake: FakeBroker, dialect: Dialect) -> None:
    """Ten requests at once, every third one bad, on four handler threads: each bad one gets
    HANDLER_ERROR, every other one its answer, and the worker goes on serving."""
    w = _worker(fake.endpoint, flaky, dialect, credit=4)
    try:
        wid, _ = fake.ready()
        wanted = {}
        for i in range(10):
            client, body = f"c{i}".encode(), (b"bad" if i % 3 == 0 else f"x{i}".encode())
            wanted[client] = body
            fake.send(wid, codec.encode_worker_request(client, [body], dialect))
        got = _replies_by_client(fake, 10, dialect)
        for client, body in wanted.items():
            err = codec.parse_error_reply(got[client])
            if body == b"bad":
                assert err == ("HANDLER_ERROR", "KeyError: 'no such thing'"), got[client]
            else:
                assert err is None and got[client] == [b"ok:" + body]
        # Counted just after each send: poll rather than race the worker's thread.
        wait_for(lambda: (w.inner.errors, w.inner.handled) == (4, 6), 5, "4 errors, 6 served")
        fake.send(wid, codec.encode_worker_request(b"after", [b"y"], dialect))
        assert _replies_by_client(fake, 1, dialect)[b"after"] == [b"ok:y"]
    finally:
        w.stop(1.0)


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken too")


def test_an_exception_that_cannot_be_printed_still_gets_a_reply(fake: FakeBroker) -> None:
    def handler(frames: list[bytes]) -> list[bytes]:
        raise Unprintable

    w = _worker(fake.endpoint, handler, Dialect.MDP02)
    try:
        wid, _ = fake.ready()
        fake.send(wid, codec.encode_worker_request(b"c", [b"x"], Dialect.MDP02))
        body = _replies_by_client(fake, 1, Dialect.MDP02)[b"c"]
        assert codec.parse_error_reply(body) == (
            "HANDLER_ERROR",
            "Unprintable: <exception text unavailable>",
        )
    finally:
        w.stop(1.0)


def test_a_huge_exception_text_is_cut(fake: FakeBroker) -> None:
    def handler(frames: list[bytes]) -> list[bytes]:
        raise ValueError("v" * 5_000_000)

    w = _worker(fake.endpoint, handler, Dialect.LEGACY)
    try:
        wid, _ = fake.ready()
        fake.send(wid, [b"MDPW02", b"REQUEST", b"c", b"", b"x"])
        msg = fake.recv()
        assert len(msg[-1]) < 10_000
        assert json.loads(msg[-1])["code"] == "HANDLER_ERROR"
    finally:
        w.stop(1.0)


def test_a_stream_that_raises_ends_in_handler_error(fake: FakeBroker) -> None:
    def handler(frames: list[bytes]) -> Iterator[list[bytes]]:
        yield [b"part-1"]
        raise OSError("sensor unplugged")

    w = _worker(fake.endpoint, handler, Dialect.MDP02)
    try:
        wid, _ = fake.ready()
        fake.send(wid, codec.encode_worker_request(b"c", [b"x"], Dialect.MDP02))
        first = codec.decode_inbound(fake.recv()[1:])
        assert isinstance(first, codec.WorkerReply) and not first.final
        assert first.body == [b"part-1"]
        body = _replies_by_client(fake, 1, Dialect.MDP02)[b"c"]
        assert codec.parse_error_reply(body) == ("HANDLER_ERROR", "OSError: sensor unplugged")
    finally:
        w.stop(1.0)


# --------------------------------------------------------------------------- AsyncWorker


async def _serve_async(
    fake: FakeBroker, worker: AsyncWorker, requests: list[tuple[bytes, bytes]], dialect: Dialect
) -> dict[bytes, list[bytes]]:
    """Run ``worker``, send every request at once, return the FINAL bodies by client."""
    task = asyncio.create_task(worker.run())
    try:
        wid, _ = await asyncio.to_thread(fake.ready)
        for client, body in requests:
            fake.send(wid, codec.encode_worker_request(client, [body], dialect))
        return await asyncio.to_thread(_replies_by_client, fake, len(requests), dialect)
    finally:
        await worker.stop(1.0)
        await asyncio.wait_for(task, 10)


@pytest.mark.parametrize("dialect", list(Dialect))
def test_async_handler_failure_is_isolated(fake: FakeBroker, dialect: Dialect) -> None:
    async def handler(frames: list[bytes]) -> list[bytes]:
        await asyncio.sleep(0)
        return flaky(frames)

    w = AsyncWorker(
        fake.endpoint, "svc", handler, credit=8, dialect=dialect, heartbeat_ms=HEARTBEAT_MS
    )
    reqs = [(f"c{i}".encode(), b"bad" if i % 2 else b"v") for i in range(6)]
    got = asyncio.run(_serve_async(fake, w, reqs, dialect))
    for client, body in reqs:
        err = codec.parse_error_reply(got[client])
        assert (err is not None) == (body == b"bad"), got[client]
        if dialect is Dialect.LEGACY and err is not None:
            assert len(got[client]) == 1 and json.loads(got[client][0])["success"] is False


@pytest.mark.parametrize("dialect", list(Dialect))
def test_batch_handler_fails_one_request_with_an_exception_in_its_slot(
    fake: FakeBroker, dialect: Dialect
) -> None:
    """The batch contract: one result per request; an exception (or a result that is not
    frames) in a slot fails that request alone."""

    def batch(bodies: list[list[bytes]]) -> list[Any]:
        out: list[Any] = []
        for b in bodies:
            if b[0] == b"bad":
                out.append(ValueError("bad input"))
            elif b[0] == b"junk":
                out.append(42)  # not frames: a TypeError for this request only
            else:
                out.append([b"ok:" + b[0]])
        return out

    w = AsyncWorker(
        fake.endpoint, "svc", batch_handler=batch, credit=16, dialect=dialect,
        heartbeat_ms=HEARTBEAT_MS,
    )  # fmt: skip
    reqs = [(f"c{i}".encode(), [b"v", b"bad", b"junk"][i % 3]) for i in range(9)]
    got = asyncio.run(_serve_async(fake, w, reqs, dialect))
    for client, body in reqs:
        err = codec.parse_error_reply(got[client])
        if body == b"v":
            assert got[client] == [b"ok:v"]
        else:
            assert err is not None and err[0] == "HANDLER_ERROR", got[client]
            assert ("ValueError" if body == b"bad" else "TypeError") in err[1]
    assert w.errors == 6 and w.handled == 3


def test_a_raising_batch_handler_fails_its_call_and_the_worker_goes_on(fake: FakeBroker) -> None:
    """A batch handler that raises cannot say which request was at fault: every request of that
    call gets HANDLER_ERROR (running them again one by one could apply a write twice), and the
    next call is served normally."""
    calls = 0

    async def batch(bodies: list[list[bytes]]) -> list[list[bytes]]:
        nonlocal calls
        calls += 1
        if any(b[0] == b"bad" for b in bodies):
            raise RuntimeError("batch failed")
        return [[b"ok:" + b[0]] for b in bodies]

    w = AsyncWorker(fake.endpoint, "svc", batch_handler=batch, credit=16, heartbeat_ms=HEARTBEAT_MS)

    async def scenario() -> tuple[dict[bytes, list[bytes]], dict[bytes, list[bytes]]]:
        task = asyncio.create_task(w.run())
        try:
            wid, _ = await asyncio.to_thread(fake.ready)
            for client, body in [(b"a", b"bad"), (b"b", b"v")]:
                fake.send(wid, codec.encode_worker_request(client, [body], Dialect.MDP02))
            first = await asyncio.to_thread(_replies_by_client, fake, 2, Dialect.MDP02)
            fake.send(wid, codec.encode_worker_request(b"c", [b"w"], Dialect.MDP02))
            second = await asyncio.to_thread(_replies_by_client, fake, 1, Dialect.MDP02)
            return first, second
        finally:
            await w.stop(1.0)
            await asyncio.wait_for(task, 10)

    first, second = asyncio.run(scenario())
    bad = codec.parse_error_reply(first[b"a"])
    assert bad == ("HANDLER_ERROR", "RuntimeError: batch failed")
    # b came in the same call as a (sent back to back) or in a call of its own.
    assert first[b"b"] == [b"ok:v"] or codec.parse_error_reply(first[b"b"]) == bad
    assert second[b"c"] == [b"ok:w"]
    wait_for(lambda: calls >= 2, 5, "the second batch call")


def test_final_part_and_errors_in_one_worker(fake: FakeBroker) -> None:
    """A stream ending in FinalPart next to a failing request: neither leaks into the other."""

    def handler(frames: list[bytes]) -> Iterator[Any]:
        if frames[0] == b"bad":
            raise LookupError("nope")
        yield [b"p"]
        yield FinalPart([b"done"])

    w = _worker(fake.endpoint, handler, Dialect.MDP02, credit=2)
    try:
        wid, _ = fake.ready()
        fake.send(wid, codec.encode_worker_request(b"good", [b"x"], Dialect.MDP02))
        fake.send(wid, codec.encode_worker_request(b"bad", [b"bad"], Dialect.MDP02))
        got = _replies_by_client(fake, 2, Dialect.MDP02)
        assert got[b"good"] == [b"done"]
        assert codec.parse_error_reply(got[b"bad"]) == ("HANDLER_ERROR", "LookupError: nope")
    finally:
        w.stop(1.0)


# --------------------------------------------------------------------------- through our broker


@pytest.fixture(scope="module")
def real_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    b = start_broker(
        tmp_path_factory.mktemp("worker-errors"),
        env={"PLANTD_BROKER_REQUEST_TIMEOUT_MS": "1500"},
    )
    try:
        yield b
    finally:
        b.stop()


def _up(endpoint: str, service: str) -> None:
    with Client(endpoint, timeout=1.0, retries=0) as probe:

        def up() -> bool:
            try:
                return probe.mmi("mmi.service", service) == [b"200"]
            except (RequestTimeout, OSError):
                return False

        wait_for(up, 20, f"a worker for {service}")


@pytest.mark.parametrize("worker_dialect", list(Dialect))
@pytest.mark.parametrize("client_dialect", list(Dialect))
def test_handler_error_reaches_every_client_dialect_as_broker_error(
    real_broker: BrokerProcess, worker_dialect: Dialect, client_dialect: Dialect
) -> None:
    """Whatever the two peers speak, our client raises BrokerError(HANDLER_ERROR) for the bad
    request and gets the answer for the good one, through a real broker process."""
    service = f"flaky.{worker_dialect.label}"
    w = Worker(
        real_broker.endpoint, service, flaky, dialect=worker_dialect, heartbeat_ms=HEARTBEAT_MS
    ).start()
    try:
        _up(real_broker.endpoint, service)
        with Client(real_broker.endpoint, timeout=20, retries=0, dialect=client_dialect) as c:
            with pytest.raises(BrokerError) as info:
                c.request(service, "bad")
            assert info.value.code == ErrorCode.HANDLER_ERROR
            assert info.value.message == "KeyError: 'no such thing'"
            assert c.request(service, "fine") == [b"ok:fine"]
    finally:
        w.stop(1.0)


@pytest.mark.parametrize("client_dialect", list(Dialect))
def test_broker_errors_are_coded_for_every_client_dialect(
    real_broker: BrokerProcess, client_dialect: Dialect
) -> None:
    c = Client(real_broker.endpoint, timeout=20, retries=0, dialect=client_dialect)
    with c, pytest.raises(BrokerError) as info:
        c.request("nobody.home", "x")
    assert info.value.code == ErrorCode.SERVICE_UNAVAILABLE
