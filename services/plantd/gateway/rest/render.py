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
from typing import Any, Final

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


def ws_message(kind: str, payload: dict[str, Any], **extra: Any) -> str:
    """A WebSocket text frame: ``{"type": kind, ...extra, <payload key>: payload}``."""
    frame: dict[str, Any] = {"type": kind, **extra}
    frame["error" if kind == "error" else "data"] = payload
    return dumps(frame)


def allow_header(verbs: Sequence[str]) -> str:
    return ", ".join(sorted(set(verbs)))
