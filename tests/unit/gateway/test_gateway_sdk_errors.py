"""The Python SDK's pure parts: the error code and back-off hint read from a trailer, a
malformed trailer costing nothing, and the token merged into call metadata."""

from __future__ import annotations

import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from plantd.sdk.auth import Token
from plantd.sdk.errors import DETAILS_KEY, reason_of, retry_after_of

pytestmark = pytest.mark.unit


def _trailer(*details: object, code: int = 8) -> list[tuple[str, str | bytes]]:
    status = status_pb2.Status(code=code, message="slow down")
    for detail in details:
        packed = any_pb2.Any()
        packed.Pack(detail)  # type: ignore[arg-type]
        status.details.append(packed)
    return [("x-request-id", "r1"), (DETAILS_KEY, status.SerializeToString())]


def test_reason_and_retry_after_from_the_status_details() -> None:
    trailer = _trailer(
        error_details_pb2.ErrorInfo(domain="plantd.io", reason="RATE_LIMITED"),
        error_details_pb2.RetryInfo(
            retry_delay=duration_pb2.Duration(seconds=2, nanos=500_000_000)
        ),
    )
    assert reason_of(trailer) == "RATE_LIMITED"
    assert retry_after_of(trailer) == pytest.approx(2.5)


def test_another_domain_or_no_details_is_no_reason() -> None:
    assert reason_of(_trailer(error_details_pb2.ErrorInfo(domain="example.com", reason="X"))) == ""
    assert reason_of(_trailer()) == ""
    assert retry_after_of(_trailer()) is None
    assert reason_of(None) == ""
    assert reason_of([("grpc-status-details-bin", "text, not bytes")]) == ""


def test_a_malformed_trailer_is_no_status_not_a_crash() -> None:
    assert reason_of([(DETAILS_KEY, b"\xff\xff\xff not a protobuf")]) == ""


def test_the_token_is_added_once_and_a_callers_own_wins() -> None:
    token = Token()
    assert token.metadata(None) == []
    token.value = "abc"
    assert token.metadata([("x-request-id", "r1")]) == [
        ("x-request-id", "r1"),
        ("authorization", "Bearer abc"),
    ]
    own = [("authorization", "Bearer mine")]
    assert token.metadata(own) == own
