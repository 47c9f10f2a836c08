"""Request JSON -> validated store operation -> reply JSON. Pure: no sockets, no store.

A request is the MDP body ``[operation, json]`` (extra frames are ignored, as in the
original). Every outcome is one JSON frame: ``{"success": true, "data": {...}}`` or
``{"success": false, "error": "...", "code": "..."}``; nothing a client sends can make this
module raise anything but :class:`StateError`.
"""

# %-formatting builds the JSON replies: their braces would need doubling in f-strings/format.
# ruff: noqa: UP031

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from plantd.common import contract
from plantd.state import auth
from plantd.state.errors import Code, StateError
from plantd.state.limits import Limits
from plantd.state.model import (
    ChangeLog,
    ChangesSince,
    CreateScope,
    Delete,
    DeleteItem,
    DeleteResult,
    DeleteScope,
    Entry,
    ExistsResult,
    Get,
    GetResult,
    KeyList,
    ListKeys,
    ListScopes,
    Op,
    Result,
    ScopeExists,
    ScopeList,
    ScopeResult,
    Set,
    SetItem,
    SetResult,
    Snapshot,
    SnapshotResult,
)

Json = dict[str, Any]
# Renders (operation, store result) as the reply's ``data``.
Render = Callable[[Any, Any], Json]
# Renders (operation, store result) as the whole success reply (hot operations skip the dict).
FastReply = Callable[[Any, Any], bytes]


@dataclass(slots=True)
class Request:
    """A validated request: what to run, how to answer, and who must be allowed."""

    name: str
    op: Op | None  # None: answered without the store (health while the store is down)
    render: Render
    permission: str
    context: auth.RequestContext
    fast: FastReply | None = None


@dataclass(frozen=True, slots=True)
class HealthInfo:
    store: str
    available: bool


# ---- field validation -------------------------------------------------------------------------


def _bad(field: str, what: str) -> StateError:
    return StateError(Code.INVALID_REQUEST, f"field '{field}' {what}", field=field)


def _utf8_len(value: str, field: str) -> int:
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise _bad(field, "is not valid Unicode (lone surrogate)") from None


def _text(body: Mapping[str, Any], field: str, limit: int, *, what: str = "") -> str:
    """A required non-empty string of at most ``limit`` UTF-8 bytes."""
    value = body.get(field)
    if value.__class__ is str and value and value.isascii() and len(value) <= limit:
        return value  # the common case, checked in one line
    label = f" ({what})" if what else ""
    if value is None:
        raise _bad(field, f"is required{label}: a non-empty string")
    if not isinstance(value, str):
        raise _bad(field, f"must be a string{label}, not {_type(value)}")
    if not value:
        raise _bad(field, f"must not be empty{label}")
    size = _utf8_len(value, field)
    if size > limit:
        raise StateError(
            Code.VALUE_TOO_LARGE,
            f"field '{field}' is {size} bytes; the limit is {limit}",
            field=field,
        )
    return value


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Scopes already found valid, with their size: a worker sees the same few scopes all day.
_GOOD_SCOPES: dict[str, int] = {}


def _scope(body: Mapping[str, Any], limits: Limits) -> str:
    scope = body.get("service")
    if scope.__class__ is str:
        size = _GOOD_SCOPES.get(scope)
        if size is not None and size <= limits.max_scope_bytes:
            return scope
    scope = _text(body, "service", limits.max_scope_bytes, what="the scope")
    if _CONTROL.search(scope):
        raise _bad("service", "must not contain control characters")
    if len(_GOOD_SCOPES) > 4096:
        _GOOD_SCOPES.clear()
    _GOOD_SCOPES[scope] = len(scope.encode("utf-8"))
    return scope


def _value(body: Mapping[str, Any], field: str, limits: Limits) -> str:
    """A required string value (may be empty) of at most ``max_value_bytes``."""
    value = body.get(field)
    if value is None:
        raise _bad(field, "is required: a string (encode other JSON as a string)")
    if not isinstance(value, str):
        raise _bad(field, f"must be a string (encode other JSON as a string), not {_type(value)}")
    # Fast path: a str of n characters is at most 4n UTF-8 bytes.
    if len(value) * 4 > limits.max_value_bytes:
        size = _utf8_len(value, field)
        if size > limits.max_value_bytes:
            raise StateError(
                Code.VALUE_TOO_LARGE,
                f"field '{field}' is {size} bytes; the limit is {limits.max_value_bytes}",
                field=field,
            )
    elif not value.isascii():
        _utf8_len(value, field)
    return value


def _int(
    body: Mapping[str, Any], field: str, *, low: int, high: int, default: int | None = None
) -> int | None:
    value = body.get(field)
    if value is None:
        return default
    # bool is an int in Python; JSON true is not a number.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(field, f"must be an integer, not {_type(value)}")
    if not low <= value <= high:
        raise _bad(field, f"must be between {low} and {high}, not {value}")
    return value


def _bool(body: Mapping[str, Any], field: str, default: bool) -> bool:
    value = body.get(field)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _bad(field, f"must be true or false, not {_type(value)}")
    return value


def _optional_text(body: Mapping[str, Any], field: str, limit: int) -> str:
    value = body.get(field)
    if value is None or value == "":
        return ""
    return _text(body, field, limit)


def _type(value: object) -> str:
    return {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }.get(type(value), type(value).__name__)


def _key_list(body: Mapping[str, Any], limits: Limits) -> tuple[str, ...]:
    keys = body.get("keys")
    if not isinstance(keys, list) or not keys:
        raise _bad("keys", "is required: a non-empty array of key strings")
    if len(keys) > limits.max_batch_keys:
        raise StateError(
            Code.VALUE_TOO_LARGE,
            f"field 'keys' holds {len(keys)} keys; the limit is {limits.max_batch_keys} "
            "per request (split the batch)",
            field="keys",
        )
    limit = limits.max_key_bytes
    for i, k in enumerate(keys):
        if not (k.__class__ is str and k and k.isascii() and len(k) <= limit):
            _text({f"keys[{i}]": k}, f"keys[{i}]", limit)  # the slow path says what is wrong
    return tuple(keys)


def _ttl(body: Mapping[str, Any], limits: Limits) -> int | None:
    return _int(body, "ttl_ms", low=1, high=limits.max_ttl_ms)


def _if_version(body: Mapping[str, Any]) -> int | None:
    return _int(body, "if_version", low=0, high=2**53)


# ---- operations -------------------------------------------------------------------------------

# json.JSONDecoder's C scanner: (text, index) -> (value, end); typeshed does not declare it.
_scan: Final[Callable[[str, int], tuple[Any, int]]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]

# C-accelerated JSON string quoting (the same escaping json.dumps uses): the hot replies are
# formatted directly, which costs a third of building a dict and dumping it.
_q = json.encoder.encode_basestring_ascii


def _fast_entry(key: str, e: Entry | None) -> str:
    if e is None:
        return '"key":%s,"value":"","found":false,"version":0' % _q(key)
    exp = "" if e.expires_at is None else ',"expires_at":%d' % e.expires_at
    return '"key":%s,"value":%s,"found":true,"version":%d%s' % (
        _q(key),
        _q(e.value),
        e.version,
        exp,
    )


def _fast_get(op: Get, r: Result) -> bytes:
    assert isinstance(r, GetResult)
    entry = _fast_entry(op.keys[0], r.entries[0])
    return ('{"success":true,"data":{%s,"scope":%s}}' % (entry, _q(op.scope))).encode()


def _fast_batch_get(op: Get, r: Result) -> bytes:
    assert isinstance(r, GetResult)
    items = "},{".join([_fast_entry(k, e) for k, e in zip(op.keys, r.entries, strict=True)])
    return (
        '{"success":true,"data":{"scope":%s,"count":%d,"items":[{%s}]}}'
        % (_q(op.scope), len(op.keys), items)
    ).encode()


def _fast_batch_set(op: Set, r: Result) -> bytes:
    assert isinstance(r, SetResult)
    items = "},{".join(
        [
            '"key":%s,"version":%d' % (_q(it.key), v)
            for it, v in zip(op.items, r.versions, strict=True)
        ]
    )
    extra = ',"created_scope":true' if r.created_scope else ""
    return (
        '{"success":true,"data":{"scope":%s,"status":"set","count":%d,"revision":%d,'
        '"items":[{%s}]%s}}' % (_q(op.scope), len(op.items), r.revision, items, extra)
    ).encode()


def _fast_set(op: Set, r: Result) -> bytes:
    assert isinstance(r, SetResult)
    it = op.items[0]
    extra = ',"created_scope":true' if r.created_scope else ""
    if it.ttl_ms is not None:
        extra += ',"expires_at":%d' % (r.ts + it.ttl_ms)
    return (
        '{"success":true,"data":{"key":%s,"scope":%s,"status":"set","value":%s,'
        '"version":%d,"revision":%d%s}}'
        % (_q(it.key), _q(op.scope), _q(it.value), r.versions[0], r.revision, extra)
    ).encode()


def _parse_create_scope(body: Json, limits: Limits) -> Op:
    return CreateScope(_scope(body, limits))


def _render_create_scope(op: CreateScope, r: Result) -> Json:
    assert isinstance(r, ScopeResult)
    return {"scope": op.scope, "status": "created", "revision": r.revision}


def _render_delete_scope(op: DeleteScope, r: Result) -> Json:
    assert isinstance(r, ScopeResult)
    return {"scope": op.scope, "status": "deleted", "revision": r.revision}


def _parse_set(body: Json, limits: Limits) -> Op:
    scope = _scope(body, limits)
    item = SetItem(
        key=_text(body, "key", limits.max_key_bytes),
        value=_value(body, "value", limits),
        ttl_ms=_ttl(body, limits),
        if_version=_if_version(body),
    )
    return Set(scope, (item,), create=_bool(body, "create", True))


def _render_set(op: Set, r: Result) -> Json:
    assert isinstance(r, SetResult)
    it = op.items[0]
    data: Json = {
        "key": it.key,
        "scope": op.scope,
        "status": "set",
        "value": it.value,
        "version": r.versions[0],
        "revision": r.revision,
    }
    if r.created_scope:
        data["created_scope"] = True
    if it.ttl_ms is not None:
        data["expires_at"] = r.ts + it.ttl_ms
    return data


def _parse_get(body: Json, limits: Limits) -> Op:
    return Get(_scope(body, limits), (_text(body, "key", limits.max_key_bytes),))


def _entry_json(key: str, e: Entry | None) -> Json:
    if e is None:
        return {"key": key, "value": "", "found": False, "version": 0}
    data: Json = {"key": key, "value": e.value, "found": True, "version": e.version}
    if e.expires_at is not None:
        data["expires_at"] = e.expires_at
    return data


def _render_get(op: Get, r: Result) -> Json:
    assert isinstance(r, GetResult)
    data = _entry_json(op.keys[0], r.entries[0])
    data["scope"] = op.scope
    return data


def _parse_delete(body: Json, limits: Limits) -> Op:
    return Delete(
        _scope(body, limits),
        (DeleteItem(_text(body, "key", limits.max_key_bytes), _if_version(body)),),
    )


def _render_delete(op: Delete, r: Result) -> Json:
    assert isinstance(r, DeleteResult)
    return {
        "key": op.items[0].key,
        "scope": op.scope,
        "status": "deleted",
        "found": r.found[0],
        "revision": r.revision,
    }


def _parse_list_keys(body: Json, limits: Limits) -> Op:
    return ListKeys(
        _scope(body, limits),
        prefix=_optional_text(body, "prefix", limits.max_key_bytes),
        limit=_int(body, "limit", low=1, high=limits.max_list_keys, default=limits.max_list_keys)
        or limits.max_list_keys,
        cursor=_optional_text(body, "cursor", limits.max_key_bytes),
    )


def _render_list_keys(op: ListKeys, r: Result) -> Json:
    assert isinstance(r, KeyList)
    return {
        "count": len(r.keys),
        "keys": list(r.keys),
        "scope": op.scope,
        "next_cursor": r.next_cursor,
    }


def _render_list_scopes(op: Op, r: Result) -> Json:
    assert isinstance(r, ScopeList)
    return {"count": len(r.scopes), "scopes": list(r.scopes)}


def _parse_batch_get(body: Json, limits: Limits) -> Op:
    return Get(_scope(body, limits), _key_list(body, limits))


def _render_batch_get(op: Get, r: Result) -> Json:
    assert isinstance(r, GetResult)
    items = [_entry_json(k, e) for k, e in zip(op.keys, r.entries, strict=True)]
    return {"scope": op.scope, "count": len(items), "items": items}


def _parse_batch_set(body: Json, limits: Limits) -> Op:
    scope = _scope(body, limits)
    raw_items = body.get("items")
    raw_values = body.get("values")
    if raw_items is not None and raw_values is not None:
        raise _bad("items", "and 'values' are alternatives; send one of them")
    entries: list[Any]
    if raw_values is not None:
        if not isinstance(raw_values, dict) or not raw_values:
            raise _bad("values", "must be a non-empty object of key: value strings")
        entries = [{"key": k, "value": v} for k, v in raw_values.items()]
        field = "values"
    else:
        if not isinstance(raw_items, list) or not raw_items:
            raise _bad(
                "items",
                "is required: a non-empty array of {key, value, ttl_ms?, if_version?} "
                "(or send 'values': {key: value})",
            )
        entries = raw_items
        field = "items"
    if len(entries) > limits.max_batch_keys:
        raise StateError(
            Code.VALUE_TOO_LARGE,
            f"field '{field}' holds {len(entries)} keys; the limit is {limits.max_batch_keys} "
            "per request (split the batch)",
            field=field,
        )
    default_ttl = _ttl(body, limits)
    items = []
    kmax, vmax = limits.max_key_bytes, limits.max_value_bytes
    for i, raw in enumerate(entries):
        # Fast path: exactly {key, value}, both plain ASCII within the limits.
        if raw.__class__ is dict and len(raw) == 2:
            k, v = raw.get("key"), raw.get("value")
            if (
                k.__class__ is str
                and v.__class__ is str
                and k
                and len(k) <= kmax
                and len(v) <= vmax
                and k.isascii()
                and v.isascii()
            ):
                items.append(SetItem(k, v, default_ttl))
                continue
        if not isinstance(raw, dict):
            raise _bad(f"{field}[{i}]", f"must be an object, not {_type(raw)}")
        try:
            ttl = _ttl(raw, limits)
            items.append(
                SetItem(
                    key=_text(raw, "key", limits.max_key_bytes),
                    value=_value(raw, "value", limits),
                    ttl_ms=default_ttl if ttl is None else ttl,
                    if_version=_if_version(raw),
                )
            )
        except StateError as err:
            err.field = f"{field}[{i}].{err.field}"
            err.message = f"{field}[{i}]: {err.message}"
            raise
    return Set(scope, tuple(items), create=_bool(body, "create", True))


def _render_batch_set(op: Set, r: Result) -> Json:
    assert isinstance(r, SetResult)
    data: Json = {
        "scope": op.scope,
        "status": "set",
        "count": len(op.items),
        "revision": r.revision,
        "items": [
            {"key": it.key, "version": v} for it, v in zip(op.items, r.versions, strict=True)
        ],
    }
    if r.created_scope:
        data["created_scope"] = True
    return data


def _parse_batch_delete(body: Json, limits: Limits) -> Op:
    scope = _scope(body, limits)
    return Delete(scope, tuple(DeleteItem(k) for k in _key_list(body, limits)))


def _render_batch_delete(op: Delete, r: Result) -> Json:
    assert isinstance(r, DeleteResult)
    return {
        "scope": op.scope,
        "status": "deleted",
        "count": sum(r.found),
        "revision": r.revision,
        "items": [{"key": it.key, "found": f} for it, f in zip(op.items, r.found, strict=True)],
    }


def _parse_snapshot(body: Json, limits: Limits) -> Op:
    limit = _int(body, "limit", low=1, high=limits.max_list_keys, default=limits.max_list_keys)
    return Snapshot(_scope(body, limits), limit=limit or limits.max_list_keys)


def _render_snapshot(op: Snapshot, r: Result) -> Json:
    assert isinstance(r, SnapshotResult)
    return {
        "scope": op.scope,
        "revision": r.revision,
        "count": len(r.items),
        "truncated": r.truncated,
        "items": [_entry_json(k, e) for k, e in r.items],
    }


def _parse_changes_since(body: Json, limits: Limits) -> Op:
    scope = _scope(body, limits)
    rev = _int(body, "revision", low=0, high=2**53)
    if rev is None:
        raise _bad("revision", "is required: the last revision you have seen (0 for all)")
    limit = _int(body, "limit", low=1, high=limits.max_changes, default=limits.max_changes)
    return ChangesSince(scope, rev, limit or limits.max_changes)


def _render_changes_since(op: ChangesSince, r: Result) -> Json:
    assert isinstance(r, ChangeLog)
    return {
        "scope": op.scope,
        "since": op.revision,
        "revision": r.revision,
        "compacted": r.compacted,
        "oldest": r.oldest,
        "more": r.more,
        "changes": [c.to_json() for c in r.changes_since],
    }


@dataclass(frozen=True, slots=True)
class Operation:
    parse: Callable[[Json, Limits], Op]
    render: Render
    permission: str
    scoped: bool = True
    fast: FastReply | None = None


def _no_scope(body: Json, limits: Limits) -> Op:
    return ListScopes()


OPERATIONS: Final[dict[str, Operation]] = {
    # The original's operations (names, fields and reply shapes kept).
    "create-scope": Operation(_parse_create_scope, _render_create_scope, auth.PERM_SCOPE_CREATE),
    "delete-scope": Operation(
        lambda b, lim: DeleteScope(_scope(b, lim)), _render_delete_scope, auth.PERM_SCOPE_DELETE
    ),
    "state-set": Operation(_parse_set, _render_set, auth.PERM_DATA_WRITE, fast=_fast_set),
    "state-get": Operation(_parse_get, _render_get, auth.PERM_DATA_READ, fast=_fast_get),
    "delete": Operation(_parse_delete, _render_delete, auth.PERM_DATA_DELETE),
    "list-keys": Operation(_parse_list_keys, _render_list_keys, auth.PERM_DATA_READ),
    "list-scopes": Operation(_no_scope, _render_list_scopes, auth.PERM_SCOPE_LIST, scoped=False),
    # Extensions.
    "batch-get": Operation(
        _parse_batch_get, _render_batch_get, auth.PERM_DATA_READ, fast=_fast_batch_get
    ),
    "batch-set": Operation(
        _parse_batch_set, _render_batch_set, auth.PERM_DATA_WRITE, fast=_fast_batch_set
    ),
    "batch-delete": Operation(_parse_batch_delete, _render_batch_delete, auth.PERM_DATA_DELETE),
    "snapshot": Operation(_parse_snapshot, _render_snapshot, auth.PERM_DATA_READ),
    "changes-since": Operation(_parse_changes_since, _render_changes_since, auth.PERM_DATA_READ),
}
HEALTH: Final = "health"
# Accepted as aliases: the original's docs still name get/set (reference §2.2.3).
ALIASES: Final = {"get": "state-get", "set": "state-set"}
NAMES: Final = (*OPERATIONS, HEALTH)
# The operation frame as sent -> (canonical name, spec): one dict lookup per request.
_BY_FRAME: Final[dict[bytes, tuple[str, Operation | None]]] = {
    **{n.encode(): (n, OPERATIONS.get(n)) for n in NAMES},
    **{a.encode(): (n, OPERATIONS[n]) for a, n in ALIASES.items()},
}


# ---- request / reply --------------------------------------------------------------------------


def decode(frames: list[bytes], limits: Limits, health: HealthInfo) -> Request:
    """Validate one request's MDP body. Raises :class:`StateError` (never anything else)."""
    if not frames:
        raise StateError(
            Code.INVALID_REQUEST, "empty request: send [operation, json]", field="operation"
        )
    known = _BY_FRAME.get(frames[0])
    if known is not None:
        name, spec = known
    else:
        try:
            name = frames[0].decode("ascii")
        except UnicodeDecodeError:
            raise StateError(
                Code.UNKNOWN_OPERATION,
                f"operation name is not ASCII text; expected one of: {', '.join(NAMES)}",
                field="operation",
            ) from None
        name = ALIASES.get(name, name)
        spec = OPERATIONS.get(name)
        if spec is None and name != HEALTH:
            raise StateError(
                Code.UNKNOWN_OPERATION,
                f"unknown operation {name[:64]!r}; expected one of: {', '.join(NAMES)}",
                field="operation",
            )
    body = _body(frames, name, limits)
    token = body.get("token")
    token = token if isinstance(token, str) else None
    if name == HEALTH:
        return _health(body, limits, health, token)
    assert spec is not None
    op = spec.parse(body, limits)
    scope = getattr(op, "scope", None) if spec.scoped else None
    return Request(
        name,
        op,
        spec.render,
        spec.permission,
        auth.RequestContext(name, scope, token),
        spec.fast,
    )


def _body(frames: list[bytes], name: str, limits: Limits) -> Json:
    if len(frames) < 2:
        if name in ("list-scopes", HEALTH):
            return {}  # the original demanded '{}' here; nothing to read, so accept none
        raise StateError(
            Code.INVALID_REQUEST,
            f"{name} needs a JSON object body frame after the operation name",
            field="body",
        )
    raw = frames[1]
    if len(raw) > limits.max_request_bytes:
        raise StateError(
            Code.VALUE_TOO_LARGE,
            f"request body is {len(raw)} bytes; the limit is {limits.max_request_bytes}",
            field="body",
        )
    try:
        # Decode first: json.loads(bytes) would also guess UTF-16/32 from the byte pattern.
        text = raw.decode("utf-8")
        try:
            # The C scanner alone: json.loads' Python layers cost as much as the parse.
            body, end = _scan(text, 0)
        except StopIteration:
            end = -1
        if end != len(text):  # whitespace around it, or an error: json.loads says which
            body = json.loads(text)
    except UnicodeDecodeError:
        raise StateError(
            Code.INVALID_REQUEST, "request body is not UTF-8 text", field="body"
        ) from None
    except json.JSONDecodeError as exc:
        raise StateError(
            Code.INVALID_REQUEST,
            f"request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            field="body",
        ) from None
    except RecursionError:
        raise StateError(
            Code.INVALID_REQUEST, "request body is nested too deeply", field="body"
        ) from None
    if not isinstance(body, dict):
        raise StateError(
            Code.INVALID_REQUEST,
            f"request body must be a JSON object, not {_type(body)}",
            field="body",
        )
    return body


def _health(body: Json, limits: Limits, health: HealthInfo, token: str | None) -> Request:
    scope = _scope(body, limits) if body.get("service") is not None else None

    def render(_: object, r: Result | None) -> Json:
        ok = health.available and r is not None
        data: Json = {
            "service": contract.SERVICE_STATE,
            "status": "healthy" if ok else "unhealthy",
            "store_available": ok,
            "store": health.store,
        }
        if scope is not None:
            data["scope"] = scope
            if isinstance(r, ExistsResult):
                data["scope_exists"] = r.exists
        return data

    return Request(
        HEALTH,
        ScopeExists(scope or "") if health.available else None,
        render,  # also takes None: answered without the store
        auth.PERM_HEALTH_READ,
        auth.RequestContext(HEALTH, scope, token),
    )


def success(data: Json) -> bytes:
    return json.dumps({"success": True, "data": data}, separators=(",", ":")).encode()


def failure(err: StateError) -> bytes:
    return json.dumps(err.envelope(), separators=(",", ":")).encode()


def reply(req: Request, result: Result | StateError | None, limits: Limits) -> bytes:
    """The reply frame for one request; a reply over the size limit becomes an error."""
    if isinstance(result, StateError):
        return failure(result)
    try:
        if req.fast is not None:
            out = req.fast(req.op, result)
        else:
            out = success(req.render(req.op, result))
    except AssertionError:
        return failure(
            StateError(Code.INTERNAL, f"{req.name}: the store returned the wrong result type")
        )
    if len(out) > limits.max_reply_bytes:
        return failure(
            StateError(
                Code.VALUE_TOO_LARGE,
                f"the reply would be {len(out)} bytes; the limit is {limits.max_reply_bytes} "
                "(ask for fewer keys)",
            )
        )
    return out
