"""Endpoint checks: a malformed endpoint is an EndpointError naming it, at construction.

libzmq's connect accepts ``tcp://[::1`` or ``tcp://host:99999`` and then never connects, which a
caller sees only as a timeout; ``tcp://127.0.0.1:notaport`` raises a bare ZMQError. The CLI maps
EndpointError to exit 2.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import zmq
from hypothesis import given
from hypothesis import strategies as st

from plantd.mdp import (
    AsyncClient,
    AsyncWorker,
    Client,
    EndpointError,
    MDPError,
    Worker,
    check_endpoint,
)
from plantd.mdp.client import connect

pytestmark = pytest.mark.unit

BAD = {
    "tcp://127.0.0.1:notaport": "port",
    "tcp://[::1": "closing ']'",
    "tcp://[::1]": "no port",
    "tcp://[nothex]:5": "not an IPv6 address",
    "tcp://127.0.0.1": "no port",
    "tcp://127.0.0.1:0": "port",
    "tcp://127.0.0.1:65536": "port",
    "tcp://127.0.0.1:-1": "port",
    "tcp://127.0.0.1:\uff15": "port",  # FULLWIDTH DIGIT FIVE: str.isdigit() says yes
    "tcp://127.0.0.1:9797 ": "port",
    "tcp://:9797": "no host",
    "tcp://*:9797": "binding",
    "tcp://bad host:9797": "host name",
    "tcp://a..b:9797": "host name",
    "127.0.0.1:9797": "no transport",
    "": "no transport",
    "udp://127.0.0.1:9797": "not supported",
    "ipc://": "needs a name",
    "inproc://": "needs a name",
    "tcp://" + "a" * 2000 + ":1": "longer than",
}
GOOD = [
    "tcp://127.0.0.1:9797",
    "tcp://localhost:1",
    "tcp://broker.plantd.svc.cluster.local:9797",
    "tcp://[::1]:9797",
    "tcp://[fe80::1%eth0]:9797",
    "tcp://10.0.0.2:0;10.0.0.1:9797",  # libzmq's source-address form
    "ipc:///run/plantd/broker.sock",
    "inproc://broker",
]


@pytest.mark.parametrize(("endpoint", "reason"), sorted(BAD.items()))
def test_bad_endpoints_are_refused_with_a_reason(endpoint: str, reason: str) -> None:
    with pytest.raises(EndpointError) as info:
        check_endpoint(endpoint)
    assert reason in info.value.reason
    assert info.value.endpoint == endpoint
    text = str(info.value)
    assert repr(endpoint[:200])[:-1] in text and "tcp://HOST:PORT" in text
    assert len(text) < 600  # a hostile endpoint is quoted in part only


@pytest.mark.parametrize("endpoint", GOOD)
def test_good_endpoints_pass(endpoint: str) -> None:
    assert check_endpoint(endpoint) == endpoint


def test_endpoint_error_is_a_value_error_and_an_mdp_error() -> None:
    with pytest.raises(EndpointError) as info:
        check_endpoint("tcp://[::1")
    assert isinstance(info.value, ValueError) and isinstance(info.value, MDPError)


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1:notaport", "tcp://[::1"])
def test_clients_and_workers_refuse_at_construction(endpoint: str) -> None:
    with pytest.raises(EndpointError):
        Client(endpoint)
    with pytest.raises(EndpointError):
        Worker(endpoint, "svc", lambda f: f)

    async def build_async() -> None:
        with pytest.raises(EndpointError):
            AsyncClient(endpoint)
        with pytest.raises(EndpointError):
            AsyncWorker(endpoint, "svc", lambda f: f)

    asyncio.run(build_async())


@pytest.mark.parametrize("endpoint", ["tcp://*:5", "tcp://127.0.0.1", "foo://x"])
def test_libzmq_refusals_become_endpoint_errors(endpoint: str) -> None:
    """Past the check (another transport, a future libzmq rule): still no bare ZMQError."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    try:
        with pytest.raises(EndpointError) as info:
            connect(sock, endpoint)
        assert isinstance(info.value.__cause__, zmq.ZMQError)
    finally:
        sock.close(0)
        ctx.term()


@given(st.text(max_size=80))
def test_check_raises_only_endpoint_error(text: str) -> None:
    with contextlib.suppress(EndpointError):
        check_endpoint(text)


@given(st.from_regex(r"tcp://[a-z0-9.\[\]:*%;-]{0,30}", fullmatch=True))
def test_accepted_tcp_endpoints_connect_without_error(text: str) -> None:
    """Whatever the check accepts, libzmq's connect accepts too (no ZMQError at connect)."""
    try:
        check_endpoint(text)
    except EndpointError:
        return
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    try:
        sock.connect(text)
    finally:
        sock.close(0)
        ctx.term()
