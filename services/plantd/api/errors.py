"""Envelope error codes -> gRPC status code -> HTTP status: the gateway's mapping, as data.

Every plantd error that leaves the gateway is a ``google.rpc.Status`` whose details hold
``google.rpc.ErrorInfo{domain: "plantd.io", reason: <envelope code>}`` (the code the bus,
a service or the gateway itself produced), so clients switch on ``reason`` and the gRPC code
only says what kind of failure it is. The same code can mean different things in different
services (``CONFLICT`` is a lost compare-and-set in state, a taken name in identity), so rows
are keyed by origin *and* code. State and identity codes are written out as strings, so the
gateway depends on no other service's package (DESIGN §2); the completeness test compares them
with ``plantd.state.errors`` and ``plantd.identity.errors``.

This table and the one in docs/protocol.md ("gRPC and HTTP error mapping") are the same facts:
a unit test reads the docs table and fails when they differ, and another fails when a code is
added to the bus, state, identity or token errors without a row here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final

import grpc
from google.rpc import error_details_pb2, status_pb2

from plantd.common.auth.errors import Reason as TokenReason
from plantd.mdp.errors import ErrorCode as BusCode

ERROR_DOMAIN: Final = "plantd.io"


class Origin(StrEnum):
    """Who produced the code: the key's first half."""

    BUS = "bus"  # the MDP broker or worker library (plantd.mdp.errors.ErrorCode)
    STATE = "state"  # org.plantd.State (the codes of plantd.state.errors.Code)
    IDENTITY = "identity"  # org.plantd.Identity (the codes of plantd.identity.errors.Code)
    TOKEN = "token"  # noqa: S105 - the offline token verifier (plantd.common.auth.errors.Reason)
    GATEWAY = "gateway"  # the gateway itself (GatewayCode below)


class GatewayCode:
    """Codes the gateway produces itself (no envelope carries them)."""

    KEY_NOT_FOUND: Final = "KEY_NOT_FOUND"  # state-get answered found: false
    REQUEST_TIMEOUT: Final = "REQUEST_TIMEOUT"  # no reply by the call's deadline
    BAD_REPLY: Final = "BAD_REPLY"  # a service reply the gateway cannot parse
    RATE_LIMITED: Final = "RATE_LIMITED"  # the gateway's own token bucket is empty
    PERMISSION_DENIED: Final = "PERMISSION_DENIED"  # bus:call/publish/subscribe not held
    TOO_MANY_STREAMS: Final = "TOO_MANY_STREAMS"  # the caller's open streams are at the cap
    SLOW_CONSUMER: Final = "SLOW_CONSUMER"  # a stream's buffer filled: the client reads too slowly
    INVALID_ARGUMENT: Final = "INVALID_ARGUMENT"  # a field the gateway itself checks is unusable
    RESERVED_SERVICE: Final = "RESERVED_SERVICE"  # generic Call to a service with a typed API
    UNKNOWN_ROUTE: Final = "UNKNOWN_ROUTE"  # REST: no route has this path
    METHOD_NOT_ALLOWED: Final = "METHOD_NOT_ALLOWED"  # REST: the path exists, not with this verb
    CIRCUIT_OPEN: Final = "CIRCUIT_OPEN"  # the service kept failing: not sent, retry-after

    ALL: Final = (
        KEY_NOT_FOUND,
        REQUEST_TIMEOUT,
        BAD_REPLY,
        RATE_LIMITED,
        PERMISSION_DENIED,
        TOO_MANY_STREAMS,
        SLOW_CONSUMER,
        INVALID_ARGUMENT,
        RESERVED_SERVICE,
        UNKNOWN_ROUTE,
        METHOD_NOT_ALLOWED,
        CIRCUIT_OPEN,
    )


@dataclass(frozen=True, slots=True)
class ErrorMapping:
    """How one envelope code is presented: its gRPC status code and its HTTP status."""

    grpc_code: grpc.StatusCode
    http_status: int

    @property
    def rpc_code(self) -> int:
        """The numeric ``google.rpc.Code`` (what ``google.rpc.Status.code`` holds)."""
        number: int = self.grpc_code.value[0]
        return number


_S = grpc.StatusCode


def _m(code: grpc.StatusCode, http: int) -> ErrorMapping:
    return ErrorMapping(code, http)


# Choices the gRPC guide leaves open, and why: a lost compare-and-set is ABORTED (re-read and
# retry; AIP-154), not FAILED_PRECONDITION; a full queue or a per-client cap is
# RESOURCE_EXHAUSTED (back off), a broker-wide budget or a stopping broker UNAVAILABLE (retry
# elsewhere or later); an over-size message is RESOURCE_EXHAUSTED as gRPC's own size limit, but
# HTTP 413; a failed login is UNAUTHENTICATED with the same reason whatever failed.
_TABLE: Final[dict[tuple[Origin, str], ErrorMapping]] = {
    (Origin.BUS, BusCode.SERVICE_UNAVAILABLE): _m(_S.UNAVAILABLE, 503),
    (Origin.BUS, BusCode.DEADLINE_EXCEEDED): _m(_S.DEADLINE_EXCEEDED, 504),
    (Origin.BUS, BusCode.QUEUE_FULL): _m(_S.RESOURCE_EXHAUSTED, 429),
    (Origin.BUS, BusCode.TOO_MANY_REQUESTS): _m(_S.RESOURCE_EXHAUSTED, 429),
    (Origin.BUS, BusCode.OVERLOADED): _m(_S.UNAVAILABLE, 503),
    (Origin.BUS, BusCode.WORKER_LOST): _m(_S.UNAVAILABLE, 503),
    (Origin.BUS, BusCode.MESSAGE_TOO_LARGE): _m(_S.RESOURCE_EXHAUSTED, 413),
    (Origin.BUS, BusCode.SHUTTING_DOWN): _m(_S.UNAVAILABLE, 503),
    (Origin.BUS, BusCode.BROKER_LOST): _m(_S.UNAVAILABLE, 503),
    (Origin.BUS, BusCode.HANDLER_ERROR): _m(_S.INTERNAL, 500),
    (Origin.BUS, BusCode.BAD_REQUEST): _m(_S.INVALID_ARGUMENT, 400),
    (Origin.STATE, "INVALID_REQUEST"): _m(_S.INVALID_ARGUMENT, 400),
    (Origin.STATE, "UNKNOWN_OPERATION"): _m(_S.UNIMPLEMENTED, 501),
    (Origin.STATE, "VALUE_TOO_LARGE"): _m(_S.INVALID_ARGUMENT, 400),
    (Origin.STATE, "REPLY_TOO_LARGE"): _m(_S.RESOURCE_EXHAUSTED, 429),
    (Origin.STATE, "SCOPE_NOT_FOUND"): _m(_S.NOT_FOUND, 404),
    (Origin.STATE, "SCOPE_EXISTS"): _m(_S.ALREADY_EXISTS, 409),
    (Origin.STATE, "CONFLICT"): _m(_S.ABORTED, 409),
    (Origin.STATE, "STORE_UNAVAILABLE"): _m(_S.UNAVAILABLE, 503),
    (Origin.STATE, "NOT_REPLICATED"): _m(_S.UNAVAILABLE, 503),
    (Origin.STATE, "UNAUTHENTICATED"): _m(_S.UNAUTHENTICATED, 401),
    (Origin.STATE, "PERMISSION_DENIED"): _m(_S.PERMISSION_DENIED, 403),
    (Origin.STATE, "INTERNAL"): _m(_S.INTERNAL, 500),
    (Origin.IDENTITY, "INVALID_MESSAGE"): _m(_S.INVALID_ARGUMENT, 400),
    (Origin.IDENTITY, "INVALID_REQUEST"): _m(_S.INVALID_ARGUMENT, 400),
    (Origin.IDENTITY, "UNKNOWN_OPERATION"): _m(_S.UNIMPLEMENTED, 501),
    (Origin.IDENTITY, "LOGIN_FAILED"): _m(_S.UNAUTHENTICATED, 401),
    (Origin.IDENTITY, "RATE_LIMITED"): _m(_S.RESOURCE_EXHAUSTED, 429),
    (Origin.IDENTITY, "REFRESH_FAILED"): _m(_S.UNAUTHENTICATED, 401),
    (Origin.IDENTITY, "LOGOUT_FAILED"): _m(_S.UNAUTHENTICATED, 401),
    (Origin.IDENTITY, "PASSWORD_CHANGE_FAILED"): _m(_S.UNAUTHENTICATED, 401),
    (Origin.IDENTITY, "PASSWORD_REJECTED"): _m(_S.INVALID_ARGUMENT, 400),
    (Origin.IDENTITY, "UNAUTHENTICATED"): _m(_S.UNAUTHENTICATED, 401),
    (Origin.IDENTITY, "PERMISSION_DENIED"): _m(_S.PERMISSION_DENIED, 403),
    (Origin.IDENTITY, "PASSWORD_CHANGE_REQUIRED"): _m(_S.FAILED_PRECONDITION, 403),
    (Origin.IDENTITY, "NOT_FOUND"): _m(_S.NOT_FOUND, 404),
    (Origin.IDENTITY, "CONFLICT"): _m(_S.ALREADY_EXISTS, 409),
    (Origin.IDENTITY, "STORE_UNAVAILABLE"): _m(_S.UNAVAILABLE, 503),
    (Origin.IDENTITY, "INTERNAL"): _m(_S.INTERNAL, 500),
    **{(Origin.TOKEN, str(r)): _m(_S.UNAUTHENTICATED, 401) for r in TokenReason},
    (Origin.GATEWAY, GatewayCode.KEY_NOT_FOUND): _m(_S.NOT_FOUND, 404),
    (Origin.GATEWAY, GatewayCode.REQUEST_TIMEOUT): _m(_S.DEADLINE_EXCEEDED, 504),
    (Origin.GATEWAY, GatewayCode.BAD_REPLY): _m(_S.INTERNAL, 500),
    (Origin.GATEWAY, GatewayCode.RATE_LIMITED): _m(_S.RESOURCE_EXHAUSTED, 429),
    (Origin.GATEWAY, GatewayCode.PERMISSION_DENIED): _m(_S.PERMISSION_DENIED, 403),
    (Origin.GATEWAY, GatewayCode.TOO_MANY_STREAMS): _m(_S.RESOURCE_EXHAUSTED, 429),
    (Origin.GATEWAY, GatewayCode.SLOW_CONSUMER): _m(_S.RESOURCE_EXHAUSTED, 429),
    (Origin.GATEWAY, GatewayCode.INVALID_ARGUMENT): _m(_S.INVALID_ARGUMENT, 400),
    (Origin.GATEWAY, GatewayCode.RESERVED_SERVICE): _m(_S.INVALID_ARGUMENT, 400),
    (Origin.GATEWAY, GatewayCode.UNKNOWN_ROUTE): _m(_S.NOT_FOUND, 404),
    (Origin.GATEWAY, GatewayCode.METHOD_NOT_ALLOWED): _m(_S.UNIMPLEMENTED, 405),
    (Origin.GATEWAY, GatewayCode.CIRCUIT_OPEN): _m(_S.UNAVAILABLE, 503),
}

ERROR_MAP: Final[Mapping[tuple[Origin, str], ErrorMapping]] = MappingProxyType(_TABLE)

# A code we have no row for (a newer service, a legacy reply without a code): UNKNOWN, 500.
FALLBACK: Final = _m(_S.UNKNOWN, 500)


# The HTTP status of a status the REST edge only sees as (gRPC code, ErrorInfo reason): a code
# means one thing per gRPC code across origins (a unit test keeps it so), so the pair decides.
_HTTP_BY_REASON: Final[dict[tuple[grpc.StatusCode, str], int]] = {
    (m.grpc_code, code): m.http_status for (_, code), m in _TABLE.items()
}

# google/rpc/code.proto's HTTP mapping, for a status with no ErrorInfo row.
_HTTP_BY_CODE: Final[dict[grpc.StatusCode, int]] = {
    _S.OK: 200,
    _S.CANCELLED: 499,
    _S.UNKNOWN: 500,
    _S.INVALID_ARGUMENT: 400,
    _S.DEADLINE_EXCEEDED: 504,
    _S.NOT_FOUND: 404,
    _S.ALREADY_EXISTS: 409,
    _S.PERMISSION_DENIED: 403,
    _S.UNAUTHENTICATED: 401,
    _S.RESOURCE_EXHAUSTED: 429,
    _S.FAILED_PRECONDITION: 400,
    _S.ABORTED: 409,
    _S.OUT_OF_RANGE: 400,
    _S.UNIMPLEMENTED: 501,
    _S.INTERNAL: 500,
    _S.UNAVAILABLE: 503,
    _S.DATA_LOSS: 500,
}


def http_status(code: grpc.StatusCode, reason: str | None) -> int:
    """The HTTP status for a gRPC ``code`` whose ErrorInfo carries ``reason``: this table's
    row, else google/rpc/code.proto's mapping of the code."""
    if reason is not None:
        status = _HTTP_BY_REASON.get((code, reason))
        if status is not None:
            return status
    return _HTTP_BY_CODE.get(code, 500)


def lookup(origin: Origin, code: str) -> ErrorMapping:
    """The mapping of ``code`` from ``origin``; :data:`FALLBACK` for a code without a row."""
    return _TABLE.get((origin, code), FALLBACK)


def codes_of(origin: Origin) -> frozenset[str]:
    """Every code the table maps for ``origin`` (for tests and docs)."""
    return frozenset(code for o, code in _TABLE if o is origin)


def status_for(
    origin: Origin,
    code: str,
    message: str,
    metadata: Mapping[str, str] | None = None,
) -> tuple[ErrorMapping, status_pb2.Status]:
    """The mapping of ``code`` and the ``google.rpc.Status`` the gateway sends for it.

    The status carries ``ErrorInfo{domain: "plantd.io", reason: code}`` first in its details
    (``metadata`` adds context such as the scope); the caller appends further details
    (``BadRequest``, ``RetryInfo``) when it has them.
    """
    mapping = lookup(origin, code)
    info = error_details_pb2.ErrorInfo(
        reason=code, domain=ERROR_DOMAIN, metadata=dict(metadata or {})
    )
    status = status_pb2.Status(code=mapping.rpc_code, message=message)
    status.details.add().Pack(info)
    return mapping, status
