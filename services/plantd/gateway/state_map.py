"""plantd.v1.StateService messages <-> org.plantd.State operations. Pure: no sockets.

Each RPC has a request builder (message -> ``(operation, JSON body)``, the body without the
caller's ``token``, which the servicer adds) and a reply converter (the envelope's ``data``
-> response message). Validation of the fields is the state service's (one authority): a
builder only translates, so a bad field comes back as the state's ``INVALID_REQUEST`` with
the state's message. Envelopes are unwrapped by :func:`envelope_data`, which raises
:class:`RpcFailure` with the envelope's stable ``code``; no message text is ever matched.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from plantd.api.errors import GatewayCode, Origin
from plantd.v1 import state_pb2 as pb

Json = dict[str, Any]


@dataclass(slots=True)
class RpcFailure(Exception):
    """A call that ends with an error: who produced ``code`` and what to tell the caller."""

    origin: Origin
    code: str
    message: str
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.origin}/{self.code}: {self.message}"


def envelope_data(frames: list[bytes]) -> Json:
    """The ``data`` of a state success envelope; :class:`RpcFailure` for anything else."""
    if len(frames) != 1:
        raise RpcFailure(
            Origin.GATEWAY, GatewayCode.BAD_REPLY, f"state sent {len(frames)} frames, not one"
        )
    try:
        doc = json.loads(frames[0])
    except (ValueError, UnicodeDecodeError) as exc:
        raise RpcFailure(
            Origin.GATEWAY, GatewayCode.BAD_REPLY, f"state's reply is not JSON: {exc}"
        ) from None
    if not isinstance(doc, dict):
        raise RpcFailure(Origin.GATEWAY, GatewayCode.BAD_REPLY, "state's reply is not an object")
    if doc.get("success") is True:
        data = doc.get("data")
        return data if isinstance(data, dict) else {}
    code = doc.get("code")
    message = str(doc.get("error") or "the state service refused the request")
    if not isinstance(code, str) or not code:
        # A legacy worker without codes: UNKNOWN (the table's fallback), its text as the message.
        code = "ERROR"
    meta = {"field": str(doc["field"])} if isinstance(doc.get("field"), str) else {}
    raise RpcFailure(Origin.STATE, code, message, meta)


# ---- small conversions ------------------------------------------------------------------------


def ttl_ms(ttl: Duration) -> int | None:
    """A TTL in whole milliseconds (rounded up, so a positive TTL never becomes "none");
    None when unset or zero (no TTL)."""
    nanos = ttl.seconds * 1_000_000_000 + ttl.nanos
    if nanos == 0:
        return None
    return -((-nanos) // 1_000_000)  # negative TTLs pass through for the state to refuse


def _stamp(ms: Any) -> Timestamp | None:
    if not isinstance(ms, int) or isinstance(ms, bool):
        return None
    ts = Timestamp()
    ts.FromMilliseconds(ms)
    return ts


def _entry(scope: str, item: Mapping[str, Any]) -> pb.Entry:
    return pb.Entry(
        scope=scope,
        key=str(item.get("key", "")),
        value=str(item.get("value", "")),
        version=int(item.get("version", 0)),
        expire_time=_stamp(item.get("expires_at")),
    )


def _page(size: int) -> int | None:
    return None if size == 0 else size  # 0: the state's default page


def _clean(**fields: Any) -> Json:
    return {k: v for k, v in fields.items() if v is not None}


# ---- per RPC ------------------------------------------------------------------------------------


def create_scope_req(r: pb.CreateScopeRequest) -> tuple[str, Json]:
    return "create-scope", {"service": r.scope}


def create_scope_resp(r: pb.CreateScopeRequest, d: Json) -> pb.CreateScopeResponse:
    return pb.CreateScopeResponse(
        scope=pb.Scope(name=str(d.get("scope", r.scope)), revision=int(d.get("revision", 0)))
    )


def delete_scope_req(r: pb.DeleteScopeRequest) -> tuple[str, Json]:
    return "delete-scope", {"service": r.scope}


def delete_scope_resp(r: pb.DeleteScopeRequest, d: Json) -> pb.DeleteScopeResponse:
    return pb.DeleteScopeResponse(revision=int(d.get("revision", 0)))


MAX_SCOPES_PAGE: Final = 10_000


def list_scopes_req(r: pb.ListScopesRequest) -> tuple[str, Json]:
    if r.page_size < 0:
        raise RpcFailure(
            Origin.STATE,
            "INVALID_REQUEST",
            "page_size must not be negative",
            {"field": "page_size"},
        )
    return "list-scopes", {}


def list_scopes_resp(r: pb.ListScopesRequest, d: Json) -> pb.ListScopesResponse:
    # list-scopes has no paging yet: the gateway pages the sorted list; the token is the last
    # name of the previous page, so a page stays right when scopes come and go in between.
    names = sorted(str(s) for s in d.get("scopes", ()))
    if r.page_token:
        names = [n for n in names if n > r.page_token]
    size = min(r.page_size or MAX_SCOPES_PAGE, MAX_SCOPES_PAGE)
    page = names[:size]
    more = len(names) > size
    return pb.ListScopesResponse(scopes=page, next_page_token=page[-1] if more else "")


def get_entry_req(r: pb.GetEntryRequest) -> tuple[str, Json]:
    return "state-get", {"service": r.scope, "key": r.key}


def get_entry_resp(r: pb.GetEntryRequest, d: Json) -> pb.GetEntryResponse:
    if d.get("found") is not True:
        raise RpcFailure(
            Origin.GATEWAY,
            GatewayCode.KEY_NOT_FOUND,
            f"key {r.key!r} does not exist in scope {r.scope!r}",
            {"scope": r.scope, "key": r.key},
        )
    return pb.GetEntryResponse(entry=_entry(r.scope, d))


def set_entry_req(r: pb.SetEntryRequest) -> tuple[str, Json]:
    return "state-set", _clean(
        service=r.scope,
        key=r.key,
        value=r.value,
        if_version=r.expected_version if r.HasField("expected_version") else None,
        ttl_ms=ttl_ms(r.ttl) if r.HasField("ttl") else None,
        create=r.create_scope if r.HasField("create_scope") else None,
    )


def set_entry_resp(r: pb.SetEntryRequest, d: Json) -> pb.SetEntryResponse:
    return pb.SetEntryResponse(
        entry=_entry(r.scope, d),
        revision=int(d.get("revision", 0)),
        created_scope=d.get("created_scope") is True,
    )


def delete_entry_req(r: pb.DeleteEntryRequest) -> tuple[str, Json]:
    return "delete", _clean(
        service=r.scope,
        key=r.key,
        if_version=r.expected_version if r.HasField("expected_version") else None,
    )


def delete_entry_resp(r: pb.DeleteEntryRequest, d: Json) -> pb.DeleteEntryResponse:
    return pb.DeleteEntryResponse(found=d.get("found") is True, revision=int(d.get("revision", 0)))


def batch_get_req(r: pb.BatchGetEntriesRequest) -> tuple[str, Json]:
    return "batch-get", {"service": r.scope, "keys": list(r.keys)}


def batch_get_resp(r: pb.BatchGetEntriesRequest, d: Json) -> pb.BatchGetEntriesResponse:
    out = pb.BatchGetEntriesResponse()
    for item in d.get("items", ()):
        found = item.get("found") is True
        key = str(item.get("key", ""))
        if found:
            out.results.add(key=key, found=True, entry=_entry(r.scope, item))
        else:
            out.results.add(key=key, found=False)
    return out


def batch_set_req(r: pb.BatchSetEntriesRequest) -> tuple[str, Json]:
    items = [
        _clean(
            key=w.key,
            value=w.value,
            if_version=w.expected_version if w.HasField("expected_version") else None,
            ttl_ms=ttl_ms(w.ttl) if w.HasField("ttl") else None,
        )
        for w in r.writes
    ]
    return "batch-set", _clean(
        service=r.scope,
        items=items,
        create=r.create_scope if r.HasField("create_scope") else None,
    )


def batch_set_resp(r: pb.BatchSetEntriesRequest, d: Json) -> pb.BatchSetEntriesResponse:
    versions = {str(i.get("key")): int(i.get("version", 0)) for i in d.get("items", ())}
    # The reply names keys and versions; the values are the ones written (the request's).
    entries = [
        pb.Entry(scope=r.scope, key=w.key, value=w.value, version=versions.get(w.key, 0))
        for w in r.writes
    ]
    return pb.BatchSetEntriesResponse(revision=int(d.get("revision", 0)), entries=entries)


def batch_delete_req(r: pb.BatchDeleteEntriesRequest) -> tuple[str, Json]:
    return "batch-delete", {"service": r.scope, "keys": list(r.keys)}


def batch_delete_resp(r: pb.BatchDeleteEntriesRequest, d: Json) -> pb.BatchDeleteEntriesResponse:
    return pb.BatchDeleteEntriesResponse(
        revision=int(d.get("revision", 0)),
        results=[
            pb.EntryDeletion(key=str(i.get("key", "")), found=i.get("found") is True)
            for i in d.get("items", ())
        ],
    )


def list_keys_req(r: pb.ListKeysRequest) -> tuple[str, Json]:
    return "list-keys", _clean(
        service=r.scope,
        prefix=r.prefix or None,
        limit=_page(r.page_size),
        cursor=r.page_token or None,
    )


def list_keys_resp(r: pb.ListKeysRequest, d: Json) -> pb.ListKeysResponse:
    return pb.ListKeysResponse(
        keys=[str(k) for k in d.get("keys", ())], next_page_token=str(d.get("next_cursor") or "")
    )


def snapshot_req(r: pb.GetSnapshotRequest) -> tuple[str, Json]:
    return "snapshot", _clean(service=r.scope, limit=_page(r.page_size))


def snapshot_resp(r: pb.GetSnapshotRequest, d: Json) -> pb.GetSnapshotResponse:
    return pb.GetSnapshotResponse(
        revision=int(d.get("revision", 0)),
        entries=[_entry(r.scope, i) for i in d.get("items", ())],
        truncated=d.get("truncated") is True,
    )


CHANGE_TYPES: Final[Mapping[str, pb.ChangeType.ValueType]] = {
    "set": pb.CHANGE_TYPE_SET,
    "delete": pb.CHANGE_TYPE_DELETE,
    "expire": pb.CHANGE_TYPE_EXPIRE,
    "create-scope": pb.CHANGE_TYPE_CREATE_SCOPE,
    "delete-scope": pb.CHANGE_TYPE_DELETE_SCOPE,
}


def changes_req(r: pb.ListChangesRequest) -> tuple[str, Json]:
    return "changes-since", _clean(
        service=r.scope, revision=r.start_revision, limit=_page(r.page_size)
    )


def changes_resp(r: pb.ListChangesRequest, d: Json) -> pb.ListChangesResponse:
    out = pb.ListChangesResponse(
        revision=int(d.get("revision", 0)),
        compacted=d.get("compacted") is True,
        oldest_revision=int(d.get("oldest", 0)),
        more=d.get("more") is True,
    )
    out.changes.extend(change_pb(r.scope, c) for c in d.get("changes", ()))
    return out


def change_pb(scope: str, c: Mapping[str, Any]) -> pb.Change:
    """One change (a ``changes-since`` item or a state bus event: the same JSON)."""
    return pb.Change(
        type=CHANGE_TYPES.get(str(c.get("op")), pb.CHANGE_TYPE_UNSPECIFIED),
        entry=pb.Entry(
            scope=scope,
            key=str(c.get("key", "")),
            value=str(c.get("value", "")),
            version=int(c.get("version", 0)),
        ),
        revision=int(c.get("revision", 0)),
        commit_time=_stamp(c.get("ts")),
    )


def parse_event(payload: bytes) -> Json | None:
    """A state bus event's JSON, or None for anything that is not one (skipped)."""
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict):
        return None
    rev = doc.get("revision")
    if not isinstance(rev, int) or isinstance(rev, bool) or rev < 1:
        return None
    return doc


_SCOPE_OPS: Final = frozenset(("create-scope", "delete-scope"))


def wanted(prefix: str, c: Mapping[str, Any]) -> bool:
    """Whether a watch with ``key_prefix`` sends this change (scope changes always)."""
    return not prefix or c.get("op") in _SCOPE_OPS or str(c.get("key", "")).startswith(prefix)


@dataclass(frozen=True, slots=True)
class Method:
    """One unary RPC: its name, how to build the state request and read the reply."""

    name: str
    build: Callable[[Any], tuple[str, Json]]
    convert: Callable[[Any, Json], Message]


METHODS: Final[Mapping[str, Method]] = {
    m.name: m
    for m in (
        Method("CreateScope", create_scope_req, create_scope_resp),
        Method("DeleteScope", delete_scope_req, delete_scope_resp),
        Method("ListScopes", list_scopes_req, list_scopes_resp),
        Method("GetEntry", get_entry_req, get_entry_resp),
        Method("SetEntry", set_entry_req, set_entry_resp),
        Method("DeleteEntry", delete_entry_req, delete_entry_resp),
        Method("BatchGetEntries", batch_get_req, batch_get_resp),
        Method("BatchSetEntries", batch_set_req, batch_set_resp),
        Method("BatchDeleteEntries", batch_delete_req, batch_delete_resp),
        Method("ListKeys", list_keys_req, list_keys_resp),
        Method("GetSnapshot", snapshot_req, snapshot_resp),
        Method("ListChanges", changes_req, changes_resp),
    )
}
