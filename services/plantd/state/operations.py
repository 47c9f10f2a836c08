"""Request JSON -> validated store operation -> reply JSON. Pure: no sockets, no store.

A request is the MDP body ``[operation, json]`` (extra frames are ignored, as in the
original). Every outcome is one JSON frame: ``{"success": true, "data": {...}}`` or
``{"success": false, "error": "...", "code": "..."}``; nothing a client sends can make this
module raise anything but :class:`StateError`. The body is parsed by :mod:`.body`, its fields
checked by :mod:`.fields`, the reply built by :mod:`.render` (one renderer per operation).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from plantd.common import contract
from plantd.state import auth, fields, render
from plantd.state.body import parse as parse_body
from plantd.state.errors import Code, StateError
from plantd.state.limits import Limits
from plantd.state.model import (
    ChangesSince,
    CreateScope,
    Delete,
    DeleteItem,
    DeleteScope,
    ExistsResult,
    Get,
    ListKeys,
    ListScopes,
    Op,
    Result,
    ScopeExists,
    Set,
    SetItem,
    Snapshot,
)

Json = dict[str, Any]
Renderer = render.Renderer


@dataclass(slots=True)
class Request:
    """A validated request: what to run, how to answer, and who must be allowed."""

    name: str
    op: Op | None  # None: answered without the store (health while the store is down)
    render: Renderer
    permission: str
    context: auth.RequestContext


@dataclass(frozen=True, slots=True)
class HealthInfo:
    store: str
    available: bool


# ---- parsers: body -> operation ---------------------------------------------------------------


def _parse_create_scope(body: Json, limits: Limits) -> Op:
    return CreateScope(fields.scope(body, limits))


def _parse_delete_scope(body: Json, limits: Limits) -> Op:
    return DeleteScope(fields.scope(body, limits))


def _parse_set(body: Json, limits: Limits) -> Op:
    scope = fields.scope(body, limits)
    item = SetItem(
        key=fields.text(body, "key", limits.max_key_bytes),
        value=fields.value(body, "value", limits),
        ttl_ms=fields.ttl(body, limits),
        if_version=fields.if_version(body),
    )
    return Set(scope, (item,), create=fields.boolean(body, "create", True))


def _parse_get(body: Json, limits: Limits) -> Op:
    return Get(fields.scope(body, limits), (fields.text(body, "key", limits.max_key_bytes),))


def _parse_delete(body: Json, limits: Limits) -> Op:
    return Delete(
        fields.scope(body, limits),
        (DeleteItem(fields.text(body, "key", limits.max_key_bytes), fields.if_version(body)),),
    )


def _parse_list_keys(body: Json, limits: Limits) -> Op:
    return ListKeys(
        fields.scope(body, limits),
        prefix=fields.optional_text(body, "prefix", limits.max_key_bytes),
        limit=fields.page(body, "limit", limits.max_list_keys),
        cursor=fields.optional_text(body, "cursor", limits.max_key_bytes),
    )


def _parse_list_scopes(body: Json, limits: Limits) -> Op:
    return ListScopes()


def _parse_batch_get(body: Json, limits: Limits) -> Op:
    return Get(fields.scope(body, limits), fields.key_list(body, limits))


def _batch_entries(body: Json) -> tuple[str, list[Any]]:
    """('items' | 'values', the raw entries) of a batch-set."""
    raw_items = body.get("items")
    raw_values = body.get("values")
    if raw_items is not None and raw_values is not None:
        raise fields.bad("items", "and 'values' are alternatives; send one of them")
    if raw_values is not None:
        if not isinstance(raw_values, dict) or not raw_values:
            raise fields.bad("values", "must be a non-empty object of key: value strings")
        return "values", [{"key": k, "value": v} for k, v in raw_values.items()]
    if not isinstance(raw_items, list) or not raw_items:
        raise fields.bad(
            "items",
            "is required: a non-empty array of {key, value, ttl_ms?, if_version?} "
            "(or send 'values': {key: value})",
        )
    return "items", raw_items


def _parse_batch_set(body: Json, limits: Limits) -> Op:
    scope = fields.scope(body, limits)
    field, entries = _batch_entries(body)
    fields.batch_size(field, len(entries), limits)
    default_ttl = fields.ttl(body, limits)
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
            raise fields.bad(f"{field}[{i}]", f"must be an object, not {fields.type_name(raw)}")
        try:
            ttl = fields.ttl(raw, limits)
            items.append(
                SetItem(
                    key=fields.text(raw, "key", limits.max_key_bytes),
                    value=fields.value(raw, "value", limits),
                    ttl_ms=default_ttl if ttl is None else ttl,
                    if_version=fields.if_version(raw),
                )
            )
        except StateError as err:
            err.field = f"{field}[{i}].{err.field}"
            err.message = f"{field}[{i}]: {err.message}"
            raise
    fields.unique_keys(field, [it.key for it in items])
    return Set(scope, tuple(items), create=fields.boolean(body, "create", True))


def _parse_batch_delete(body: Json, limits: Limits) -> Op:
    scope = fields.scope(body, limits)
    return Delete(scope, tuple(DeleteItem(k) for k in fields.key_list(body, limits)))


def _parse_snapshot(body: Json, limits: Limits) -> Op:
    return Snapshot(
        fields.scope(body, limits), limit=fields.page(body, "limit", limits.max_list_keys)
    )


def _parse_changes_since(body: Json, limits: Limits) -> Op:
    scope = fields.scope(body, limits)
    rev = fields.required_int(
        body,
        "revision",
        low=0,
        high=fields.MAX_REVISION,
        what="the last revision you have seen (0 for all)",
    )
    return ChangesSince(scope, rev, fields.page(body, "limit", limits.max_changes))


@dataclass(frozen=True, slots=True)
class Operation:
    parse: Callable[[Json, Limits], Op]
    render: Renderer
    permission: str
    scoped: bool = True


OPERATIONS: Final[dict[str, Operation]] = {
    # The original's operations (names, fields and reply shapes kept).
    "create-scope": Operation(_parse_create_scope, render.create_scope, auth.PERM_SCOPE_CREATE),
    "delete-scope": Operation(_parse_delete_scope, render.delete_scope, auth.PERM_SCOPE_DELETE),
    "state-set": Operation(_parse_set, render.set_, auth.PERM_DATA_WRITE),
    "state-get": Operation(_parse_get, render.get, auth.PERM_DATA_READ),
    "delete": Operation(_parse_delete, render.delete, auth.PERM_DATA_DELETE),
    "list-keys": Operation(_parse_list_keys, render.list_keys, auth.PERM_DATA_READ),
    "list-scopes": Operation(
        _parse_list_scopes, render.list_scopes, auth.PERM_SCOPE_LIST, scoped=False
    ),
    # Extensions.
    "batch-get": Operation(_parse_batch_get, render.batch_get, auth.PERM_DATA_READ),
    "batch-set": Operation(_parse_batch_set, render.batch_set, auth.PERM_DATA_WRITE),
    "batch-delete": Operation(_parse_batch_delete, render.batch_delete, auth.PERM_DATA_DELETE),
    "snapshot": Operation(_parse_snapshot, render.snapshot, auth.PERM_DATA_READ),
    "changes-since": Operation(_parse_changes_since, render.changes_since, auth.PERM_DATA_READ),
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
    name, spec = _operation(frames[0])
    body = _body(frames, name, limits)
    token = body.get("token")
    token = token if isinstance(token, str) else None
    if spec is None:
        return _health(body, limits, health, token)
    op = spec.parse(body, limits)
    scope = getattr(op, "scope", None) if spec.scoped else None
    return Request(name, op, spec.render, spec.permission, auth.RequestContext(name, scope, token))


def _operation(frame: bytes) -> tuple[str, Operation | None]:
    """(canonical name, spec) of the operation frame; spec None is health."""
    known = _BY_FRAME.get(frame)
    if known is not None:
        return known
    try:
        name = frame.decode("ascii")
    except UnicodeDecodeError:
        raise StateError(
            Code.UNKNOWN_OPERATION,
            f"operation name is not ASCII text; expected one of: {', '.join(NAMES)}",
            field="operation",
        ) from None
    raise StateError(
        Code.UNKNOWN_OPERATION,
        f"unknown operation {name[:64]!r}; expected one of: {', '.join(NAMES)}",
        field="operation",
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
    return parse_body(frames[1], limits)


def _health(body: Json, limits: Limits, health: HealthInfo, token: str | None) -> Request:
    scope = fields.scope(body, limits) if body.get("service") is not None else None

    def answer(_: object, r: Result | None, budget: int) -> bytes:
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
        return render.success(data)

    return Request(
        HEALTH,
        ScopeExists(scope or "") if health.available else None,
        answer,  # also takes None: answered without the store
        auth.PERM_HEALTH_READ,
        auth.RequestContext(HEALTH, scope, token),
    )


success = render.success


def failure(err: StateError) -> bytes:
    return json.dumps(err.envelope(), separators=(",", ":")).encode()


def reply(req: Request, result: Result | StateError | None, limits: Limits) -> bytes:
    """The reply frame for one request: its renderer's, or the error it refused with."""
    if isinstance(result, StateError):
        return failure(result)
    try:
        return req.render(req.op, result, limits.max_reply_bytes)
    except StateError as err:
        return failure(err)
