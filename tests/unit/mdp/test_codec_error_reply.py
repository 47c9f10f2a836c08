"""Error replies per dialect: ``error_reply_body`` and its inverse ``parse_error_reply``.

The legacy form is what the original Go client can read: it JSON-decodes the first body frame
of a FINAL (reference/plantd-original.md §2.8, §2.10), so the whole error must be that one frame.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plantd.mdp.client import _check_final
from plantd.mdp.codec import (
    Dialect,
    decode_reply,
    encode_reply,
    error_reply_body,
    parse_error_reply,
)
from plantd.mdp.errors import (
    ERROR_MARKER,
    MAX_ERROR_MESSAGE_CHARS,
    BrokerError,
    ErrorCode,
    parse_legacy_error_body,
)

pytestmark = pytest.mark.unit

codes = st.sampled_from(ErrorCode.ALL)
messages = st.text(max_size=300)


def test_legacy_error_is_one_json_frame_in_the_original_envelope() -> None:
    body = error_reply_body(Dialect.LEGACY, ErrorCode.QUEUE_FULL, "queue is full")
    assert len(body) == 1
    assert json.loads(body[0]) == {"success": False, "error": "queue is full", "code": "QUEUE_FULL"}
    # On the wire exactly as the original's client receives it: [MDPC02, FINAL, service, json].
    frames = encode_reply(b"echo", body, True, Dialect.LEGACY)
    assert frames[:3] == [b"MDPC02", b"FINAL", b"echo"]
    assert json.loads(frames[3])["code"] == "QUEUE_FULL"


@pytest.mark.parametrize("dialect", [Dialect.MDP02, Dialect.MDP01])
def test_mdp_dialects_keep_the_plantd_error_frames(dialect: Dialect) -> None:
    body = error_reply_body(dialect, ErrorCode.WORKER_LOST, "gone")
    assert body == [ERROR_MARKER, b"WORKER_LOST", b"gone"]


@given(st.sampled_from(list(Dialect)), codes, messages)
def test_roundtrip_every_dialect(dialect: Dialect, code: str, message: str) -> None:
    body = error_reply_body(dialect, code, message)
    got = parse_error_reply(body)
    assert got is not None
    assert got[0] == code
    # Lone surrogates cannot be UTF-8: the plantd.error form replaces them, JSON escapes them.
    if dialect is Dialect.LEGACY:
        assert got[1] == message
    else:
        assert got[1] == message.encode("utf-8", "replace").decode()


@given(messages)
def test_legacy_frame_is_ascii(message: str) -> None:
    (frame,) = error_reply_body(Dialect.LEGACY, ErrorCode.HANDLER_ERROR, message)
    frame.decode("ascii")


@pytest.mark.parametrize("dialect", list(Dialect))
def test_long_messages_are_cut(dialect: Dialect) -> None:
    body = error_reply_body(dialect, ErrorCode.HANDLER_ERROR, "x" * 1_000_000)
    got = parse_error_reply(body)
    assert got is not None
    assert len(got[1]) == MAX_ERROR_MESSAGE_CHARS
    assert got[1].endswith("(truncated)")
    assert sum(map(len, body)) < 3 * MAX_ERROR_MESSAGE_CHARS


@pytest.mark.parametrize(
    "frame",
    [
        # The state service's own envelope: its codes and extra fields are replies, not errors.
        b'{"success":false,"error":"Scope \'s\' does not exist","code":"SCOPE_NOT_FOUND"}',
        b'{"success":false,"error":"too big","code":"VALUE_TOO_LARGE","field":"value"}',
        b'{"success":false,"error":"x","code":"QUEUE_FULL","field":"value"}',
        b'{"success":true,"error":"x","code":"QUEUE_FULL"}',
        b'{"success":0,"error":"x","code":"QUEUE_FULL"}',
        b'{"success":false,"error":1,"code":"QUEUE_FULL"}',
        b'{"success":false,"error":"x","code":["QUEUE_FULL"]}',
        b'["success","error","code"]',
        b'{"success":false,"error":"x","code":"QUEUE_FULL"',
        # Past the byte checks, into json.loads: over Python's int-digit limit (ValueError),
        # nesting deeper than the recursion limit (RecursionError), invalid UTF-8.
        b'{"success":false,"error":' + b"1" * 5000 + b',"code":"QUEUE_FULL"}',
        b'{"success":false,"error":' + b"[" * 5000 + b"]" * 5000 + b',"code":"QUEUE_FULL"}',
        b'{"success":false,"error":"\xff","code":"QUEUE_FULL"}',
        b'{"success":false,"error":"x","code":"QUEUE_FULL","x":1,"code":"QUEUE_FULL"}',
        b'{"success":false,"error":"\xff","code":"QUEUE_FULL"}',
        b"",
    ],
)
def test_legacy_non_errors_are_replies(frame: bytes) -> None:
    assert parse_legacy_error_body([frame]) is None
    assert parse_error_reply([frame]) is None


def test_legacy_envelope_with_more_frames_is_a_reply() -> None:
    (frame,) = error_reply_body(Dialect.LEGACY, ErrorCode.QUEUE_FULL, "full")
    assert parse_error_reply([frame, b"more"]) is None


def test_oversized_legacy_frame_is_not_parsed() -> None:
    pad = " " * 20_000  # valid JSON whitespace, so only the size cap can refuse it
    frame = ('{"success":false,"error":"x","code":"QUEUE_FULL"' + pad + "}").encode()
    assert json.loads(frame)["code"] == "QUEUE_FULL"
    assert parse_legacy_error_body([frame]) is None


def test_either_form_is_an_error_whatever_the_dialect() -> None:
    # A legacy-dialect worker behind our broker sends the envelope to MDP/0.2 clients too; an
    # older broker of ours sent plantd.error to legacy clients.
    legacy = error_reply_body(Dialect.LEGACY, ErrorCode.HANDLER_ERROR, "boom")
    assert parse_error_reply(legacy) == ("HANDLER_ERROR", "boom")


envelope_like = st.builds(
    lambda middle, code: b'{"success":false,"error":' + middle + b',"code":"' + code + b'"}',
    st.binary(max_size=60),
    st.sampled_from([c.encode() for c in ErrorCode.ALL] + [b"", b"NOPE"]),
)


@given(st.lists(st.one_of(st.binary(max_size=80), envelope_like), max_size=4))
def test_parse_never_raises(body: list[bytes]) -> None:
    """Random frames and frames that pass the byte checks: a code and message, or None."""
    got = parse_error_reply(body)
    if got is not None:
        assert isinstance(got[0], str) and isinstance(got[1], str)
        # Any code passes in plantd.error frames; the envelope only carries MDP codes.
        assert body[0] == ERROR_MARKER or got[0] in ErrorCode.ALL


@pytest.mark.parametrize("dialect", list(Dialect))
def test_client_turns_an_error_final_into_broker_error(dialect: Dialect) -> None:
    """The client path: the FINAL as decoded off the wire raises a coded BrokerError."""
    body = error_reply_body(dialect, ErrorCode.SERVICE_UNAVAILABLE, "no worker for echo")
    reply = decode_reply(encode_reply(b"echo", body, True, dialect))
    with pytest.raises(BrokerError) as info:
        _check_final(b"echo", reply)
    assert (info.value.code, info.value.message, info.value.service) == (
        "SERVICE_UNAVAILABLE",
        "no worker for echo",
        "echo",
    )


def test_client_passes_a_state_envelope_through() -> None:
    frame = b'{"success":false,"error":"nope","code":"SCOPE_NOT_FOUND"}'
    reply = decode_reply(encode_reply(b"org.plantd.State", [frame], True, Dialect.LEGACY))
    assert _check_final(b"org.plantd.State", reply) == [frame]
