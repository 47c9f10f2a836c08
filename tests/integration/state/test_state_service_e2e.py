"""org.plantd.State through a real broker (CURVE on), on both stores.

Covers: the original operations and reply shapes, the original Go CLI's exact frames in the
legacy dialect, the extensions, bad input from a property-based spray (the worker keeps
serving), /readyz and /metrics.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from statekit import Broker, StateProc, client_curve, http_get, wait_for

from plantd.common import contract
from plantd.mdp import Client
from plantd.state.client import StateClient, StateReplyError

pytestmark = pytest.mark.integration

STATE = contract.SERVICE_STATE


def call(client: Client, op: str, body: Any = None) -> dict[str, Any]:
    frames = [op] if body is None else [op, json.dumps(body)]
    reply = client.request(STATE, *frames)
    assert len(reply) == 1, reply
    doc: dict[str, Any] = json.loads(reply[0])
    return doc


def scope_name() -> str:
    return f"org.plantd.Test.{uuid.uuid4().hex[:8]}"


def test_original_operations_and_reply_shapes(state_proc: StateProc, client: Client) -> None:
    s = scope_name()
    assert call(client, "create-scope", {"service": s}) == {
        "success": True,
        "data": {"scope": s, "status": "created", "revision": 1},
    }
    dup = call(client, "create-scope", {"service": s})
    assert dup["success"] is False and dup["code"] == "SCOPE_EXISTS"
    assert dup["error"] == f"Scope '{s}' already exists"
    set_ = call(client, "state-set", {"service": s, "key": "k", "value": "v"})
    assert set_["data"] == {
        "key": "k",
        "scope": s,
        "status": "set",
        "value": "v",
        "version": 2,
        "revision": 2,
    }
    got = call(client, "state-get", {"service": s, "key": "k"})
    assert got["data"] == {"key": "k", "scope": s, "value": "v", "found": True, "version": 2}
    missing = call(client, "state-get", {"service": s, "key": "nope"})
    assert missing["data"]["value"] == "" and missing["data"]["found"] is False
    keys = call(client, "list-keys", {"service": s})
    assert keys["data"] == {"count": 1, "keys": ["k"], "scope": s, "next_cursor": ""}
    assert s in call(client, "list-scopes", {})["data"]["scopes"]
    deleted = call(client, "delete", {"service": s, "key": "k"})
    assert deleted["data"]["status"] == "deleted" and deleted["data"]["found"] is True
    health = call(client, "health", {"service": s})
    assert health["data"] == {
        "service": STATE,
        "status": "healthy",
        "store_available": True,
        "store": state_proc.proc.name.removeprefix("state-"),
        "scope": s,
        "scope_exists": True,
    }
    assert call(client, "delete-scope", {"service": s})["data"]["status"] == "deleted"
    gone = call(client, "state-get", {"service": s, "key": "k"})
    assert gone["code"] == "SCOPE_NOT_FOUND" and s in gone["error"]


def test_set_on_missing_scope_creates_it_instead_of_deadlocking(
    state_proc: StateProc, client: Client
) -> None:
    """The original deadlocked its worker forever here (reference §7.2 #2)."""
    s = scope_name()
    r = call(client, "state-set", {"service": s, "key": "a", "value": "1"})
    assert r["success"] and r["data"]["created_scope"] is True
    refused = call(
        client, "state-set", {"service": s + "x", "key": "a", "value": "1", "create": False}
    )
    assert refused["code"] == "SCOPE_NOT_FOUND"
    assert call(client, "state-get", {"service": s, "key": "a"})["data"]["value"] == "1"


def _legacy_request(sock: zmq.Socket[bytes], op: str, body: bytes) -> dict[str, Any]:
    # Reference §2.8 and §3.2 C1: the Go CLI sends ["", "MDPC02", "REQUEST", service, op, json].
    sock.send_multipart([b"", b"MDPC02", b"REQUEST", STATE.encode(), op.encode(), body])
    assert sock.poll(5000), f"no reply to legacy {op}"
    frames = sock.recv_multipart()
    # C3: the broker answers ["MDPC02", "FINAL", service, body...] (no empty frame).
    assert frames[:3] == [b"MDPC02", b"FINAL", STATE.encode()], frames
    assert len(frames) == 4, frames
    doc: dict[str, Any] = json.loads(frames[3])
    return doc


def test_original_go_cli_frames_in_the_legacy_dialect(
    state_proc: StateProc, broker: Broker
) -> None:
    """The exact bodies `plant state ...` of the Go original sends (sorted keys, with token)."""
    s = scope_name()
    tok = "eyJhbGciOiJIUzI1NiJ9.e30.sig"
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    client_curve(broker.keys_dir).apply(sock)
    sock.connect(broker.endpoint)
    try:

        def body(**kw: str) -> bytes:
            return json.dumps(
                dict(sorted({**kw, "token": tok}.items())), separators=(",", ":")
            ).encode()

        r = _legacy_request(sock, "create-scope", body(service=s))
        assert r["success"] and r["data"]["status"] == "created"
        r = _legacy_request(sock, "state-set", body(key="k", service=s, value="v 1"))
        assert r["success"] and r["data"]["value"] == "v 1" and r["data"]["status"] == "set"
        r = _legacy_request(sock, "state-get", body(key="k", service=s))
        assert r["data"]["value"] == "v 1" and r["data"]["key"] == "k"
        r = _legacy_request(sock, "list-keys", body(service=s))
        assert r["data"]["keys"] == ["k"] and r["data"]["count"] == 1
        r = _legacy_request(sock, "list-scopes", body())
        assert s in r["data"]["scopes"]
        r = _legacy_request(sock, "delete", body(key="k", service=s))
        assert r["data"]["status"] == "deleted"
        r = _legacy_request(sock, "delete-scope", body(service=s))
        assert r["data"]["status"] == "deleted"
        # Errors are JSON with a code, never the original's unescaped "Operation failed: ..."
        r = _legacy_request(sock, "state-get", body(key='quote"d', service=s))
        assert r == {
            "success": False,
            "error": f"Scope '{s}' does not exist; create it with create-scope "
            "(or state-set, which creates it)",
            "code": "SCOPE_NOT_FOUND",
            "field": "service",
        }
    finally:
        sock.close()


def test_extensions_through_the_broker(state_proc: StateProc, client: Client) -> None:
    sc = StateClient(client)
    s = scope_name()
    w = sc.batch_set(s, [{"key": f"k{i}", "value": str(i)} for i in range(10)])
    assert w["count"] == 10 and w["revision"] == 11
    got = sc.batch_get(s, ["k3", "zz", "k9"])
    assert [(i["key"], i["value"], i["found"]) for i in got["items"]] == [
        ("k3", "3", True),
        ("zz", "", False),
        ("k9", "9", True),
    ]
    v = sc.get(s, "k3")["version"]
    with pytest.raises(StateReplyError) as lost:
        sc.set(s, "k3", "x", if_version=v - 1)
    assert lost.value.code == "CONFLICT" and lost.value.details["conflicts"][0]["actual"] == v
    assert sc.set(s, "k3", "x", if_version=v)["version"] > v
    log = sc.changes_since(s, 10)
    assert [c["key"] for c in log["changes"]] == ["k9", "k3"]
    snap = sc.snapshot(s)
    assert snap["count"] == 10 and snap["revision"] == log["revision"]
    short = sc.set(s, "ttl", "x", ttl_ms=100)
    assert short["expires_at"] > 0
    # The service's sweeper deletes it (and logs an expire change) without any reader.
    wait_for(lambda: bool(sc.changes_since(s, short["revision"])["changes"]), 5, "the TTL sweeper")
    after = sc.changes_since(s, short["revision"])["changes"]
    assert [(c["op"], c["key"]) for c in after] == [("expire", "ttl")]


def test_limits_give_clear_errors(state_proc: StateProc, client: Client) -> None:
    s = scope_name()
    big = call(client, "state-set", {"service": s, "key": "k", "value": "x" * (1024 * 1024 + 1)})
    assert big["code"] == "VALUE_TOO_LARGE" and "1048577 bytes" in big["error"]
    many = call(client, "batch-get", {"service": s, "keys": [str(i) for i in range(1001)]})
    assert many["code"] == "VALUE_TOO_LARGE" and "1001 keys" in many["error"]
    assert call(client, "state-get", {"service": s, "key": "k"})["code"] == "SCOPE_NOT_FOUND"


junk_bodies = st.one_of(
    st.binary(max_size=40),
    st.dictionaries(
        st.sampled_from(["service", "key", "value", "keys", "items", "ttl_ms", "if_version"]),
        st.one_of(
            st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=2)
        ),
        max_size=4,
    ).map(lambda d: json.dumps(d).encode()),
)
junk_ops = st.one_of(
    st.sampled_from(["state-get", "state-set", "batch-set", "changes-since", "delete"]),
    st.text(max_size=12).map(lambda t: t or "x"),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(op=junk_ops, body=junk_bodies)
def test_bad_requests_get_json_errors_and_the_worker_keeps_serving(
    state_proc: StateProc, client: Client, op: str, body: bytes
) -> None:
    reply = client.request(STATE, op.encode(), body)
    doc = json.loads(reply[0])
    if not doc["success"]:
        assert doc["code"] in {
            "INVALID_REQUEST",
            "UNKNOWN_OPERATION",
            "SCOPE_NOT_FOUND",
            "CONFLICT",
            "VALUE_TOO_LARGE",
        }, doc
        assert doc["error"]
    ok = call(client, "health", {})
    assert ok["data"]["status"] == "healthy"


def test_readyz_and_metrics(state_proc: StateProc, client: Client) -> None:
    status, body = http_get(state_proc.url + "/readyz")
    assert status == 200 and json.loads(body)["checks"] == {"store": True, "broker": True}
    before = state_proc.metric(
        "plantd_state_operations_total", 'operation="list-scopes",result="ok"'
    )
    call(client, "list-scopes", {})
    after = state_proc.metric(
        "plantd_state_operations_total", 'operation="list-scopes",result="ok"'
    )
    assert after == before + 1
    assert state_proc.metric("plantd_state_store_up") == 1.0
    assert state_proc.metric("plantd_state_request_seconds_count") > 0


def test_sigterm_stops_cleanly(broker: Broker, tmp_path: Path) -> None:
    proc = StateProc("state-term", tmp_path, broker).start()
    with Client(broker.endpoint, timeout=5, retries=0, curve=client_curve(broker.keys_dir)) as c:
        assert call(c, "state-set", {"service": "t", "key": "k", "value": "v"})["success"]
    assert proc.proc.stop() == 0, proc.proc.log()
    assert "state service stopped" in proc.proc.log()
