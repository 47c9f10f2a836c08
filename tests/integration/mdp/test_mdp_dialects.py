"""Every client dialect reaches every worker dialect through one broker (real processes)."""

from __future__ import annotations

import asyncio

import pytest
from mdp_helpers import Peers, service_up

from plantd.mdp import AsyncClient, Broker, Client, Dialect

pytestmark = pytest.mark.integration

DIALECT_ARGS = {Dialect.MDP02: "mdp02", Dialect.MDP01: "mdp01", Dialect.LEGACY: "legacy"}


@pytest.mark.parametrize("worker_dialect", list(Dialect), ids=lambda d: d.label)
def test_all_client_dialects_reach_worker(
    broker: Broker, peers: Peers, worker_dialect: Dialect
) -> None:
    ep = broker.endpoints[0]
    svc = f"echo.{worker_dialect.label}"
    peers.worker(ep, svc, "--dialect", DIALECT_ARGS[worker_dialect])
    service_up(ep, svc)
    for client_dialect in Dialect:
        with Client(ep, timeout=3, dialect=client_dialect) as c:
            body = [f"from-{client_dialect.label}".encode(), b"", b"\x00bin"]
            assert c.request(svc, *body) == body
    stats = broker.stats()
    for client_dialect in Dialect:
        assert stats.replies[svc, client_dialect.label] >= 1
    assert broker.snapshot().workers[0].dialect == worker_dialect.label


def test_req_style_mdp02_client_gets_mirrored_empty_frame(broker: Broker, peers: Peers) -> None:
    import zmq

    ep = broker.endpoints[0]
    peers.worker(ep, "echo")
    service_up(ep, "echo")
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    req = ctx.socket(zmq.REQ)  # a REQ socket adds and strips the empty frame itself
    req.linger = 0
    req.connect(ep)
    req.send_multipart([b"MDPC02", b"\x01", b"echo", b"via-req"])
    assert req.poll(3000), "REQ-style MDP/0.2 client got no reply"
    assert req.recv_multipart() == [b"MDPC02", b"\x03", b"echo", b"via-req"]
    req.close()


async def test_async_client_each_dialect(broker: Broker, peers: Peers) -> None:
    ep = broker.endpoints[0]
    peers.worker(ep, "echo")
    await asyncio.to_thread(service_up, ep, "echo")
    for d in Dialect:
        async with AsyncClient(ep, timeout=3, dialect=d) as c:
            assert await c.request("echo", d.label) == [d.label.encode()]
