"""What the REST edge writes: AIP-193 error JSON, proto3 JSON bodies, SSE frames. Pure.

An error is the same ``google.rpc.Status`` the gRPC face sends (built once, by
:func:`plantd.gateway.errors.grpc_status`), rendered as AIP-193's HTTP form::

    {"error": {"code": 404, "message": "...", "status": "NOT_FOUND",
               "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                            "reason": "KEY_NOT_FOUND", "domain": "plantd.io", ...}]}}

with the HTTP status from the mapping table (:func:`plantd.api.errors.http_status`), a
``Retry-After`` header when the status carries ``google.rpc.RetryInfo``, and the request id.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from plantd.api.errors import http_status
from plantd.gateway.auth import REQUEST_ID
from plantd.gateway.errors import grpc_status
from plantd.gateway.rest.context import EdgeAbort
from plantd.gateway.state_map import RpcFailure

DETAILS_TRAILER: Final = "grpc-status-details-bin"
JSON_TYPE: Final = "application/json"
_ERROR_INFO: Final = error_details_pb2.ErrorInfo.DESCRIPTOR.full_name
_RETRY_INFO: Final = error_details_pb2.RetryInfo.DESCRIPTOR.full_name


@dataclass(frozen=True, slots=True)
class HttpError:
    """An error as the edge sends it: status, JSON body, extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def reason(self) -> str | None:
        for detail in self.body["error"].get("details", ()):
            if detail.get("@type", "").endswith(_ERROR_INFO):
                reason: str = detail.get("reason", "")
                return reason
        return None

    def text(self) -> str:
        return dumps(self.body)


def dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def message_json(message: Message) -> dict[str, Any]:
    """proto3 JSON of a response (lowerCamelCase names, int64 as strings, defaults omitted)."""
    result: dict[str, Any] = json_format.MessageToDict(message)
    return result


def from_abort(abort: EdgeAbort) -> HttpError:
    """The HTTP error for what a servicer aborted with."""
    status = status_pb2.Status(code=abort.code.value[0], message=abort.details)
    headers: dict[str, str] = {}
    for key, value in abort.trailers:
        if key == DETAILS_TRAILER and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
        elif key == REQUEST_ID and isinstance(value, str):
            headers["X-Request-Id"] = value
    return from_status(abort.code, status, headers)


def from_failure(failure: RpcFailure, request_id: str | None = None) -> HttpError:
    """The HTTP error for a failure the edge found itself (unknown route, bad JSON)."""
    code, status = grpc_status(failure)
    trailers: list[tuple[str, str | bytes]] = list(status.trailing_metadata)
    if request_id:
        trailers.append((REQUEST_ID, request_id))
    return from_abort(EdgeAbort(code, status.details, trailers))


def from_status(
    code: grpc.StatusCode, status: status_pb2.Status, headers: dict[str, str] | None = None
) -> HttpError:
    headers = dict(headers or {})
    details: list[dict[str, Any]] = []
    reason: str | None = None
    for detail in status.details:
        if detail.TypeName() == _ERROR_INFO:
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.TypeName() == _RETRY_INFO:
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            seconds = retry.retry_delay.ToNanoseconds() / 1e9
            headers["Retry-After"] = str(max(1, math.ceil(seconds)))
        try:
            details.append(json_format.MessageToDict(detail))
        except (TypeError, KeyError):  # a detail type this process does not know
            details.append({"@type": detail.type_url})
    status_code = http_status(code, reason)
    error: dict[str, Any] = {
        "code": status_code,
        "message": status.message,
        "status": code.name,
    }
    if details:
        error["details"] = details
    return HttpError(status_code, {"error": error}, headers)


def sse_frame(data: str, *, event_id: str | None = None, event: str | None = None) -> bytes:
    """One Server-Sent Event. ``data`` is one line of compact JSON (no raw newlines)."""
    lines: list[str] = []
    if event is not None:
        lines.append(f"event: {event}")
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"data: {data}")
    return ("\n".join(lines) + "\n\n").encode()


SSE_HEARTBEAT: Final = b": keep-alive\n\n"  # a comment: EventSource ignores it, proxies see bytes


_F = TypeVar("_F", str, bytes)
RECENT_BY_IDENTITY: Final = 8  # messages whose frames are found by identity (kept alive here)


class EventFrames:
    """Rendered stream frames by message content, shared by every stream of one edge.

    N watchers of one scope each receive an equal message per change; rendering it to proto3
    JSON is most of what a frame costs (MessageToDict + dumps: ~40 us of the ~0.1 ms each
    watcher cost per update, 5,000 watchers in ``bench.gateway``), so it is done once per
    distinct message. The key is the message's type and wire bytes (equal messages serialize
    equally in one process); the table keeps the last ``size`` frames, enough for the changes
    in flight to all watchers at once.
    """

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._ws: dict[tuple[str, str, bytes], bytes] = {}
        self._sse: dict[tuple[str, str, bytes], bytes] = {}
        self._recent_ws: list[tuple[Message, str, bytes]] = []
        self._recent_wire: list[tuple[bytes, bytes]] = []
        self._json: dict[tuple[str, str, bytes], str] = {}
        self._recent_json: list[tuple[Message, str, str]] = []

    def ws_event(self, message: Message, id_field: str) -> bytes:
        """The WebSocket ``event`` text frame of a stream message (with its resume ``id``),
        UTF-8 encoded once for every socket it goes to."""
        # The watches of a scope share one response object per change (plantd.gateway.watch):
        # found by identity first, without serializing it for the key.
        for seen, seen_field, seen_frame in self._recent_ws:
            if seen is message and seen_field == id_field:
                return seen_frame
        key = _frame_key(message, id_field)
        frame = self._ws.get(key)
        if frame is None:
            extra = {"id": str(getattr(message, id_field))} if id_field else {}
            frame = ws_message("event", message_json(message), **extra).encode()
            _keep(self._ws, key, frame, self.size)
        self._recent_ws.insert(0, (message, id_field, frame))
        del self._recent_ws[RECENT_BY_IDENTITY:]
        return frame

    def json(self, message: Message) -> str:
        """A stream message's proto3 JSON (for frames that wrap it, like ``/v1/ws``)."""
        for seen, _, seen_frame in self._recent_json:
            if seen is message:
                return seen_frame
        key = _frame_key(message, "")
        frame = self._json.get(key)
        if frame is None:
            frame = dumps(message_json(message))
            _keep(self._json, key, frame, self.size)
        self._recent_json.insert(0, (message, "", frame))
        del self._recent_json[RECENT_BY_IDENTITY:]
        return frame

    def ws_wire(self, message: Message, id_field: str) -> bytes:
        """The same event as a whole WebSocket frame on the wire (header and payload), built
        once for every socket that gets it: a server's frames are not masked."""
        payload = self.ws_event(message, id_field)
        for seen, wire in self._recent_wire:
            if seen is payload:
                return wire
        wire = ws_text_frame(payload)
        self._recent_wire.insert(0, (payload, wire))
        del self._recent_wire[RECENT_BY_IDENTITY:]
        return wire

    def sse_event(self, message: Message, id_field: str) -> bytes:
        """The SSE event of a stream message (with its resume ``id:``)."""
        key = _frame_key(message, id_field)
        frame = self._sse.get(key)
        if frame is None:
            event_id = str(getattr(message, id_field)) if id_field else None
            frame = sse_frame(dumps(message_json(message)), event_id=event_id)
            _keep(self._sse, key, frame, self.size)
        return frame


def _frame_key(message: Message, id_field: str) -> tuple[str, str, bytes]:
    return (message.DESCRIPTOR.full_name, id_field, message.SerializeToString())


def _keep(
    table: dict[tuple[str, str, bytes], _F], key: tuple[str, str, bytes], frame: _F, size: int
) -> None:
    if len(table) >= size:
        del table[next(iter(table))]  # the oldest: dicts keep insertion order
    table[key] = frame


def ws_message(kind: str, payload: dict[str, Any], **extra: Any) -> str:
    """A WebSocket text frame: ``{"type": kind, ...extra, <payload key>: payload}``."""
    frame: dict[str, Any] = {"type": kind, **extra}
    frame["error" if kind == "error" else "data"] = payload
    return dumps(frame)


def ws_text_frame(payload: bytes) -> bytes:
    """One final, unmasked WebSocket text frame (RFC 6455 §5.2): what a server sends."""
    size = len(payload)
    if size < 126:
        header = bytes((0x81, size))
    elif size < 1 << 16:
        header = bytes((0x81, 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + size.to_bytes(8, "big")
    return header + payload


def allow_header(verbs: Sequence[str]) -> str:
    return ", ".join(sorted(set(verbs)))
