"""Streaming replies (PARTIAL...FINAL) and the management interface."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from mdp_helpers import HB_MS, Peers, service_up

from plantd.mdp import AsyncClient, Broker, BrokerError, Client, Dialect, ErrorCode, StreamPart

pytestmark = pytest.mark.integration

EXPECTED = [[b"part", b"0"], [b"part", b"1"], [b"part", b"2"], [b"final", b"q"]]


@pytest.mark.parametrize(
    ("worker_dialect", "mode"),
    [("mdp02", "stream"), ("legacy", "stream"), ("mdp02", "astream"), ("legacy", "astream")],
)
def test_stream_blocking(broker: Broker, peers: Peers, worker_dialect: str, mode: str) -> None:
    ep = broker.endpoints[0]
    peers.worker(ep, "stream", "--mode", mode, "--dialect", worker_dialect)
    service_up(ep, "stream")
    with Client(ep, timeout=3) as c:
        assert list(c.stream("stream", "q")) == EXPECTED
        assert c.request("stream", "q") == [b"final", b"q"]  # request() returns the FINAL
        parts = list(c.stream_parts("stream", "q"))
    assert parts == [StreamPart(p, i == 3) for i, p in enumerate(EXPECTED)]
    with Client(ep, timeout=3, dialect=Dialect.LEGACY) as c:
        assert list(c.stream("stream", "q")) == EXPECTED
        assert [p.final for p in c.stream_parts("stream", "q")] == [False, False, False, True]
    assert broker.stats().partials["stream", "mdp02"] == 9
    assert broker.stats().partials["stream", "legacy"] == 6


def test_stream_without_final_part_ends_with_empty_final(broker: Broker, peers: Peers) -> None:
    """A generator that just ends: every item was a PARTIAL; the FINAL is empty."""
    ep = broker.endpoints[0]
    peers.worker(ep, "trailing", "--mode", "trailing")
    service_up(ep, "trailing")
    parts = [[b"part", b"0"], [b"part", b"1"], [b"part", b"2"]]
    with Client(ep, timeout=3) as c:
        got = list(c.stream_parts("trailing", "q"))
        assert got == [*(StreamPart(p, False) for p in parts), StreamPart([], True)]
        assert c.request("trailing", "q") == []
    with Client(ep, timeout=3, dialect=Dialect.LEGACY) as c:
        assert list(c.stream("trailing", "q")) == [*parts, []]
    with Client(ep, timeout=3, dialect=Dialect.MDP01) as c:
        # MDP/0.1 has no PARTIAL: one REPLY with every part, as before.
        assert c.request("trailing", "q") == [f for p in parts for f in p]


@pytest.mark.parametrize("worker_dialect", ["mdp02", "mdp01"])
def test_stream_that_fails_midway(broker: Broker, peers: Peers, worker_dialect: str) -> None:
    """Parts already sent stay sent; the error is the FINAL; the next reply is not polluted."""
    ep = broker.endpoints[0]
    peers.worker(ep, "fails", "--mode", "failstream", "--dialect", worker_dialect)
    service_up(ep, "fails")
    with Client(ep, timeout=3) as c:
        got: list[StreamPart] = []
        with pytest.raises(BrokerError) as info:
            for part in c.stream_parts("fails", "boom"):
                got.append(part)
        assert info.value.code == ErrorCode.HANDLER_ERROR
        assert "stream exploded" in info.value.message
        if worker_dialect == "mdp02":
            assert got == [StreamPart([b"first"], False), StreamPart([b"second"], False)]
        else:
            assert got == []  # an MDP/0.1 worker holds its parts for the (failed) REPLY
        # Same client socket: the failed stream's held parts must not leak into this reply.
        ok = c.request("fails", "ok")
        if worker_dialect == "mdp02":
            assert ok == [b"last", b"ok"]
        else:
            assert ok == [b"first", b"second", b"last", b"ok"]


def test_stream_to_mdp01_client_is_concatenated(broker: Broker, peers: Peers) -> None:
    ep = broker.endpoints[0]
    peers.worker(ep, "stream", "--mode", "stream")
    service_up(ep, "stream")
    with Client(ep, timeout=3, dialect=Dialect.MDP01) as c:
        # MDP/0.1 has no PARTIAL: the broker delivers every part in the one REPLY.
        assert list(c.stream("stream", "q")) == [[f for part in EXPECTED for f in part]]
        assert list(c.stream_parts("stream", "q")) == [
            StreamPart([f for part in EXPECTED for f in part], True)
        ]


async def test_stream_async(broker: Broker, peers: Peers) -> None:
    ep = broker.endpoints[0]
    peers.worker(ep, "stream", "--mode", "stream")
    await asyncio.to_thread(service_up, ep, "stream")
    async with AsyncClient(ep, timeout=3) as c:
        assert [p async for p in c.stream("stream", "q")] == EXPECTED
        parts = [p async for p in c.stream_parts("stream", "q")]
    assert parts == [StreamPart(p, i == 3) for i, p in enumerate(EXPECTED)]


def test_mmi(broker: Broker, peers: Peers) -> None:
    ep = broker.endpoints[0]
    peers.worker(ep, "echo")
    peers.worker(ep, "echo")
    service_up(ep, "echo")
    with Client(ep, timeout=3) as c:
        assert c.mmi("mmi.service", "echo") == [b"200"]
        assert c.mmi("service", "nope") == [b"404"]
        assert c.mmi("mmi.nosuch", "x") == [b"501"]
        code, names = c.mmi("mmi.services")
        assert code == b"200" and json.loads(names) == ["echo"]
        code, workers = c.mmi("mmi.workers")
        info = json.loads(workers)["echo"]
        assert code == b"200" and info["workers"] in (1, 2) and info["queued"] == 0
        code, about = c.mmi("mmi.broker")
        data = json.loads(about)
        assert code == b"200"
        assert data["heartbeat_ms"] == HB_MS
        assert "MDPC02/MDPW02" in data["protocols"]
    with Client(ep, timeout=3, dialect=Dialect.LEGACY) as c:
        assert c.mmi("mmi.service", "echo") == [b"200"]


def test_abandoned_stream_does_not_leak_into_next_request(broker: Broker, peers: Peers) -> None:
    ep = broker.endpoints[0]
    peers.worker(ep, "stream", "--mode", "stream")
    peers.worker(ep, "echo")
    service_up(ep, "stream")
    service_up(ep, "echo")
    with Client(ep, timeout=3) as c:
        it = c.stream("stream", "q")
        assert next(it) == [b"part", b"0"]
        it.close()  # give up after the first part
        assert c.request("stream", "again") == [b"final", b"again"]
        assert c.request("echo", "x") == [b"x"]


def test_mdp01_worker_stream_is_sent_as_one_reply(broker: Broker, peers: Peers) -> None:
    ep = broker.endpoints[0]
    peers.worker(ep, "stream01", "--mode", "stream", "--dialect", "mdp01")
    service_up(ep, "stream01")
    with Client(ep, timeout=3) as c:
        # The MDP/0.1 worker cannot send PARTIAL: its library holds the parts for the REPLY.
        assert list(c.stream("stream01", "q")) == [[f for part in EXPECTED for f in part]]


def test_sync_generator_parts_arrive_as_produced(broker: Broker, peers: Peers) -> None:
    """Each part goes out the moment the generator yields it, not when the next one exists."""
    ep = broker.endpoints[0]
    peers.worker(ep, "trickle", "--mode", "slowstream", "--delay", "1.0")
    service_up(ep, "trickle")
    with Client(ep, timeout=3) as c:
        t0 = time.monotonic()
        it = c.stream_parts("trickle", "q")
        assert next(it) == StreamPart([b"first"], False)
        # "second" is followed by a 1 s pause in the handler: it must not wait for it.
        assert next(it) == StreamPart([b"second"], False)
        second_at = time.monotonic() - t0
        assert list(it) == [StreamPart([b"last", b"q"], True)]
        last_at = time.monotonic() - t0
    assert second_at < 0.6 < 0.9 < last_at, (second_at, last_at)
