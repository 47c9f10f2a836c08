"""Exceptions raised by the MDP library, and the error codes the broker sends.

Every error a caller can see derives from :class:`MDPError`. A broker error reply is a FINAL
whose body is ``[b"plantd.error", CODE, message-utf8]`` for MDP/0.2 and MDP/0.1 peers, and one
JSON frame ``{"success":false,"error":message,"code":CODE}`` for peers in the legacy dialect
(the original Go client JSON-decodes the first body frame; ``codec.error_reply_body`` picks
the form). Clients turn either into :class:`BrokerError`. The codes are in docs/protocol.md.
"""

from __future__ import annotations

import json
from typing import Any, Final

from plantd.common.endpoints import InvalidEndpoint

ERROR_MARKER: Final = b"plantd.error"

# An error message is for a human: a handler's exception text can be arbitrarily long (it may
# quote its input), so what goes on the wire is cut here.
MAX_ERROR_MESSAGE_CHARS: Final = 2000
# A legacy reply frame larger than this is never parsed as an error envelope (it is a payload):
# an envelope we send is at most ~13 KB (2000 chars, each escaped to at most 6 bytes).
MAX_LEGACY_ERROR_BYTES: Final = 16 * 1024
_LEGACY_KEYS: Final = frozenset(("success", "error", "code"))
_LEGACY_HEAD: Final = b'{"success":false,"error":'


class ErrorCode:
    """Error codes carried in ``plantd.error`` replies (bytes on the wire, str here)."""

    SERVICE_UNAVAILABLE: Final = "SERVICE_UNAVAILABLE"  # no worker registered before the deadline
    DEADLINE_EXCEEDED: Final = "DEADLINE_EXCEEDED"  # waited in the queue past the request timeout
    QUEUE_FULL: Final = "QUEUE_FULL"  # the service's queue is at its count or byte budget
    TOO_MANY_REQUESTS: Final = "TOO_MANY_REQUESTS"  # this client's in-flight count or byte cap
    OVERLOADED: Final = "OVERLOADED"  # the broker-wide byte budget for queued requests is spent
    WORKER_LOST: Final = "WORKER_LOST"  # the worker died or disconnected mid-request
    MESSAGE_TOO_LARGE: Final = "MESSAGE_TOO_LARGE"  # above the byte or frame-count limit
    SHUTTING_DOWN: Final = "SHUTTING_DOWN"  # the broker is stopping
    HANDLER_ERROR: Final = "HANDLER_ERROR"  # the worker's handler raised
    BAD_REQUEST: Final = "BAD_REQUEST"  # well-formed MDP but unusable (e.g. reserved name)
    # Raised by our clients, never sent by a broker: the connection carrying the request
    # dropped before its reply (the broker died or was cut off); it may have run.
    BROKER_LOST: Final = "BROKER_LOST"

    ALL: Final = (
        SERVICE_UNAVAILABLE,
        DEADLINE_EXCEEDED,
        QUEUE_FULL,
        TOO_MANY_REQUESTS,
        OVERLOADED,
        WORKER_LOST,
        MESSAGE_TOO_LARGE,
        SHUTTING_DOWN,
        HANDLER_ERROR,
        BAD_REQUEST,
        BROKER_LOST,
    )


_CODES: Final = frozenset(c.encode() for c in ErrorCode.ALL)


class MDPError(Exception):
    """Base class of every error raised by ``plantd.mdp``."""


class ProtocolError(MDPError):
    """A message that does not follow any dialect we speak.

    ``reason`` is a short stable slug (used as a metrics label); ``detail`` says what was wrong.
    """

    __slots__ = ("detail", "reason")

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"MDP protocol error ({reason}): {detail}")
        self.reason = reason
        self.detail = detail


class RequestTimeout(MDPError):
    """No reply arrived in time (after every permitted attempt)."""

    def __init__(self, service: str, timeout: float, attempts: int) -> None:
        super().__init__(
            f"no reply from service {service!r} within {timeout:.3g}s "
            f"({attempts} attempt{'s' if attempts != 1 else ''}); check that the broker is "
            "reachable and a worker serves this service (plant mmi mmi.service NAME)"
        )
        self.service = service
        self.timeout = timeout
        self.attempts = attempts


class BrokerError(MDPError):
    """The broker (or a worker's handler) answered with a ``plantd.error`` reply."""

    def __init__(self, code: str, message: str, service: str = "") -> None:
        where = f" for service {service!r}" if service else ""
        super().__init__(f"{code}{where}: {message}")
        self.code = code
        self.message = message
        self.service = service


class ClientClosed(MDPError):
    """The client was closed while a request was pending."""


class EndpointError(MDPError, InvalidEndpoint):
    """An endpoint a client or worker was given cannot be connected to as written.

    Raised when the client or worker is created (libzmq itself accepts ``tcp://[::1`` and
    then fails silently, which looks like a timeout), and for anything libzmq refuses at
    connect. The CLI maps it to a usage error (exit 2). The grammar and the message are
    :mod:`plantd.common.endpoints`'; this is the library's own type for it.
    """


_CUT: Final = " ...(truncated)"


def _clip(message: str) -> str:
    if len(message) <= MAX_ERROR_MESSAGE_CHARS:
        return message
    return message[: MAX_ERROR_MESSAGE_CHARS - len(_CUT)] + _CUT


def error_body(code: str, message: str) -> list[bytes]:
    """The body of an error reply (MDP/0.2 and MDP/0.1 peers)."""
    return [ERROR_MARKER, code.encode(), _clip(message).encode("utf-8", "replace")]


def legacy_error_body(code: str, message: str) -> list[bytes]:
    """The body of an error reply for a legacy-dialect peer: the original's JSON envelope.

    ``ensure_ascii`` (the default) keeps the frame ASCII whatever the message holds (lone
    surrogates included), so any JSON decoder reads it.
    """
    doc = {"success": False, "error": _clip(message), "code": code}
    return [json.dumps(doc, separators=(",", ":")).encode("ascii")]


def parse_legacy_error_body(body: list[bytes]) -> tuple[str, str] | None:
    """``(code, message)`` when ``body`` is a legacy error envelope we would send, else None.

    Only one frame holding exactly ``success: false``, a string ``error`` and one of the MDP
    :class:`ErrorCode` codes, laid out as :func:`legacy_error_body` writes it, counts: a state
    service reply uses the same envelope with its own codes (and sometimes more fields) and
    must reach its caller as a reply, not as an error.
    """
    if len(body) != 1:
        return None
    raw = body[0]
    # Byte checks first, so a reply costs no JSON parse: the envelope as legacy_error_body
    # writes it (only we send MDP codes in it) ends in ``,"code":"<MDP code>"}``.
    if len(raw) > MAX_LEGACY_ERROR_BYTES or not raw.startswith(_LEGACY_HEAD):
        return None
    cut = raw.rfind(b',"code":"')
    if cut < 0 or not raw.endswith(b'"}') or raw[cut + 9 : -2] not in _CODES:
        return None
    try:
        doc: Any = json.loads(raw)
    except (ValueError, RecursionError):  # invalid JSON/UTF-8, int-digit limit, deep nesting
        return None
    if not isinstance(doc, dict) or doc.keys() != _LEGACY_KEYS or doc["success"] is not False:
        return None
    code, message = doc["code"], doc["error"]
    if not isinstance(code, str) or code not in ErrorCode.ALL or not isinstance(message, str):
        return None
    return code, message


def parse_error_body(body: list[bytes]) -> tuple[str, str] | None:
    """``(code, message)`` when ``body`` is an error reply, else None."""
    if len(body) >= 2 and body[0] == ERROR_MARKER:
        msg = body[2].decode("utf-8", "replace") if len(body) > 2 else ""
        return body[1].decode("ascii", "replace"), msg
    return None
