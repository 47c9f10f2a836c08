"""Codec: roundtrips per dialect, the reference frame tables, and fuzzing (ProtocolError only)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plantd.mdp import codec
from plantd.mdp.codec import (
    Dialect,
    Disconnect,
    Heartbeat,
    Ready,
    Reply,
    Request,
    WorkerReply,
    WorkerRequest,
    decode_inbound,
    decode_reply,
    decode_worker_command,
)
from plantd.mdp.errors import ProtocolError

pytestmark = pytest.mark.unit

dialects = st.sampled_from(list(Dialect))
names = st.binary(min_size=1, max_size=40)
frame = st.binary(max_size=64)
body = st.lists(frame, max_size=6)
addr = st.binary(min_size=1, max_size=16)


@given(names, body, dialects)
def test_request_roundtrip(service: bytes, b: list[bytes], d: Dialect) -> None:
    msg = decode_inbound(codec.encode_request(service, b, d))
    assert isinstance(msg, Request)
    assert (msg.service, msg.body, msg.dialect) == (service, b, d)
    # Only MDP/0.2 DEALER clients send no leading empty frame.
    assert msg.delimited is (d is not Dialect.MDP02)


@given(names, body, st.booleans(), dialects, st.booleans())
def test_reply_roundtrip(
    service: bytes, b: list[bytes], final: bool, d: Dialect, delim: bool
) -> None:
    if d is Dialect.MDP01:
        final = True
    msg = decode_reply(codec.encode_reply(service, b, final, d, delim))
    assert msg == Reply(service, b, final, d)


@given(names, dialects, st.integers(1, codec.MAX_CREDIT))
def test_ready_roundtrip(service: bytes, d: Dialect, credit: int) -> None:
    msg = decode_inbound(codec.encode_ready(service, d, credit))
    assert isinstance(msg, Ready)
    assert (msg.service, msg.dialect, msg.credit) == (service, d, credit)


@given(addr, body, dialects, st.booleans())
def test_worker_request_roundtrip(client: bytes, b: list[bytes], d: Dialect, delim: bool) -> None:
    msg = decode_worker_command(codec.encode_worker_request(client, b, d, delim))
    assert msg == WorkerRequest(client, b, d)


@given(addr, body, st.booleans(), dialects)
def test_worker_reply_roundtrip(client: bytes, b: list[bytes], final: bool, d: Dialect) -> None:
    if d is Dialect.MDP01:
        final = True
    msg = decode_inbound(codec.encode_worker_reply(client, b, final, d))
    assert isinstance(msg, WorkerReply)
    assert (msg.client, msg.body, msg.final, msg.dialect) == (client, b, final, d)


@pytest.mark.parametrize("d", list(Dialect))
def test_heartbeat_and_disconnect_both_ways(d: Dialect) -> None:
    assert isinstance(decode_inbound(codec.encode_worker_heartbeat(d)), Heartbeat)
    assert isinstance(decode_inbound(codec.encode_worker_disconnect(d)), Disconnect)
    for delim in (False, True):
        hb = decode_worker_command(codec.encode_broker_heartbeat(d, delim))
        assert isinstance(hb, Heartbeat) and hb.dialect is d
        dc = decode_worker_command(codec.encode_broker_disconnect(d, delim))
        assert isinstance(dc, Disconnect) and dc.dialect is d


def test_legacy_frames_match_reference_table() -> None:
    """reference/plantd-original.md §3.2, C1-C3 and W1-W8, byte for byte."""
    L = Dialect.LEGACY
    assert codec.encode_request(b"svc", [b"x"], L) == [b"", b"MDPC02", b"REQUEST", b"svc", b"x"]
    assert codec.encode_reply(b"svc", [b"x"], False, L) == [b"MDPC02", b"PARTIAL", b"svc", b"x"]
    assert codec.encode_reply(b"svc", [b"x"], True, L, True) == [b"MDPC02", b"FINAL", b"svc", b"x"]
    assert codec.encode_ready(b"svc", L) == [b"", b"MDPW02", b"READY", b"svc"]
    assert codec.encode_worker_request(b"c", [b"x"], L) == [b"MDPW02", b"REQUEST", b"c", b"", b"x"]
    assert codec.encode_worker_heartbeat(L) == [b"", b"MDPW02", b"HEARTBEAT"]
    assert codec.encode_broker_heartbeat(L) == [b"MDPW02", b"HEARTBEAT"]
    assert codec.encode_broker_disconnect(L) == [b"MDPW02", b"DISCONNECT"]
    assert codec.encode_worker_disconnect(L) == [b"", b"MDPW02", b"DISCONNECT"]
    # W3/W4 as the Go worker sends them: no empty frame after the client address.
    go_final = decode_inbound([b"", b"MDPW02", b"FINAL", b"cid", b"body"])
    assert go_final == WorkerReply(b"cid", [b"body"], True, L, True)
    go_partial = decode_inbound([b"", b"MDPW02", b"PARTIAL", b"cid", b"a", b"b"])
    assert isinstance(go_partial, WorkerReply) and go_partial.body == [b"a", b"b"]


def test_rfc_frames() -> None:
    """RFC 7 and RFC 18 layouts, byte for byte."""
    assert codec.encode_request(b"s", [b"x"]) == [b"MDPC02", b"\x01", b"s", b"x"]
    assert codec.encode_reply(b"s", [b"x"], False) == [b"MDPC02", b"\x02", b"s", b"x"]
    assert codec.encode_reply(b"s", [b"x"], True) == [b"MDPC02", b"\x03", b"s", b"x"]
    assert codec.encode_ready(b"s") == [b"MDPW02", b"\x01", b"s"]
    assert codec.encode_ready(b"s", credit=8) == [b"MDPW02", b"\x01", b"s", b"credit=8"]
    assert codec.encode_worker_reply(b"c", [b"x"], False) == [b"MDPW02", b"\x03", b"c", b"", b"x"]
    assert codec.encode_worker_reply(b"c", [b"x"]) == [b"MDPW02", b"\x04", b"c", b"", b"x"]
    assert codec.encode_worker_heartbeat() == [b"MDPW02", b"\x05"]
    assert codec.encode_worker_disconnect() == [b"MDPW02", b"\x06"]
    m01 = Dialect.MDP01
    assert codec.encode_request(b"s", [b"x"], m01) == [b"", b"MDPC01", b"s", b"x"]
    assert codec.encode_reply(b"s", [b"x"], True, m01, True) == [b"", b"MDPC01", b"s", b"x"]
    assert codec.encode_ready(b"s", m01) == [b"", b"MDPW01", b"\x01", b"s"]
    assert codec.encode_worker_request(b"c", [b"x"], m01, True) == [
        b"",
        b"MDPW01",
        b"\x02",
        b"c",
        b"",
        b"x",
    ]
    assert codec.encode_worker_reply(b"c", [b"x"], True, m01) == [
        b"",
        b"MDPW01",
        b"\x03",
        b"c",
        b"",
        b"x",
    ]
    assert codec.encode_worker_heartbeat(m01) == [b"", b"MDPW01", b"\x04"]
    assert codec.encode_worker_disconnect(m01) == [b"", b"MDPW01", b"\x05"]


def test_req_style_mdp02_is_accepted_and_flagged() -> None:
    msg = decode_inbound([b"", b"MDPC02", b"\x01", b"svc", b"x"])
    assert msg == Request(b"svc", [b"x"], Dialect.MDP02, True)
    # ...and the reply prefix mirrors the empty frame.
    assert codec.client_reply_prefix(Dialect.MDP02, True, True) == (b"", b"MDPC02", b"\x03")


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([], "empty"),
        ([b""], "truncated"),
        ([b"HTTP/1.1"], "unknown_header"),
        ([b"MDPC02", b"\x09", b"svc"], "unknown_command"),
        ([b"MDPC02", b"\x01"], "truncated"),
        ([b"MDPC02", b"\x01", b""], "empty_service"),
        ([b"MDPW02", b"\x04", b"", b"", b"x"], "empty_address"),
        ([b"MDPW02", b"\x04", b"c", b"x", b"y"], "missing_delimiter"),
        ([b"MDPW02", b"\x01", b"svc", b"credit=0"], "bad_credit"),
        ([b"MDPW02", b"\x01", b"svc", b"credit=abc"], "bad_credit"),
        ([b"MDPW02", b"\x02", b"c", b"", b"x"], "unknown_command"),
        ([b"MDPW01", b"\x09"], "unknown_command"),
        ([b"MDPW02", b"BOGUS"], "unknown_command"),
    ],
)
def test_malformed_inputs_name_a_reason(frames: list[bytes], reason: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_inbound(frames)
    assert info.value.reason == reason
    assert reason in str(info.value)


any_frames = st.lists(
    st.one_of(
        st.binary(max_size=12),
        st.sampled_from(
            [
                b"",
                b"MDPC01",
                b"MDPC02",
                b"MDPW01",
                b"MDPW02",
                b"\x01",
                b"\x02",
                b"\x03",
                b"\x04",
                b"\x05",
                b"\x06",
                b"READY",
                b"FINAL",
                b"PARTIAL",
                b"REQUEST",
                b"HEARTBEAT",
                b"DISCONNECT",
                b"credit=",
                b"credit=99999999",
            ]
        ),
    ),
    max_size=8,
)


@settings(max_examples=3000)
@given(any_frames)
def test_random_frames_raise_only_protocol_error(frames: list[bytes]) -> None:
    for decode in (decode_inbound, decode_reply, decode_worker_command):
        try:
            decode(frames)
        except ProtocolError as exc:
            assert exc.reason and exc.detail


def test_encode_rejects_impossible_requests() -> None:
    with pytest.raises(ValueError, match="PARTIAL"):
        codec.encode_reply(b"s", [], False, Dialect.MDP01)
    with pytest.raises(ValueError, match="credit"):
        codec.encode_ready(b"s", credit=0)
