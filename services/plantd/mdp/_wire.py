"""Fast multipart send/receive on plain pyzmq sockets.

pyzmq's ``send_multipart``/``recv_multipart`` spend much of their time in Python-level enum
arithmetic (``zmq.SNDMORE | flags`` builds a new ``Flag``) and argument checks; per frame that
is most of the cost for the small messages MDP moves. These helpers call the Cython backend
methods with plain ints. They accept the same frames (bytes) and raise the same
``zmq.Again``/``ZMQError``. Measured again for issue 7 (pyzmq 27.3.0, libzmq 4.3.5, 6-frame
MDP-sized messages, DEALER->ROUTER, medians of 7 interleaved rounds x 20,000, three runs on the
loaded 2-core box): send 5.8-8.5x faster than ``send_multipart``, receive 1.6-2.0x faster than
``recv_multipart``, over both inproc and tcp loopback. It still pays, so it stays.

Note for loops: ``events()`` costs ~3 us (it processes the socket's command mailbox), more than
one ``zmq.Again`` (~5 us) per wake-up once several messages are drained; drain with NOBLOCK and
stop at ``zmq.Again``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, Final

import zmq

SNDMORE: Final = int(zmq.SNDMORE)
RCVMORE: Final = int(zmq.RCVMORE)
NOBLOCK: Final = int(zmq.NOBLOCK)
POLLIN: Final = int(zmq.POLLIN)
EVENTS: Final = int(zmq.EVENTS)

# The exact call shapes used below: send(sock, bytes, int), recv(sock, int, False) -> Frame with
# ``.more``/``.bytes``, get(sock, int) -> int. tests/unit/mdp/test_wire_private_api.py exercises
# each, on the pinned pyzmq (pyproject); a signature that differs here falls back to the public
# API at import (slower, never wrong).
_SHAPES: Final = {
    "send": ("self", "data", "flags", "copy"),
    "recv": ("self", "flags", "copy"),
    "get": ("self", "option"),
}


def _private_api() -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]] | None:
    """pyzmq's Cython ``Socket.send/recv/get``, or None when they are absent or look different."""
    try:  # the Cython backend (CPython wheels); PyPy/CFFI builds have none
        from zmq.backend.cython._zmq import Socket as backend
    except ImportError:
        return None
    if not issubclass(zmq.Socket, backend):
        return None  # our sockets would not be instances of the class whose methods we call
    send, recv, get = (getattr(backend, name, None) for name in _SHAPES)
    if send is None or recv is None or get is None:
        return None
    for fn, names in zip((send, recv, get), _SHAPES.values(), strict=True):
        try:
            params = tuple(inspect.signature(fn).parameters)
        except (TypeError, ValueError):  # no signature exposed: trust the pinned version's test
            continue
        if params[: len(names)] != names:
            return None
    return send, recv, get


_private = _private_api()
PRIVATE: Final = _private is not None  # which path is live; the unit test asserts it is private
if _private is not None:
    _send, _recv, _get = _private
else:  # pragma: no cover - other backends or another pyzmq: the public API, same positional shape
    _send = zmq.Socket.send
    _recv = zmq.Socket.recv
    _get = zmq.Socket.get


def send_multipart(sock: zmq.Socket[Any], frames: Sequence[bytes], flags: int = 0) -> None:
    """Send ``frames`` (non-empty) as one message."""
    last = len(frames) - 1
    more = SNDMORE | flags
    for i in range(last):
        _send(sock, frames[i], more)
    _send(sock, frames[last], flags)


def send_routed(
    sock: zmq.Socket[Any],
    to: bytes,
    head: Sequence[bytes],
    addr: bytes,
    body: Sequence[bytes],
    flags: int = NOBLOCK,
    delimit: bool = False,
) -> None:
    """Send ``[to, *head, addr, (b"" if delimit), *body]`` without building that list.

    The broker's two hot sends: a REQUEST to a worker (``addr`` = client, ``delimit``) and a
    reply to a client (``addr`` = service). Raises ``zmq.Again`` only before the first frame.
    """
    more = SNDMORE | flags
    _send(sock, to, more)
    for f in head:
        _send(sock, f, more)
    if body:
        _send(sock, addr, more)
        if delimit:
            _send(sock, b"", more)
        last = len(body) - 1
        for i in range(last):
            _send(sock, body[i], more)
        _send(sock, body[last], flags)
    elif delimit:
        _send(sock, addr, more)
        _send(sock, b"", flags)
    else:
        _send(sock, addr, flags)


def send_replies(
    sock: zmq.Socket[Any],
    head: Sequence[bytes],
    clients: Sequence[bytes],
    bodies: Sequence[Sequence[bytes]],
    flags: int = NOBLOCK,
) -> int:
    """Send one message per client: ``head``, the client, an empty frame, then its body.

    For a run of replies in one go: no list is built per message, and the messages follow each
    other closely enough that libzmq's I/O thread is woken once for many of them rather than
    once each (that wake-up is most of the cost of a small message). Returns how many were not
    sent because the queue was full (``zmq.Again``; libzmq refuses only a message's first frame).
    """
    more = SNDMORE | flags
    dropped = 0
    for client, body in zip(clients, bodies, strict=True):
        try:
            for f in head:
                _send(sock, f, more)
        except zmq.Again:
            dropped += 1
            continue
        _send(sock, client, more)
        if body:
            _send(sock, b"", more)
            last = len(body) - 1
            for i in range(last):
                _send(sock, body[i], more)
            _send(sock, body[last], flags)
        else:
            _send(sock, b"", flags)
    return dropped


def recv_multipart(sock: zmq.Socket[Any], flags: int = 0) -> list[bytes]:
    """Receive one whole message as a list of bytes.

    Frames are read as ``zmq.Frame`` and copied out: ``Frame.more`` is a plain attribute, while
    ``getsockopt(RCVMORE)`` resolves the option through an enum on every call (~2x slower).
    """
    f = _recv(sock, flags, False)
    parts: list[bytes] = [f.bytes]
    while f.more:
        f = _recv(sock, flags, False)
        parts.append(f.bytes)
    return parts


def events(sock: zmq.Socket[Any]) -> int:
    """``ZMQ_EVENTS`` as an int (POLLIN/POLLOUT bits)."""
    return int(_get(sock, EVENTS))
