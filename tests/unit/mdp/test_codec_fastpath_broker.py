"""The broker's fast path (``codec.broker_fast_inbound``) decodes exactly as ``decode_inbound``.

One frame-layout authority: whenever the fast path claims a message, the slow path must read
the same REQUEST or FINAL from it; whenever the slow path reads a plain (undelimited) MDP/0.2
REQUEST or FINAL, the fast path must claim it (else the hot path silently got slower).
Frame lists are real encodings in every dialect, mutated, plus lists of protocol tokens.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tests.unit.mdp.frame_mutations import mutate

from plantd.mdp import codec
from plantd.mdp.codec import (
    FAST_FINAL,
    FAST_REQUEST,
    Dialect,
    Request,
    WorkerReply,
    broker_fast_inbound,
    decode_inbound,
)
from plantd.mdp.errors import ProtocolError

pytestmark = pytest.mark.unit

TOKENS = [
    b"",
    codec.MDPC01,
    codec.MDPC02,
    codec.MDPW01,
    codec.MDPW02,
    *(bytes([i]) for i in range(8)),
    codec.L_REQUEST,
    codec.L_FINAL,
    codec.L_PARTIAL,
    codec.L_READY,
    b"credit=2",
]
frame = st.one_of(st.sampled_from(TOKENS), st.binary(max_size=6))
name = st.binary(min_size=1, max_size=6)
body = st.lists(st.binary(max_size=6), max_size=4)
dialects = st.sampled_from(list(Dialect))


@st.composite
def encoded(draw: st.DrawFn) -> list[bytes]:
    """What clients and workers send the broker, in any dialect."""
    d = draw(dialects)
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return codec.encode_request(draw(name), draw(body), d)
    if kind == 1:
        final = True if d is Dialect.MDP01 else draw(st.booleans())
        return codec.encode_worker_reply(draw(name), draw(body), final, d)
    if kind == 2:
        return codec.encode_ready(draw(name), d, draw(st.integers(1, 50)))
    if kind == 3:
        return codec.encode_worker_heartbeat(d)
    return codec.encode_worker_disconnect(d)


@st.composite
def mutated(draw: st.DrawFn) -> list[bytes]:
    return mutate(draw, draw(encoded()), frame)


hostile = st.one_of(encoded(), mutated(), st.lists(frame, max_size=8))


def _slow(frames: list[bytes]) -> object:
    try:
        return decode_inbound(frames)
    except ProtocolError as exc:
        return exc.reason


def _check(frames: list[bytes], ident: bytes) -> None:
    routed = [ident, *frames]
    fast = broker_fast_inbound(routed, 1)
    slow = _slow(frames)
    owned = False  # a plain (undelimited) MDP/0.2 REQUEST or worker FINAL
    if isinstance(slow, Request):
        owned = slow.dialect is Dialect.MDP02 and not slow.delimited
    elif isinstance(slow, WorkerReply):
        owned = slow.dialect is Dialect.MDP02 and not slow.delimited and slow.final
    if fast is None:
        assert not owned, f"fast path declined a message it owns: {frames!r} -> {slow!r}"
        return
    kind, addr, got = fast
    if kind == FAST_REQUEST:
        assert slow == Request(addr, got, Dialect.MDP02, False), frames
    else:
        assert kind == FAST_FINAL
        assert slow == WorkerReply(addr, got, True, Dialect.MDP02, False), frames
    assert got is not routed  # a slice: the caller may keep the body


@settings(max_examples=2000, suppress_health_check=[HealthCheck.too_slow])
@given(hostile, st.binary(min_size=1, max_size=5))
@example([codec.MDPW02, codec.W02_FINAL, b"c", b""], b"w")
@example([codec.MDPW02, codec.W02_FINAL, b"c", b"x", b"body"], b"w")
@example([codec.MDPW02, codec.W02_FINAL, b"", b"", b"body"], b"w")
@example([codec.MDPC02, codec.C02_REQUEST, b"svc"], b"c")
@example([codec.MDPC02, codec.C02_REQUEST, b"", b"body"], b"c")
@example([b"", codec.MDPC02, codec.C02_REQUEST, b"svc", b"body"], b"c")
@example([codec.MDPC02, codec.L_REQUEST, b"svc", b"body"], b"c")
def test_broker_fast_path_decodes_as_the_slow_path(frames: list[bytes], ident: bytes) -> None:
    _check(frames, ident)


@given(name, body, st.binary(min_size=1, max_size=5))
def test_fast_path_takes_what_our_peers_send(addr: bytes, b: list[bytes], ident: bytes) -> None:
    """Not vacuous: every MDP/0.2 REQUEST and worker FINAL our peers encode goes fast."""
    req = broker_fast_inbound([ident, *codec.encode_request(addr, b)], 1)
    assert req == (FAST_REQUEST, addr, b)
    fin = broker_fast_inbound([ident, *codec.encode_worker_reply(addr, b)], 1)
    assert fin == (FAST_FINAL, addr, b)
