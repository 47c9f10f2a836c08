"""The error mapping: complete for every code, the same as the docs table, and well-formed."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2

from plantd.api.errors import (
    ERROR_DOMAIN,
    ERROR_MAP,
    FALLBACK,
    GatewayCode,
    Origin,
    codes_of,
    http_status,
    lookup,
    status_for,
)
from plantd.common.auth.errors import Reason as TokenReason
from plantd.identity.errors import Code as IdentityCode
from plantd.mdp.errors import ErrorCode as BusCode
from plantd.state.errors import Code as StateCode

pytestmark = pytest.mark.unit

PROTOCOL_MD = Path(__file__).resolve().parents[3] / "docs" / "protocol.md"

# Where each origin's codes are defined: a code added there without a row here fails below.
SOURCES: dict[Origin, frozenset[str]] = {
    Origin.BUS: frozenset(BusCode.ALL),
    Origin.STATE: frozenset(StateCode.ALL),
    Origin.IDENTITY: frozenset(c.value for c in IdentityCode),
    Origin.TOKEN: frozenset(r.value for r in TokenReason),
    Origin.GATEWAY: frozenset(GatewayCode.ALL),
}


@pytest.mark.parametrize("origin", list(Origin))
def test_every_code_of_every_origin_has_exactly_one_row(origin: Origin) -> None:
    have = codes_of(origin)
    missing = SOURCES[origin] - have
    extra = have - SOURCES[origin]
    assert not missing, f"{origin} codes without a row in plantd.api.errors: {sorted(missing)}"
    assert not extra, f"rows for {origin} codes that do not exist (renamed?): {sorted(extra)}"


def test_the_table_covers_only_known_origins() -> None:
    assert {origin for origin, _ in ERROR_MAP} == set(Origin)


def _docs_rows() -> dict[tuple[str, str], tuple[str, int]]:
    text = PROTOCOL_MD.read_text(encoding="utf-8")
    start = text.index("## 11. gRPC and HTTP error mapping")
    rows: dict[tuple[str, str], tuple[str, int]] = {}
    row = re.compile(r"^\| (\w+) \| `([A-Z_]+)` \| `([A-Z_]+)` \| (\d{3}) \|")
    for line in text[start:].splitlines():
        if line.startswith("## ") and rows:
            break
        m = row.match(line)
        if m:
            key = (m.group(1), m.group(2))
            assert key not in rows, f"docs/protocol.md §11 lists {key} twice"
            rows[key] = (m.group(3), int(m.group(4)))
    return rows


def test_docs_table_is_the_same_as_the_python_table() -> None:
    docs = _docs_rows()
    code = {(str(o), c): (m.grpc_code.name, m.http_status) for (o, c), m in ERROR_MAP.items()}
    only_docs = {k: v for k, v in docs.items() if code.get(k) != v}
    only_code = {k: v for k, v in code.items() if docs.get(k) != v}
    assert not only_docs and not only_code, (
        "docs/protocol.md §11 and plantd.api.errors.ERROR_MAP differ; "
        f"docs say {only_docs}, the code says {only_code}"
    )


def test_rpc_code_numbers_are_google_rpc_codes() -> None:
    for mapping in [*ERROR_MAP.values(), FALLBACK]:
        assert code_pb2.Code.Name(mapping.rpc_code) == mapping.grpc_code.name
        assert mapping.grpc_code is not grpc.StatusCode.OK
        assert 400 <= mapping.http_status <= 599


def test_cross_service_meanings_stay_apart() -> None:
    # The same code string means different things per origin; the key keeps them apart.
    assert lookup(Origin.STATE, "CONFLICT").grpc_code is grpc.StatusCode.ABORTED
    assert lookup(Origin.IDENTITY, "CONFLICT").grpc_code is grpc.StatusCode.ALREADY_EXISTS


def test_unknown_code_falls_back_to_unknown_500() -> None:
    assert lookup(Origin.STATE, "NOT_A_CODE") is FALLBACK
    assert FALLBACK.grpc_code is grpc.StatusCode.UNKNOWN
    assert FALLBACK.http_status == 500


def test_status_for_carries_error_info_with_the_plantd_domain() -> None:
    mapping, status = status_for(
        Origin.STATE, "SCOPE_NOT_FOUND", "Scope 'a' does not exist", {"scope": "a"}
    )
    assert mapping.http_status == 404
    assert status.code == code_pb2.NOT_FOUND
    assert status.message == "Scope 'a' does not exist"
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert (info.domain, info.reason, dict(info.metadata)) == (
        ERROR_DOMAIN,
        "SCOPE_NOT_FOUND",
        {"scope": "a"},
    )
    assert ERROR_DOMAIN == "plantd.io"


def test_status_for_an_unknown_code_keeps_the_reason() -> None:
    _, status = status_for(Origin.IDENTITY, "SOMETHING_NEW", "?")
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert status.code == code_pb2.UNKNOWN
    assert info.reason == "SOMETHING_NEW"


def test_a_reason_means_one_http_status_per_grpc_code() -> None:
    # The REST edge sees only (gRPC code, reason): two rows that share both must agree on HTTP.
    seen: dict[tuple[grpc.StatusCode, str], int] = {}
    for (_, code), mapping in ERROR_MAP.items():
        key = (mapping.grpc_code, code)
        assert seen.setdefault(key, mapping.http_status) == mapping.http_status, key


def test_http_status_uses_the_row_then_code_proto() -> None:
    s = grpc.StatusCode
    assert http_status(s.RESOURCE_EXHAUSTED, "MESSAGE_TOO_LARGE") == 413  # the row, not 429
    assert http_status(s.RESOURCE_EXHAUSTED, "RATE_LIMITED") == 429
    assert http_status(s.UNIMPLEMENTED, "METHOD_NOT_ALLOWED") == 405
    assert http_status(s.FAILED_PRECONDITION, "PASSWORD_CHANGE_REQUIRED") == 403
    assert http_status(s.FAILED_PRECONDITION, None) == 400  # code.proto
    assert http_status(s.NOT_FOUND, "NO_SUCH_REASON") == 404
    assert http_status(s.DATA_LOSS, None) == 500
