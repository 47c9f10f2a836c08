"""Request parsing, validation and reply envelopes of org.plantd.State (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plantd.state import operations
from plantd.state.errors import Code, StateError
from plantd.state.limits import Limits
from plantd.state.model import (
    ChangesSince,
    CreateScope,
    Delete,
    DeleteItem,
    DeleteScope,
    Entry,
    Get,
    GetResult,
    ListKeys,
    ListScopes,
    ScopeExists,
    Set,
    SetItem,
    SetResult,
    Snapshot,
)

pytestmark = pytest.mark.unit

LIMITS = Limits(max_key_bytes=16, max_value_bytes=32, max_batch_keys=3, max_request_bytes=4096)
UP = operations.HealthInfo("sqlite", True)
DOWN = operations.HealthInfo("redis", False)


def req(op: str, body: Any = None, raw: bytes | None = None) -> operations.Request:
    frames = [op.encode()]
    if raw is not None:
        frames.append(raw)
    elif body is not None:
        frames.append(json.dumps(body).encode())
    return operations.decode(frames, LIMITS, UP)


def bad(op: str, body: Any = None, raw: bytes | None = None) -> StateError:
    with pytest.raises(StateError) as info:
        req(op, body, raw)
    return info.value


def test_original_operations_parse_to_store_ops() -> None:
    assert req("create-scope", {"service": "S"}).op == CreateScope("S")
    assert req("delete-scope", {"service": "S"}).op == DeleteScope("S")
    assert req("state-set", {"service": "S", "key": "k", "value": "v"}).op == Set(
        "S", (SetItem("k", "v"),), create=True
    )
    assert req("state-get", {"service": "S", "key": "k"}).op == Get("S", ("k",))
    assert req("delete", {"service": "S", "key": "k"}).op == Delete("S", (DeleteItem("k"),))
    assert req("list-keys", {"service": "S"}).op == ListKeys("S", limit=LIMITS.max_list_keys)
    assert req("list-scopes", {}).op == ListScopes()
    assert req("health", {}).op == ScopeExists("")


def test_extensions_parse() -> None:
    s = req(
        "state-set",
        {"service": "S", "key": "k", "value": "", "ttl_ms": 5, "if_version": 0, "create": False},
    )
    assert s.op == Set("S", (SetItem("k", "", ttl_ms=5, if_version=0),), create=False)
    assert req("batch-get", {"service": "S", "keys": ["a", "b"]}).op == Get("S", ("a", "b"))
    items = req(
        "batch-set",
        {"service": "S", "items": [{"key": "a", "value": "1"}, {"key": "b", "value": "2"}]},
    ).op
    assert items == Set("S", (SetItem("a", "1"), SetItem("b", "2")))
    mapping = req("batch-set", {"service": "S", "values": {"a": "1"}, "ttl_ms": 9}).op
    assert mapping == Set("S", (SetItem("a", "1", ttl_ms=9),))
    assert req("changes-since", {"service": "S", "revision": 7}).op == ChangesSince(
        "S", 7, LIMITS.max_changes
    )
    assert req("snapshot", {"service": "S", "limit": 2}).op == Snapshot("S", 2)
    assert req("list-keys", {"service": "S", "prefix": "a/", "limit": 5, "cursor": "a/1"}).op == (
        ListKeys("S", "a/", 5, "a/1")
    )


def test_legacy_names_and_bodyless_requests() -> None:
    assert req("get", {"service": "S", "key": "k"}).name == "state-get"
    assert req("set", {"service": "S", "key": "k", "value": "v"}).name == "state-set"
    # The original needed a '{}' frame even here; a missing body is accepted now.
    assert req("list-scopes").op == ListScopes()
    assert req("health").name == "health"
    e = bad("state-get")
    assert e.code == Code.INVALID_REQUEST and "JSON object body" in e.message


def test_permissions_fix_the_originals_mapping() -> None:
    # The original demanded state:admin:full for state-get/state-set (reference §7.2 #3).
    assert req("state-get", {"service": "S", "key": "k"}).permission == "state:data:read"
    assert req("state-set", {"service": "S", "key": "k", "value": "v"}).permission == (
        "state:data:write"
    )
    assert req("delete", {"service": "S", "key": "k"}).permission == "state:data:delete"
    assert req("list-scopes", {}).permission == "state:scope:list"
    ctx = req("state-get", {"service": "S", "key": "k", "token": "abc"}).context
    assert (ctx.operation, ctx.scope, ctx.token) == ("state-get", "S", "abc")
    assert req("list-scopes", {}).context.scope is None


@pytest.mark.parametrize(
    ("op", "body", "code", "field", "words"),
    [
        ("state-get", {"key": "k"}, Code.INVALID_REQUEST, "service", "required"),
        ("state-get", {"service": 5, "key": "k"}, Code.INVALID_REQUEST, "service", "a number"),
        ("state-get", {"service": "", "key": "k"}, Code.INVALID_REQUEST, "service", "empty"),
        ("state-get", {"service": "a\nb", "key": "k"}, Code.INVALID_REQUEST, "service", "control"),
        ("state-get", {"service": "S"}, Code.INVALID_REQUEST, "key", "required"),
        ("state-get", {"service": "S", "key": ["k"]}, Code.INVALID_REQUEST, "key", "an array"),
        ("state-set", {"service": "S", "key": "k"}, Code.INVALID_REQUEST, "value", "required"),
        (
            "state-set",
            {"service": "S", "key": "k", "value": {"a": 1}},
            Code.INVALID_REQUEST,
            "value",
            "encode other JSON",
        ),
        (
            "state-set",
            {"service": "S", "key": "k", "value": "v", "ttl_ms": 0},
            Code.INVALID_REQUEST,
            "ttl_ms",
            "between 1",
        ),
        (
            "state-set",
            {"service": "S", "key": "k", "value": "v", "ttl_ms": True},
            Code.INVALID_REQUEST,
            "ttl_ms",
            "integer",
        ),
        (
            "state-set",
            {"service": "S", "key": "k", "value": "v", "if_version": -1},
            Code.INVALID_REQUEST,
            "if_version",
            "between 0",
        ),
        (
            "state-set",
            {"service": "S", "key": "k", "value": "v", "create": "yes"},
            Code.INVALID_REQUEST,
            "create",
            "true or false",
        ),
        (
            "state-set",
            {"service": "S", "key": "k" * 17, "value": "v"},
            Code.VALUE_TOO_LARGE,
            "key",
            "17 bytes",
        ),
        (
            "state-set",
            {"service": "S", "key": "k", "value": "é" * 17},
            Code.VALUE_TOO_LARGE,
            "value",
            "34 bytes",
        ),
        ("batch-get", {"service": "S", "keys": []}, Code.INVALID_REQUEST, "keys", "non-empty"),
        (
            "batch-get",
            {"service": "S", "keys": ["a", 1]},
            Code.INVALID_REQUEST,
            "keys[1]",
            "string",
        ),
        (
            "batch-get",
            {"service": "S", "keys": ["a", "b", "c", "d"]},
            Code.VALUE_TOO_LARGE,
            "keys",
            "limit is 3",
        ),
        (
            "batch-set",
            {"service": "S", "items": [{"key": "a", "value": 1}]},
            Code.INVALID_REQUEST,
            "items[0].value",
            "items[0]",
        ),
        ("batch-set", {"service": "S", "items": ["x"]}, Code.INVALID_REQUEST, "items[0]", "object"),
        (
            "batch-set",
            {"service": "S", "items": [], "values": {}},
            Code.INVALID_REQUEST,
            "items",
            "alternatives",
        ),
        ("changes-since", {"service": "S"}, Code.INVALID_REQUEST, "revision", "required"),
        (
            "changes-since",
            {"service": "S", "revision": 1.5},
            Code.INVALID_REQUEST,
            "revision",
            "integer",
        ),
        ("list-keys", {"service": "S", "limit": 0}, Code.INVALID_REQUEST, "limit", "between"),
    ],
)
def test_bad_fields_get_clear_errors(
    op: str, body: dict[str, Any], code: str, field: str, words: str
) -> None:
    e = bad(op, body)
    assert (e.code, e.field) == (code, field), e
    assert words in e.message, e.message


def test_bad_bodies_and_names() -> None:
    assert bad("state-get", raw=b"{nope").code == Code.INVALID_REQUEST
    assert "not valid JSON" in bad("state-get", raw=b"{nope").message
    assert "not UTF-8" in bad("state-get", raw=b"\xff\xfe").message
    assert "JSON object, not an array" in bad("state-get", raw=b"[1]").message
    assert bad("state-get", raw=b"x" * 5000).code == Code.VALUE_TOO_LARGE
    deep = b"[" * 2000 + b"]" * 2000  # under the size limit, over the recursion limit
    assert bad("state-get", raw=deep).code == Code.INVALID_REQUEST
    e = bad("frobnicate", {})
    assert e.code == Code.UNKNOWN_OPERATION and "state-get" in e.message
    assert bad("\xff".encode("latin-1").decode("latin-1"), {}).code == Code.UNKNOWN_OPERATION
    with pytest.raises(StateError) as info:
        operations.decode([], LIMITS, UP)
    assert info.value.code == Code.INVALID_REQUEST
    lone = b'{"service": "S", "key": "\\ud800"}'
    assert "surrogate" in bad("state-get", raw=lone).message


def test_reply_envelopes() -> None:
    r = req("state-get", {"service": "S", "key": "k"})
    ok = json.loads(operations.reply(r, GetResult((Entry("v", 3),)), LIMITS))
    assert ok == {
        "success": True,
        "data": {"key": "k", "scope": "S", "value": "v", "found": True, "version": 3},
    }
    missing = json.loads(operations.reply(r, GetResult((None,)), LIMITS))
    # The original's value "" is kept; found/version let newer clients tell the difference.
    assert missing["data"]["value"] == "" and missing["data"]["found"] is False
    err = json.loads(operations.failure(StateError(Code.CONFLICT, 'say "hi"\n', field="x")))
    assert err == {"success": False, "error": 'say "hi"\n', "code": "CONFLICT", "field": "x"}
    s = req("state-set", {"service": "S", "key": "k", "value": "v", "ttl_ms": 100})
    data = json.loads(operations.reply(s, SetResult((5,), 5, True, 1000), LIMITS))["data"]
    assert data == {
        "key": "k",
        "scope": "S",
        "status": "set",
        "value": "v",
        "version": 5,
        "revision": 5,
        "created_scope": True,
        "expires_at": 1100,
    }


def test_oversized_reply_becomes_an_error() -> None:
    tiny = Limits(max_reply_bytes=100)
    r = operations.decode([b"state-get", b'{"service":"S","key":"k"}'], tiny, UP)
    out = json.loads(operations.reply(r, GetResult((Entry("x" * 200, 1),)), tiny))
    assert out["code"] == Code.REPLY_TOO_LARGE and "max_reply_bytes" in out["error"]


def test_health_without_store() -> None:
    r = operations.decode([b"health", b'{"service":"S"}'], LIMITS, DOWN)
    assert r.op is None
    data = json.loads(operations.reply(r, None, LIMITS))["data"]
    assert data == {
        "service": "org.plantd.State",
        "status": "unhealthy",
        "store_available": False,
        "store": "redis",
        "scope": "S",
    }


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
fields = st.sampled_from(
    ["service", "key", "value", "keys", "items", "values", "ttl_ms", "if_version", "create",
     "revision", "limit", "prefix", "cursor", "token"]
)  # fmt: skip
bodies = st.one_of(
    st.dictionaries(fields, json_values, max_size=6).map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
)
names = st.one_of(st.sampled_from([*operations.NAMES, "get", "set"]), st.binary(max_size=12))


@settings(max_examples=200, deadline=None)
@given(name=names, body=bodies, extra=st.lists(st.binary(max_size=8), max_size=2))
def test_any_input_gives_a_valid_json_reply(name: Any, body: bytes, extra: list[bytes]) -> None:
    """Nothing a client sends makes decode raise anything but StateError."""
    frames = [name if isinstance(name, bytes) else name.encode(), body, *extra]
    try:
        r = operations.decode(frames, LIMITS, UP)
    except StateError as err:
        doc = json.loads(operations.failure(err))
        assert doc["success"] is False and doc["code"] in Code.ALL and doc["error"]
        return
    assert r.name in operations.NAMES
