"""Properties of the codec over hostile frame lists, valid and invalid, in all three dialects.

* the worker's fast path (``split_worker_requests``) decodes exactly as ``decode_worker_command``;
* ``decode_inbound``, ``decode_reply`` and ``decode_worker_command`` return a message or raise
  ``ProtocolError`` with a reason, and nothing else, whatever the frames.

Frame lists come from real encodings in every dialect, then mutated (frames dropped, inserted,
replaced, an empty delimiter added or removed), plus lists drawn from a vocabulary of protocol
tokens: pure random bytes almost never reach the interesting branches.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tests.unit.mdp.frame_mutations import mutate

from plantd.mdp import codec
from plantd.mdp.codec import (
    Dialect,
    WorkerRequest,
    decode_inbound,
    decode_reply,
    decode_worker_command,
    split_worker_requests,
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
    codec.L_PARTIAL,
    codec.L_FINAL,
    codec.L_READY,
    codec.L_HEARTBEAT,
    codec.L_DISCONNECT,
    b"credit=",
    b"credit=0",
    b"credit=10000",
    b"credit=10001",
    b"credit=99999999",
    b"credit=-1",
    b"credit=\xd9\xa1",  # a non-ASCII digit: bytes.isdigit() is ASCII-only
    b"mmi.service",
    b"plantd.error",
]

dialects = st.sampled_from(list(Dialect))
frame = st.one_of(st.sampled_from(TOKENS), st.binary(max_size=10))
body = st.lists(st.binary(max_size=8), max_size=4)
name = st.binary(min_size=1, max_size=8)


@st.composite
def encoded(draw: st.DrawFn) -> list[bytes]:
    """A well-formed message of any kind, any dialect, in either direction."""
    d = draw(dialects)
    final = True if d is Dialect.MDP01 else draw(st.booleans())
    delimited = draw(st.booleans())
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return codec.encode_request(draw(name), draw(body), d)
    if kind == 1:
        return codec.encode_reply(draw(name), draw(body), final, d, delimited)
    if kind == 2:
        return codec.encode_ready(draw(name), d, draw(st.integers(1, codec.MAX_CREDIT)))
    if kind == 3:
        return codec.encode_worker_request(draw(name), draw(body), d, delimited)
    if kind == 4:
        return codec.encode_worker_reply(draw(name), draw(body), final, d)
    if kind == 5:
        return codec.encode_worker_heartbeat(d)
    if kind == 6:
        return codec.encode_worker_disconnect(d)
    if kind == 7:
        return codec.encode_broker_heartbeat(d, delimited)
    if kind == 8:
        return codec.encode_broker_disconnect(d, delimited)
    return codec.error_reply_body(d, "QUEUE_FULL", draw(st.text(max_size=8)))


@st.composite
def mutated(draw: st.DrawFn) -> list[bytes]:
    return mutate(draw, draw(encoded()), frame)


hostile = st.one_of(encoded(), mutated(), st.lists(frame, max_size=10))


def _slow(frames: list[bytes]) -> object:
    try:
        return decode_worker_command(frames)
    except ProtocolError as exc:
        return exc.reason


def worker_fast_request(frames: list[bytes]) -> tuple[bytes, list[bytes]] | None:
    """The fast path on one message: (client, body) when it took it, None when it passed."""
    clients: list[bytes] = []
    bodies: list[list[bytes]] = []
    rest = split_worker_requests([frames], clients, bodies)
    if rest:
        assert rest == [frames] and not clients and not bodies
        return None
    assert len(clients) == len(bodies) == 1
    return clients[0], bodies[0]


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(hostile)
@example([codec.MDPW02, codec.W02_REQUEST, b"c", b""])
@example([codec.MDPW02, codec.W02_REQUEST, b"", b""])
@example([codec.MDPW02, codec.W02_REQUEST, b"c", b"x", b"body"])
@example([b"", codec.MDPW02, codec.W02_REQUEST, b"c", b"", b"body"])
@example([codec.MDPW02, codec.L_REQUEST, b"c", b"", b"body"])
def test_worker_fast_path_decodes_as_the_slow_path(frames: list[bytes]) -> None:
    fast = worker_fast_request(frames)
    slow = _slow(frames)
    if fast is None:
        # Passed on: only correct if the slow path does not see a plain MDP/0.2 REQUEST here
        # (it may see a delimited one, another dialect's, a heartbeat, or an error).
        if isinstance(slow, WorkerRequest) and slow.dialect is Dialect.MDP02:
            assert frames[0] == b"", f"fast path passed on a REQUEST it owns: {frames!r}"
        return
    assert slow == WorkerRequest(fast[0], fast[1], Dialect.MDP02), frames
    assert fast[1] is not frames  # a copy: the caller may keep the body


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(hostile, max_size=8))
def test_a_run_of_messages_splits_as_each_alone(messages: list[list[bytes]]) -> None:
    """On a run: the fast requests in arrival order, the rest returned in order, untouched."""
    clients: list[bytes] = []
    bodies: list[list[bytes]] = []
    rest = split_worker_requests(messages, clients, bodies)
    want_fast = [f for f in map(worker_fast_request, messages) if f is not None]
    assert list(zip(clients, bodies, strict=True)) == want_fast
    assert rest == [m for m in messages if worker_fast_request(m) is None]


@given(name, body)
def test_worker_fast_path_takes_what_our_broker_sends(client: bytes, b: list[bytes]) -> None:
    """Not vacuous: every MDP/0.2 REQUEST the broker encodes goes the fast way."""
    frames = codec.encode_worker_request(client, b, Dialect.MDP02)
    assert worker_fast_request(frames) == (client, b)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(hostile)
def test_decoders_raise_only_protocol_error(frames: list[bytes]) -> None:
    for decode in (decode_inbound, decode_reply, decode_worker_command):
        try:
            decode(frames)
        except ProtocolError as exc:
            assert exc.reason and exc.detail
            # Bounded: a hostile frame is quoted at most in part, never whole.
            assert len(str(exc)) < 400


def test_error_text_stays_short_for_huge_frames() -> None:
    big = b"x" * 1_000_000
    for frames in ([big], [codec.MDPW02, big], [codec.MDPC02, big, b"s"], [codec.MDPW02, b"\x01"]):
        for decode in (decode_inbound, decode_reply, decode_worker_command):
            try:
                decode(frames)
            except ProtocolError as exc:
                assert len(str(exc)) < 400
