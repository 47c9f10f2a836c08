"""The REST edge's pure parts: headers -> deadline, peer and metadata; the context adapter;
AIP-193 rendering with the mapped HTTP status and Retry-After; ETag/If-Match; SSE frames."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest

from plantd.api.errors import GatewayCode, Origin
from plantd.gateway.calls import Decision, rate_limited
from plantd.gateway.rest import render
from plantd.gateway.rest.context import (
    EdgeAbort,
    EdgeContext,
    call_metadata,
    client_host,
    parse_duration,
    parse_grpc_timeout,
    peer_string,
    request_timeout,
)
from plantd.gateway.rest.routes import RestInputError
from plantd.gateway.rest.server import (
    DirectFrames,
    etag_of,
    if_match_version,
    sent_at_once,
    ws_close_code,
)
from plantd.gateway.state_map import RpcFailure
from plantd.v1 import state_pb2 as pb

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("100m", 0.1), ("5S", 5.0), ("2M", 120.0), ("1H", 3600.0), ("250000u", 0.25)],
)
def test_grpc_timeout_units(value: str, seconds: float) -> None:
    assert parse_grpc_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "5", "5s", "-1S", "123456789S", "1.5S"])
def test_grpc_timeout_malformed(value: str) -> None:
    assert parse_grpc_timeout(value) is None


def test_durations_and_the_header_first() -> None:
    assert parse_duration("1.5s") == 1.5 and parse_duration("30s") == 30.0
    assert parse_duration("0.001s") == pytest.approx(0.001)
    assert parse_duration("1.5") is None and parse_duration("s") is None
    assert request_timeout({"grpc-timeout": "200m"}, {"timeout": "9s"}) == pytest.approx(0.2)
    assert request_timeout({}, {"timeout": "9s"}) == 9.0
    assert request_timeout({}, {}) is None
    with pytest.raises(ValueError, match="grpc-timeout"):
        request_timeout({"grpc-timeout": "soon"}, {})
    with pytest.raises(ValueError, match="timeout"):
        request_timeout({}, {"timeout": "forever"})


def test_forwarded_for_is_trusted_only_for_the_configured_hops() -> None:
    assert client_host("10.0.0.9", "1.2.3.4", 0) == "10.0.0.9"  # forgeable: ignored by default
    assert client_host("10.0.0.9", "6.6.6.6, 1.2.3.4", 1) == "1.2.3.4"  # the proxy's append
    assert client_host("10.0.0.9", "6.6.6.6, 1.2.3.4, 10.0.0.2", 2) == "1.2.3.4"
    assert client_host("10.0.0.9", "1.2.3.4", 2) == "10.0.0.9"  # too short
    assert client_host("10.0.0.9", "not-an-ip", 1) == "10.0.0.9"
    assert peer_string("1.2.3.4", 5) == "ipv4:1.2.3.4:5"
    assert peer_string("::1", 5) == "ipv6:[::1]:5"
    assert peer_string(None, None) == "unknown"


def test_only_the_forwarded_headers_become_metadata() -> None:
    headers = {"authorization": "Bearer t", "cookie": "s=1", "x-request-id": "r", "host": "h"}
    assert call_metadata(headers) == [("authorization", "Bearer t"), ("x-request-id", "r")]
    # A WebSocket's first-message token stands in for a missing header, never over one.
    assert call_metadata({}, "w") == [("authorization", "Bearer w")]
    assert call_metadata(headers, "w")[0] == ("authorization", "Bearer t")


async def test_the_context_counts_down_and_abort_raises() -> None:
    now = [100.0]
    ctx = EdgeContext([("x-request-id", "r")], peer="ipv4:1.2.3.4:5", timeout_s=2.0,
                      clock=lambda: now[0])  # fmt: skip
    assert ctx.time_remaining() == 2.0
    now[0] += 1.5
    assert ctx.time_remaining() == pytest.approx(0.5)
    now[0] += 5
    assert ctx.time_remaining() == 0.0
    assert EdgeContext([], peer="p", timeout_s=None).time_remaining() is None
    assert list(ctx.invocation_metadata() or ()) == [("x-request-id", "r")]
    with pytest.raises(EdgeAbort) as raised:
        await ctx.abort(grpc.StatusCode.NOT_FOUND, "gone", (("x", "y"),))
    assert raised.value.code is grpc.StatusCode.NOT_FOUND and raised.value.trailers == (("x", "y"),)


def test_a_failure_renders_as_aip193_with_the_table_status() -> None:
    failure = RpcFailure(Origin.BUS, "MESSAGE_TOO_LARGE", "too big")
    error = render.from_failure(failure, "req-1")
    assert error.status == 413  # the row's status, not RESOURCE_EXHAUSTED's usual 429
    body = error.body["error"]
    assert body["code"] == 413 and body["status"] == "RESOURCE_EXHAUSTED"
    assert body["message"] == "too big"
    assert body["details"][0] == {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "MESSAGE_TOO_LARGE",
        "domain": "plantd.io",
    }
    assert error.reason == "MESSAGE_TOO_LARGE" and error.headers == {"X-Request-Id": "req-1"}


def test_rate_limited_carries_retry_after() -> None:
    error = render.from_failure(rate_limited(Decision(False, 2.2, "sub")))
    assert error.status == 429 and error.headers["Retry-After"] == "3"
    types = [d["@type"].rsplit(".", 1)[1] for d in error.body["error"]["details"]]
    assert types == ["ErrorInfo", "RetryInfo"]


def test_an_abort_without_details_falls_back_to_code_proto() -> None:
    error = render.from_abort(EdgeAbort(grpc.StatusCode.UNAVAILABLE, "down", ()))
    assert error.status == 503 and error.reason is None and "details" not in error.body["error"]


def test_etags_and_if_match() -> None:
    assert etag_of(pb.GetEntryResponse(entry=pb.Entry(key="k", version=12))) == '"12"'
    assert etag_of(pb.GetEntryResponse()) is None
    assert etag_of(pb.ListKeysResponse(keys=["a"])) is None  # no entry field
    assert if_match_version('"12"') == "12" and if_match_version("7") == "7"
    for bad in ("*", 'W/"3"', '"a"', '"1", "2"'):
        with pytest.raises(RestInputError):
            if_match_version(bad)


def test_sse_frames_and_close_codes() -> None:
    assert render.sse_frame('{"a":1}', event_id="5") == b'id: 5\ndata: {"a":1}\n\n'
    assert render.sse_frame("{}", event="error") == b"event: error\ndata: {}\n\n"
    assert [ws_close_code(s) for s in (401, 403, 429, 503, 500, 400)] == [
        1008, 1008, 1013, 1013, 1011, 1000,
    ]  # fmt: skip
    assert render.ws_message("error", {"code": 1}) == '{"type":"error","error":{"code":1}}'
    assert GatewayCode.UNKNOWN_ROUTE in GatewayCode.ALL


# ---- rendered stream frames, shared by the streams of one edge ----


def _change(revision: int, value: str) -> pb.WatchEntriesResponse:
    entry = pb.Entry(scope="s", key="k", value=value, version=revision)
    return pb.WatchEntriesResponse(
        changes=[pb.Change(entry=entry, revision=revision)], revision=revision
    )


def test_equal_messages_render_once_and_keep_their_resume_id() -> None:
    frames = render.EventFrames(size=4)
    first = frames.ws_event(_change(7, "a"), "revision")
    # Another watcher's equal message (a different object): the same frame, not re-rendered.
    assert frames.ws_event(_change(7, "a"), "revision") is first
    assert json.loads(first) == {
        "type": "event",
        "id": "7",
        "data": render.message_json(_change(7, "a")),
    }
    other = frames.ws_event(_change(7, "b"), "revision")
    assert other != first and json.loads(other)["data"]["changes"][0]["entry"]["value"] == "b"
    sse = frames.sse_event(_change(7, "a"), "revision")
    assert sse.startswith(b"id: 7\ndata: {") and sse.endswith(b"\n\n")
    assert frames.sse_event(_change(7, "a"), "revision") is sse


def test_the_frame_table_is_bounded() -> None:
    frames = render.EventFrames(size=4)
    oldest = frames.ws_event(_change(1, "x"), "revision")
    for revision in range(2, 10):
        frames.ws_event(_change(revision, "x"), "revision")
    assert len(frames._ws) == 4
    again = frames.ws_event(_change(1, "x"), "revision")
    assert again == oldest and again is not oldest, "evicted, then rendered again"


# ---- server reflection's pool ----


def test_reflection_finds_the_file_of_a_method() -> None:
    from plantd.gateway.reflection import MethodAwarePool

    pool = MethodAwarePool()
    found = pool.FindFileContainingSymbol("plantd.v1.StateService.GetEntry")
    assert found.name == "plantd/v1/state.proto"
    assert pool.FindFileContainingSymbol("plantd.v1.GetEntryRequest").name == found.name
    for missing in ("plantd.v1.StateService.NoSuchMethod", "plantd.v1.NoSuchService.GetEntry", "x"):
        with pytest.raises(KeyError):
            pool.FindFileContainingSymbol(missing)
    assert pool.FindFileByName("plantd/v1/state.proto") is found  # the rest is the pool's


class _Transport:
    """What an asyncio transport tells about whether a write waits, and what was written."""

    def __init__(self, buffered: int = 0) -> None:
        self.buffered = buffered
        self.closing = False
        self.written: list[bytes] = []

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (16 * 1024, 64 * 1024)

    def is_closing(self) -> bool:
        return self.closing

    def write(self, data: bytes) -> None:
        self.written.append(data)


def test_a_frame_is_sent_at_once_only_into_an_empty_buffer_and_under_the_mark() -> None:
    def at_once(buffered: int, size: int) -> bool:
        return sent_at_once(_Transport(buffered), size, 64 * 1024)  # type: ignore[arg-type]

    assert at_once(0, 100)
    assert not at_once(1, 100)  # a client behind: the send may wait, under the slow timer
    assert not at_once(0, 64 * 1024)  # this frame alone would pause the transport
    assert not sent_at_once(None, 100, 64 * 1024)  # the connection is gone


def test_a_text_frame_header_carries_each_length_encoding() -> None:
    assert render.ws_text_frame(b"x" * 125)[:2] == b"\x81\x7d"
    assert render.ws_text_frame(b"x" * 126)[:4] == b"\x81\x7e\x00\x7e"
    big = render.ws_text_frame(b"x" * 70000)
    assert big[:10] == b"\x81\x7f" + (70000).to_bytes(8, "big") and len(big) == 70010


class _Ws:
    closed = False


async def test_a_direct_frame_is_written_only_when_nothing_waits_before_it() -> None:
    transport, ws, queue = _Transport(), _Ws(), asyncio.Queue[object]()
    frames = render.EventFrames()
    sink = DirectFrames(frames, ws, transport, queue, "revision")  # type: ignore[arg-type]
    message = _change(3, "v")
    assert not sink(message)  # the stream's task is busy: it sends in its turn
    sink.idle = True
    assert sink(message) and sink(message)
    assert transport.written == [frames.ws_wire(message, "revision")] * 2
    assert transport.written[0] is transport.written[1]  # one frame built for all sockets
    queue.put_nowait(object())
    assert not sink(message)  # a queued message goes first
    queue.get_nowait()
    transport.buffered = 10
    assert not sink(message)  # the client is behind: the task's send, under the slow timer
    transport.buffered = 0
    ws.closed = True
    assert not sink(message)
    assert len(transport.written) == 2
