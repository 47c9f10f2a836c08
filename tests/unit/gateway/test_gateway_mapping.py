"""The gateway's pure parts: messages <-> state operations, envelopes -> failures -> gRPC
status with ErrorInfo, bus exceptions, deadlines, metadata, the health probe's reading."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2, status_pb2

from plantd.api.errors import ERROR_MAP, GatewayCode, Origin
from plantd.common.auth import Reason
from plantd.gateway import state_map as sm
from plantd.gateway.auth import Authenticator, read_metadata
from plantd.gateway.errors import DEADLINE_MARGIN_S, bus_timeout, from_bus, grpc_status
from plantd.gateway.health import has_worker
from plantd.gateway.settings import GatewaySettings
from plantd.mdp.errors import BrokerError, ClientClosed, ErrorCode, RequestTimeout
from plantd.state.errors import Code as StateCode
from plantd.v1 import state_pb2 as pb
from plantd.v1 import state_pb2_grpc

pytestmark = pytest.mark.unit


def ok(data: dict[str, Any]) -> list[bytes]:
    return [json.dumps({"success": True, "data": data}).encode()]


def fail(code: str, error: str = "no", **extra: Any) -> list[bytes]:
    return [json.dumps({"success": False, "error": error, "code": code, **extra}).encode()]


def info_of(status: grpc.Status) -> error_details_pb2.ErrorInfo:
    trailer = dict(status.trailing_metadata)
    detail = status_pb2.Status.FromString(trailer["grpc-status-details-bin"])
    info = error_details_pb2.ErrorInfo()
    assert detail.details[0].Unpack(info)
    return info


def test_every_rpc_of_the_proto_but_the_stream_has_a_mapping() -> None:
    service = pb.DESCRIPTOR.services_by_name["StateService"]
    unary = {m.name for m in service.methods if not m.server_streaming}
    assert set(sm.METHODS) == unary
    for name in unary:  # and the servicer implements each one
        assert name in vars(state_pb2_grpc.StateServiceServicer)


def test_set_entry_carries_cas_ttl_and_create_only_when_set() -> None:
    op, body = sm.set_entry_req(pb.SetEntryRequest(scope="s", key="k", value="v"))
    assert (op, body) == ("state-set", {"service": "s", "key": "k", "value": "v"})
    _, body = sm.set_entry_req(
        pb.SetEntryRequest(
            scope="s",
            key="k",
            value="v",
            expected_version=0,
            ttl=Duration(seconds=1, nanos=500_000),
            create_scope=False,
        )
    )
    assert body["if_version"] == 0  # 0 is "only if absent", not "unset"
    assert body["ttl_ms"] == 1001  # rounded up: a positive TTL never becomes "none"
    assert body["create"] is False
    _, body = sm.set_entry_req(pb.SetEntryRequest(scope="s", key="k", ttl=Duration()))
    assert "ttl_ms" not in body  # zero: no TTL


def test_replies_convert_to_messages() -> None:
    got = sm.get_entry_resp(
        pb.GetEntryRequest(scope="s", key="k"),
        {"key": "k", "value": "1", "found": True, "version": 7, "expires_at": 1_700_000_000_123},
    )
    assert (got.entry.scope, got.entry.value, got.entry.version) == ("s", "1", 7)
    assert got.entry.expire_time.ToMilliseconds() == 1_700_000_000_123
    with pytest.raises(sm.RpcFailure) as missing:
        sm.get_entry_resp(pb.GetEntryRequest(scope="s", key="k"), {"found": False, "version": 0})
    assert (missing.value.origin, missing.value.code) == (Origin.GATEWAY, "KEY_NOT_FOUND")
    batch = sm.batch_get_resp(
        pb.BatchGetEntriesRequest(scope="s", keys=["a", "b"]),
        {"items": [{"key": "a", "value": "x", "found": True, "version": 2}, {"key": "b"}]},
    )
    assert [(r.key, r.found, r.HasField("entry")) for r in batch.results] == [
        ("a", True, True),
        ("b", False, False),
    ]
    changes = sm.changes_resp(
        pb.ListChangesRequest(scope="s"),
        {
            "revision": 9,
            "compacted": False,
            "oldest": 1,
            "more": True,
            "changes": [{"op": "expire", "key": "k", "value": "", "version": 9, "revision": 9}],
        },
    )
    assert changes.more and changes.changes[0].type == pb.CHANGE_TYPE_EXPIRE


def test_list_scopes_pages_at_the_gateway() -> None:
    data = {"scopes": ["c", "a", "b", "d"]}
    first = sm.list_scopes_resp(pb.ListScopesRequest(page_size=2), data)
    assert list(first.scopes) == ["a", "b"] and first.next_page_token == "b"
    rest = sm.list_scopes_resp(pb.ListScopesRequest(page_size=2, page_token="b"), data)
    assert list(rest.scopes) == ["c", "d"] and rest.next_page_token == ""
    with pytest.raises(sm.RpcFailure):
        sm.list_scopes_req(pb.ListScopesRequest(page_size=-1))


def test_envelope_errors_keep_the_code_and_map_without_text() -> None:
    for code in StateCode.ALL:
        with pytest.raises(sm.RpcFailure) as err:
            sm.envelope_data(fail(code, "some text that must not matter"))
        grpc_code, status = grpc_status(err.value)
        assert grpc_code == ERROR_MAP[(Origin.STATE, code)].grpc_code
        assert status.code == grpc_code
        assert info_of(status).reason == code and info_of(status).domain == "plantd.io"
    with pytest.raises(sm.RpcFailure) as conflict:
        sm.envelope_data(fail("CONFLICT"))
    assert grpc_status(conflict.value)[0] == grpc.StatusCode.ABORTED
    with pytest.raises(sm.RpcFailure) as legacy:  # no code: UNKNOWN, never a text match
        sm.envelope_data([b'{"error": "Operation failed: key not found"}'])
    assert grpc_status(legacy.value)[0] == grpc.StatusCode.UNKNOWN
    for bad in ([], [b"not json"], [b"[]"], [b"{}", b"{}"]):
        with pytest.raises(sm.RpcFailure) as err:
            sm.envelope_data(bad)
        assert err.value.code == GatewayCode.BAD_REPLY


def test_bus_exceptions_map_to_their_codes() -> None:
    timeout = from_bus(RequestTimeout("org.plantd.State", 1.0, 1), "org.plantd.State")
    assert grpc_status(timeout)[0] == grpc.StatusCode.DEADLINE_EXCEEDED
    for code in ErrorCode.ALL:
        failure = from_bus(BrokerError(code, "m"), "org.plantd.State")
        assert (failure.origin, failure.code) == (Origin.BUS, code)
        assert grpc_status(failure)[0] == ERROR_MAP[(Origin.BUS, code)].grpc_code
    closed = from_bus(ClientClosed("closed"), "org.plantd.State")
    assert grpc_status(closed)[0] == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(TypeError):
        from_bus(ValueError("x"), "org.plantd.State")


def test_the_bus_wait_follows_the_deadline() -> None:
    assert bus_timeout(None, 5.0, 30.0) == 5.0
    assert bus_timeout(2.0, 5.0, 30.0) == pytest.approx(2.0 - DEADLINE_MARGIN_S)
    assert bus_timeout(100.0, 5.0, 30.0) == 30.0
    assert bus_timeout(0.001, 5.0, 30.0) <= 0  # already late: nothing is sent


def test_metadata_and_offline_check() -> None:
    token, rid = read_metadata([("authorization", "Bearer abc"), ("x-request-id", "r" * 500)])
    assert token == "abc" and rid == "r" * 128
    assert read_metadata([]) == (None, None)
    with pytest.raises(sm.RpcFailure) as basic:
        read_metadata([("authorization", "Basic xyz")])
    assert basic.value.code == Reason.MALFORMED.value
    Authenticator(None).check(None)  # auth off: nothing checked here
    from plantd.common.auth import Verifier

    strict = Authenticator(Verifier(issuer="i", audience="a"))
    for token in (None, "", "a.b.c"):
        with pytest.raises(sm.RpcFailure) as err:
            strict.check(token)
        assert err.value.origin is Origin.TOKEN
        assert grpc_status(err.value)[0] == grpc.StatusCode.UNAUTHENTICATED
        assert "plant auth" in err.value.message


def test_health_reads_mmi_service() -> None:
    assert has_worker([b"org.plantd.State", b"200"])
    assert not has_worker([b"org.plantd.State", b"404"])
    assert not has_worker([])


def test_settings_defaults_are_secure_and_local() -> None:
    s = GatewaySettings.load(environ={})
    assert s.auth == "identity" and s.curve
    assert s.grpc_address() == "127.0.0.1:50051"
    assert s.http_port == 8085
    assert GatewaySettings.load(environ={}, flags={"grpc_host": "::"}).grpc_address() == (
        "[::]:50051"
    )
    env = {"PLANTD_GATEWAY_MAX_CONCURRENT_RPCS": "7"}
    assert GatewaySettings.load(environ=env).max_concurrent_rpcs == 7


def test_status_round_trips_through_grpcio_status() -> None:
    failure = sm.RpcFailure(Origin.STATE, "SCOPE_NOT_FOUND", "no scope", {"scope": "s"})
    code, status = grpc_status(failure)
    assert code == grpc.StatusCode.NOT_FOUND and status.details == "no scope"
    info = info_of(status)
    assert info.metadata["scope"] == "s"
