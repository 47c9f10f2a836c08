"""Failures -> gRPC status with rich details; bus exceptions -> failures; deadlines. Pure.

Every error the gateway sends is a ``google.rpc.Status`` built by
:func:`plantd.api.errors.status_for` (the one mapping table), packed into the
``grpc-status-details-bin`` trailer by grpcio-status, so clients read
``ErrorInfo{domain: "plantd.io", reason}`` with ``rpc_status.from_call``.
"""

from __future__ import annotations

import contextlib
from typing import Final

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from plantd.api.errors import GatewayCode, Origin, status_for
from plantd.gateway.state_map import RpcFailure
from plantd.mdp.errors import BrokerError, ClientClosed, ErrorCode, RequestTimeout

# Taken off the client's deadline, so the gateway's answer reaches it before it gives up.
DEADLINE_MARGIN_S: Final = 0.005


RETRY_AFTER_KEY: Final = "retry_after_s"  # failure metadata -> RetryInfo (and HTTP Retry-After)


def retry_seconds(seconds: float) -> int:
    """A wait as the whole seconds a refusal names: rounded up, at least 1 (a fraction of a
    millisecond over a whole second is clock noise, not one more second)."""
    return max(1, int(seconds + 0.999))


def grpc_status(failure: RpcFailure) -> tuple[grpc.StatusCode, grpc.Status]:
    """The gRPC code and the status (code, message, details trailer) for ``failure``; a
    failure with ``retry_after_s`` in its metadata also carries ``google.rpc.RetryInfo``."""
    mapping, status = status_for(failure.origin, failure.code, failure.message, failure.metadata)
    retry = failure.metadata.get(RETRY_AFTER_KEY)
    if retry is not None:
        with contextlib.suppress(ValueError):
            seconds = max(0.0, float(retry))
            info = error_details_pb2.RetryInfo()
            info.retry_delay.FromNanoseconds(int(seconds * 1e9))
            status.details.add().Pack(info)
    return mapping.grpc_code, rpc_status.to_status(status)


def from_bus(exc: Exception, service: str) -> RpcFailure:
    """What a bus exception means for the caller (RequestTimeout, BrokerError, ClientClosed)."""
    if isinstance(exc, RequestTimeout):
        return RpcFailure(
            Origin.GATEWAY,
            GatewayCode.REQUEST_TIMEOUT,
            f"{service} did not answer within the call's deadline",
        )
    if isinstance(exc, BrokerError):
        return RpcFailure(Origin.BUS, str(exc.code), exc.message or str(exc))
    if isinstance(exc, ClientClosed):
        return RpcFailure(Origin.BUS, ErrorCode.SHUTTING_DOWN, "the gateway is stopping")
    raise TypeError(f"not a bus exception: {type(exc).__name__}")


def bus_timeout(remaining: float | None, default_s: float, cap_s: float) -> float:
    """How long to wait for the bus: the client's remaining deadline less a margin, at most
    ``cap_s``; ``default_s`` when the client set none. A result <= 0 means "already late":
    answer DEADLINE_EXCEEDED and send nothing."""
    if remaining is None:
        return default_s
    return min(remaining - DEADLINE_MARGIN_S, cap_s)


def deadline_passed() -> RpcFailure:
    return RpcFailure(
        Origin.GATEWAY,
        GatewayCode.REQUEST_TIMEOUT,
        "the call's deadline had passed before it could be sent to the bus",
    )
