"""Store result -> the success reply frame, one renderer per operation, within a byte budget.

Every renderer returns the whole reply (``{"success":true,"data":{...}}``) as bytes and takes
``budget``, the most bytes the reply may have (``max_reply_bytes``). Renderers of replies that
grow with the data (batch-get, snapshot, list-keys, changes-since) count while they build and
stop at the first item that would pass the budget: the most they allocate is the budget plus
one item, never the whole oversized reply. batch-get and snapshot then refuse with
``REPLY_TOO_LARGE``; changes-since returns the changes that fit with ``"more": true`` (its
normal paging). A result of the wrong type (a store bug) is ``INTERNAL``, checked explicitly:
an ``assert`` would vanish under ``python -O``.

The replies are formatted directly with the C string quoter json.dumps uses: for the hot
operations that costs a third of building a dict and dumping it (bench.state).
"""

# %-formatting builds the JSON replies: their braces would need doubling in f-strings/format.
# ruff: noqa: UP031

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final, TypeVar

from plantd.state.errors import SNAPSHOT_ADVICE, Code, StateError, reply_too_large
from plantd.state.model import (
    ChangeLog,
    ChangesSince,
    CreateScope,
    Delete,
    DeleteResult,
    DeleteScope,
    Entry,
    Get,
    GetResult,
    KeyList,
    ListKeys,
    Op,
    Result,
    ScopeList,
    ScopeResult,
    Set,
    SetResult,
    Snapshot,
    SnapshotResult,
)

Json = dict[str, Any]
_FEWER_KEYS: Final = "ask for fewer keys per request"

# (operation, store result, budget in bytes) -> the reply frame.
Renderer = Callable[[Any, Any, int], bytes]

# C-accelerated JSON string quoting, ASCII-only output: len(str) == len(bytes) of the reply.
_q: Final[Callable[[str], str]] = json.encoder.encode_basestring_ascii

R = TypeVar("R")


def _want(result: object, kind: type[R], name: str) -> R:
    if result.__class__ is not kind:
        raise StateError(
            Code.INTERNAL,
            f"{name}: the store returned {type(result).__name__}, not {kind.__name__} (a bug)",
        )
    return result


def success(data: Json) -> bytes:
    return json.dumps({"success": True, "data": data}, separators=(",", ":")).encode()


def _entry(key: str, e: Entry | None) -> str:
    if e is None:
        return '"key":%s,"value":"","found":false,"version":0' % _q(key)
    exp = "" if e.expires_at is None else ',"expires_at":%d' % e.expires_at
    return '"key":%s,"value":%s,"found":true,"version":%d%s' % (
        _q(key),
        _q(e.value),
        e.version,
        exp,
    )


# The item loops below are written out, not shared through a helper taking a formatter: the
# call per item cost batch-get 30% (bench micro-benchmark of decode + reply, 10 keys).


# ---- single-key operations (bounded by the request limits) ----------------------------------


def get(op: Get, r: Result, budget: int) -> bytes:
    res = _want(r, GetResult, "state-get")
    entry = _entry(op.keys[0], res.entries[0])
    out = '{"success":true,"data":{%s,"scope":%s}}' % (entry, _q(op.scope))
    if len(out) > budget:
        raise reply_too_large("state-get", len(out), budget, "the value is too big to send")
    return out.encode()


def set_(op: Set, r: Result, budget: int) -> bytes:
    res = _want(r, SetResult, "state-set")
    it = op.items[0]
    extra = ',"created_scope":true' if res.created_scope else ""
    if it.ttl_ms is not None:
        extra += ',"expires_at":%d' % (res.ts + it.ttl_ms)
    return (
        '{"success":true,"data":{"key":%s,"scope":%s,"status":"set","value":%s,'
        '"version":%d,"revision":%d%s}}'
        % (_q(it.key), _q(op.scope), _q(it.value), res.versions[0], res.revision, extra)
    ).encode()


def delete(op: Delete, r: Result, budget: int) -> bytes:
    res = _want(r, DeleteResult, "delete")
    return success(
        {
            "key": op.items[0].key,
            "scope": op.scope,
            "status": "deleted",
            "found": res.found[0],
            "revision": res.revision,
        }
    )


def create_scope(op: CreateScope, r: Result, budget: int) -> bytes:
    res = _want(r, ScopeResult, "create-scope")
    return success({"scope": op.scope, "status": "created", "revision": res.revision})


def delete_scope(op: DeleteScope, r: Result, budget: int) -> bytes:
    res = _want(r, ScopeResult, "delete-scope")
    return success({"scope": op.scope, "status": "deleted", "revision": res.revision})


def list_scopes(op: Op, r: Result, budget: int) -> bytes:
    res = _want(r, ScopeList, "list-scopes")
    out = success({"count": len(res.scopes), "scopes": list(res.scopes)})
    if len(out) > budget:
        raise reply_too_large("list-scopes", len(out), budget, "delete unused scopes")
    return out


# ---- batches and pages (grow with the data: budgeted while built) ---------------------------


def batch_get(op: Get, r: Result, budget: int) -> bytes:
    res = _want(r, GetResult, "batch-get")
    head = '{"success":true,"data":{"scope":%s,"count":%d,"items":[{' % (_q(op.scope), len(op.keys))
    size = len(head) + 4
    items: list[str] = []
    add = items.append
    for k, e in zip(op.keys, res.entries, strict=True):
        item = _entry(k, e)
        size += len(item) + 3  # the "},{" between items
        if size > budget:
            raise reply_too_large(f"batch-get of {len(op.keys)} keys", size, budget, _FEWER_KEYS)
        add(item)
    return (head + "},{".join(items) + "}]}}").encode()


def batch_set(op: Set, r: Result, budget: int) -> bytes:
    res = _want(r, SetResult, "batch-set")
    items = "},{".join(
        [
            '"key":%s,"version":%d' % (_q(it.key), v)
            for it, v in zip(op.items, res.versions, strict=True)
        ]
    )
    extra = ',"created_scope":true' if res.created_scope else ""
    return (
        '{"success":true,"data":{"scope":%s,"status":"set","count":%d,"revision":%d,'
        '"items":[{%s}]%s}}' % (_q(op.scope), len(op.items), res.revision, items, extra)
    ).encode()


def batch_delete(op: Delete, r: Result, budget: int) -> bytes:
    res = _want(r, DeleteResult, "batch-delete")
    return success(
        {
            "scope": op.scope,
            "status": "deleted",
            "count": sum(res.found),
            "revision": res.revision,
            "items": [
                {"key": it.key, "found": f} for it, f in zip(op.items, res.found, strict=True)
            ],
        }
    )


def list_keys(op: ListKeys, r: Result, budget: int) -> bytes:
    res = _want(r, KeyList, "list-keys")
    tail = '],"scope":%s,"next_cursor":%s}}' % (_q(op.scope), _q(res.next_cursor))
    head = '{"success":true,"data":{"count":%d,"keys":[' % len(res.keys)
    size = len(head) + len(tail)
    keys: list[str] = []
    for k in res.keys:
        quoted = _q(k)
        size += len(quoted) + 1
        if size > budget:
            raise reply_too_large(
                f"list-keys (page of {len(res.keys)})",
                size,
                budget,
                "ask for a smaller page with 'limit' and follow 'next_cursor'",
            )
        keys.append(quoted)
    return (head + ",".join(keys) + tail).encode()


def snapshot(op: Snapshot, r: Result, budget: int) -> bytes:
    res = _want(r, SnapshotResult, "snapshot")
    head = (
        '{"success":true,"data":{"scope":%s,"revision":%d,"count":%d,"truncated":%s,"items":['
        % (_q(op.scope), res.revision, len(res.items), "true" if res.truncated else "false")
    )
    size = len(head) + 4
    items: list[str] = []
    for k, e in res.items:
        item = "{%s}" % _entry(k, e)
        size += len(item) + 1
        if size > budget:
            raise reply_too_large(
                f"snapshot of scope {op.scope[:80]!r}", size, budget, SNAPSHOT_ADVICE
            )
        items.append(item)
    return (head + ",".join(items) + "]}}").encode()


def _change(c: Any) -> str:
    return '{"op":%s,"key":%s,"value":%s,"version":%d,"revision":%d,"ts":%d}' % (
        _q(c.op),
        _q(c.key),
        _q(c.value),
        c.version,
        c.revision,
        c.ts,
    )


def changes_since(op: ChangesSince, r: Result, budget: int) -> bytes:
    res = _want(r, ChangeLog, "changes-since")
    head = '{"success":true,"data":{"scope":%s,"since":%d,"revision":%d,"compacted":%s,' % (
        _q(op.scope),
        op.revision,
        res.revision,
        "true" if res.compacted else "false",
    )
    room = budget - len(head) - 64  # the "oldest", "more" and "changes" fields
    out: list[str] = []
    more = res.more
    for c in res.changes_since:
        s = _change(c)
        room -= len(s) + 1
        if room < 0:
            more = True  # the rest is the next page: ask again from the last revision sent
            break
        out.append(s)
    if not out and res.changes_since:
        raise reply_too_large(
            "changes-since", len(head), budget, "one change is larger than max_reply_bytes"
        )
    return (
        '%s"oldest":%d,"more":%s,"changes":[%s]}}'
        % (head, res.oldest, "true" if more else "false", ",".join(out))
    ).encode()
