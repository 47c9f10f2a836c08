"""Exceptions raised by the MDP library, and the error codes the broker sends.

Every error a caller can see derives from :class:`MDPError`. A broker error reply is a FINAL
whose body is ``[b"plantd.error", CODE, message-utf8]``; clients turn it into
:class:`BrokerError`. The codes are documented in docs/protocol.md.
"""

from __future__ import annotations

from typing import Final

ERROR_MARKER: Final = b"plantd.error"


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
    )


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


def error_body(code: str, message: str) -> list[bytes]:
    """The body of an error reply."""
    return [ERROR_MARKER, code.encode(), message.encode("utf-8", "replace")]


def parse_error_body(body: list[bytes]) -> tuple[str, str] | None:
    """``(code, message)`` when ``body`` is an error reply, else None."""
    if len(body) >= 2 and body[0] == ERROR_MARKER:
        msg = body[2].decode("utf-8", "replace") if len(body) > 2 else ""
        return body[1].decode("ascii", "replace"), msg
    return None
