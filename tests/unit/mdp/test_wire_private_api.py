"""Guard for ``plantd.mdp._wire``: it calls pyzmq's private Cython ``Socket.send/recv/get``.

If a pyzmq upgrade changes those methods, these tests fail before the broker does: they check
that the private path is the live one, that its signatures are the ones ``_wire`` relies on,
and they run every call shape ``_wire`` uses on real sockets, on the private path and on the
public fallback.
"""

from __future__ import annotations

import inspect
import platform
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from plantd.mdp import _wire

pytestmark = pytest.mark.unit


@pytest.fixture
def pair() -> Iterator[tuple[zmq.Socket[Any], zmq.Socket[Any]]]:
    """A connected (ROUTER, DEALER) over inproc, the DEALER's routing id already known."""
    ctx = zmq.Context()
    router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    for s in (router, dealer):
        s.linger = 0
        s.rcvtimeo = 2000
    dealer.routing_id = b"dealer-1"
    router.bind("inproc://wire-test")
    dealer.connect("inproc://wire-test")
    dealer.send(b"hello")
    assert router.recv_multipart() == [b"dealer-1", b"hello"]
    yield router, dealer
    router.close(0)
    dealer.close(0)
    ctx.term()


@pytest.fixture(params=["private", "public"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test on the live (private) functions and again on the public fallback."""
    if request.param == "public":
        monkeypatch.setattr(_wire, "_send", zmq.Socket.send)
        monkeypatch.setattr(_wire, "_recv", zmq.Socket.recv)
        monkeypatch.setattr(_wire, "_get", zmq.Socket.get)
    return str(request.param)


@pytest.mark.skipif(
    platform.python_implementation() != "CPython", reason="the Cython backend is CPython's"
)
def test_private_path_is_live() -> None:
    from zmq.backend.cython._zmq import Socket as backend

    assert _wire.PRIVATE, "the private pyzmq API changed: _wire fell back to the public one"
    assert _wire._send is backend.send
    assert _wire._recv is backend.recv
    assert _wire._get is backend.get
    assert issubclass(zmq.Socket, backend)


@pytest.mark.skipif(
    platform.python_implementation() != "CPython", reason="the Cython backend is CPython's"
)
@pytest.mark.parametrize("name", ["send", "recv", "get"])
def test_private_signatures_are_the_ones_used(name: str) -> None:
    from zmq.backend.cython._zmq import Socket as backend

    params = list(inspect.signature(getattr(backend, name)).parameters)
    assert tuple(params[: len(_wire._SHAPES[name])]) == _wire._SHAPES[name], params


def test_exact_call_shapes(pair: tuple[zmq.Socket[Any], zmq.Socket[Any]], path: str) -> None:
    router, dealer = pair
    # send(sock, bytes, int) with SNDMORE | NOBLOCK, then the last frame with NOBLOCK.
    _wire._send(dealer, b"a", _wire.SNDMORE | _wire.NOBLOCK)
    _wire._send(dealer, b"", _wire.SNDMORE | _wire.NOBLOCK)
    _wire._send(dealer, b"c" * 70_000, _wire.NOBLOCK)  # over pyzmq's zero-copy threshold
    assert router.poll(2000)
    # get(sock, int) -> int with the POLLIN bit.
    ev = _wire._get(router, _wire.EVENTS)
    assert isinstance(ev, int) and ev & _wire.POLLIN
    # recv(sock, int, False) -> a Frame whose .more and .bytes are plain attributes.
    got = []
    while True:
        f = _wire._recv(router, 0, False)
        assert isinstance(f.bytes, bytes) and isinstance(f.more, bool)
        got.append(f.bytes)
        if not f.more:
            break
    assert got == [b"dealer-1", b"a", b"", b"c" * 70_000]
    assert not _wire.events(router) & _wire.POLLIN
    with pytest.raises(zmq.Again):
        _wire._recv(router, _wire.NOBLOCK, False)


def test_helpers_roundtrip(pair: tuple[zmq.Socket[Any], zmq.Socket[Any]], path: str) -> None:
    router, dealer = pair
    _wire.send_multipart(dealer, [b"MDPW02", b"\x04", b"client", b"", b"body"])
    assert router.poll(2000)
    assert _wire.recv_multipart(router) == [
        b"dealer-1",
        b"MDPW02",
        b"\x04",
        b"client",
        b"",
        b"body",
    ]

    _wire.send_routed(router, b"dealer-1", (b"MDPW02", b"\x02"), b"cl", [b"x", b"y"], delimit=True)
    _wire.send_routed(router, b"dealer-1", (b"MDPC02", b"\x03"), b"svc", [])
    _wire.send_routed(router, b"dealer-1", (b"MDPW02", b"\x02"), b"cl", [], delimit=True)
    got = [_wire.recv_multipart(dealer) for _ in range(3)]
    assert got == [
        [b"MDPW02", b"\x02", b"cl", b"", b"x", b"y"],
        [b"MDPC02", b"\x03", b"svc"],
        [b"MDPW02", b"\x02", b"cl", b""],
    ]

    dropped = _wire.send_replies(dealer, (b"MDPW02", b"\x04"), [b"c1", b"c2"], [[b"r1"], []])
    assert dropped == 0
    assert _wire.recv_multipart(router) == [b"dealer-1", b"MDPW02", b"\x04", b"c1", b"", b"r1"]
    assert _wire.recv_multipart(router) == [b"dealer-1", b"MDPW02", b"\x04", b"c2", b""]


def test_full_queue_raises_again_before_the_first_frame(path: str) -> None:
    """``send_replies`` counts a refused message and goes on; the refusal is zmq.Again."""
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.sndhwm = 1
    dealer.connect("tcp://127.0.0.1:1")  # nobody listens: messages queue up to the HWM
    try:
        dropped = _wire.send_replies(dealer, (b"H",), [b"c"] * 50, [[b"x"]] * 50)
        assert 0 < dropped < 50
        with pytest.raises(zmq.Again):
            _wire.send_multipart(dealer, [b"a", b"b"], _wire.NOBLOCK)
    finally:
        dealer.close(0)
        ctx.term()


def test_a_changed_signature_selects_the_public_api(monkeypatch: pytest.MonkeyPatch) -> None:
    """The import-time probe refuses methods whose parameters are not the expected ones (what a
    pyzmq that reordered ``recv(flags, copy)`` would look like)."""
    assert _wire._private_api() is not None or not _wire.PRIVATE
    monkeypatch.setitem(_wire._SHAPES, "recv", ("self", "copy", "flags"))
    assert _wire._private_api() is None
