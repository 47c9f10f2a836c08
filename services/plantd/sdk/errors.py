"""What a failed gateway call says: the plantd error code (``google.rpc.ErrorInfo.reason``,
domain ``plantd.io``) and the back-off hint (``google.rpc.RetryInfo``), both read from the
``grpc-status-details-bin`` trailer. Pure over the trailing metadata, so unit-testable."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import grpc
from google.rpc import error_details_pb2, status_pb2

ERROR_DOMAIN: Final = "plantd.io"
DETAILS_KEY: Final = "grpc-status-details-bin"

Metadata = Iterable[tuple[str, str | bytes]]


def status_of(trailing: Metadata | None) -> status_pb2.Status | None:
    """The google.rpc.Status in the trailer, or None (no trailer, or not a Status)."""
    for key, value in trailing or ():
        if key == DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status()
            try:
                status.ParseFromString(value)
            except Exception:  # a malformed trailer is no status, not a crash of the caller
                return None
            return status
    return None


def reason_of(trailing: Metadata | None) -> str:
    """The plantd error code in the trailer (``NOT_FOUND``, ``CONFLICT``, ...), or ""."""
    status = status_of(trailing)
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info) and info.domain == ERROR_DOMAIN:
            return str(info.reason)
    return ""


def retry_after_of(trailing: Metadata | None) -> float | None:
    """Seconds to wait before retrying (RetryInfo of a rate-limited call), or None."""
    status = status_of(trailing)
    for detail in status.details if status is not None else ():
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return float(info.retry_delay.ToTimedelta().total_seconds())
    return None


def _trailing(error: BaseException) -> Metadata | None:
    # grpc.RpcError raised by a sync stub is also a grpc.Call; grpc.aio.AioRpcError has the
    # same method. Anything else carries no trailer.
    if isinstance(error, grpc.aio.AioRpcError):
        return error.trailing_metadata()
    if isinstance(error, grpc.Call):
        return error.trailing_metadata()
    return None


def describe(error: BaseException) -> str:
    """One line for a person: ``UNAUTHENTICATED invalid credentials (LOGIN_FAILED)``."""
    code = reason(error)
    suffix = f" ({code})" if code else ""
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name} {error.details()}{suffix}"
    if isinstance(error, grpc.Call):
        return f"{error.code().name} {error.details()}{suffix}"
    return f"{type(error).__name__} {error}{suffix}"


def reason(error: BaseException) -> str:
    """The plantd error code of a failed call (``error`` as raised by a stub), or ""."""
    return reason_of(_trailing(error))


def is_reason(error: BaseException, code: str) -> bool:
    """Whether ``error`` is a plantd error with this code."""
    return reason(error) == code


def retry_after(error: BaseException) -> float | None:
    """Seconds a rate-limited call asks to wait (RESOURCE_EXHAUSTED), or None."""
    return retry_after_of(_trailing(error))
