"""Typed operations the stores execute, and their results.

The operation layer (:mod:`plantd.state.operations`) turns request JSON into these; a store
turns a batch of them into results in one round trip. Keeping them plain dataclasses keeps the
stores free of JSON and the JSON free of store details.

Versions and revisions: every write in a scope takes the next value of the scope's monotonic
``revision``; a key's ``version`` is the revision of its last write (0 = absent). So versions
never repeat, even after delete and re-create (no ABA for compare-and-set), and a watcher can
order and gap-check events by revision alone.

These are plain (not frozen) slotted dataclasses: treat them as immutable; frozen ones cost
~4x more to build, and the hot path builds several per request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

ChangeOp = Literal["set", "delete", "expire", "create-scope", "delete-scope"]

OP_SET: Final = "set"
OP_DELETE: Final = "delete"
OP_EXPIRE: Final = "expire"
OP_CREATE_SCOPE: Final = "create-scope"
OP_DELETE_SCOPE: Final = "delete-scope"


_CHANGE_OPS: dict[str, ChangeOp] = {
    OP_SET: OP_SET,
    OP_DELETE: OP_DELETE,
    OP_EXPIRE: OP_EXPIRE,
    OP_CREATE_SCOPE: OP_CREATE_SCOPE,
    OP_DELETE_SCOPE: OP_DELETE_SCOPE,
}


def change_op(name: str) -> ChangeOp:
    """A stored op name as a ``ChangeOp`` (``KeyError`` for anything else)."""
    return _CHANGE_OPS[name]


def history_compacted(since: int, current: int, oldest: int) -> bool:
    """True when a history from ``oldest`` cannot prove it holds every change after ``since``.

    ``since > current`` means the store was reset behind the watcher's back: also a re-sync.
    """
    if since > current:
        return True
    if since == current:
        return False
    return oldest == 0 or oldest > since + 1


@dataclass(slots=True)
class Change:
    """One committed change, as published on the state bus and kept in the history."""

    scope: str
    op: ChangeOp
    key: str
    value: str
    version: int
    revision: int
    ts: int  # milliseconds since the epoch, store clock

    def to_json(self) -> dict[str, object]:
        return {
            "op": self.op,
            "key": self.key,
            "value": self.value,
            "version": self.version,
            "revision": self.revision,
            "ts": self.ts,
        }


@dataclass(slots=True)
class Entry:
    value: str
    version: int
    expires_at: int | None = None  # ms since the epoch


# ---- operations -------------------------------------------------------------------------------


@dataclass(slots=True)
class CreateScope:
    scope: str


@dataclass(slots=True)
class DeleteScope:
    scope: str


@dataclass(slots=True)
class Get:
    scope: str
    keys: tuple[str, ...]


@dataclass(slots=True)
class SetItem:
    key: str
    value: str
    ttl_ms: int | None = None
    if_version: int | None = None  # 0: the key must be absent


@dataclass(slots=True)
class Set:
    """Write every item atomically (all or nothing); creates the scope when ``create``."""

    scope: str
    items: tuple[SetItem, ...]
    create: bool = True


@dataclass(slots=True)
class DeleteItem:
    key: str
    if_version: int | None = None


@dataclass(slots=True)
class Delete:
    scope: str
    items: tuple[DeleteItem, ...]


@dataclass(slots=True)
class ListKeys:
    scope: str
    prefix: str = ""
    limit: int = 10_000
    cursor: str = ""  # keys strictly after this one


@dataclass(slots=True)
class ListScopes:
    pass


@dataclass(slots=True)
class Snapshot:
    """All live entries of a scope and the revision they are consistent with."""

    scope: str
    limit: int = 10_000


@dataclass(slots=True)
class ChangesSince:
    scope: str
    revision: int
    limit: int = 1000


@dataclass(slots=True)
class ScopeExists:
    scope: str


Op = (
    CreateScope
    | DeleteScope
    | Get
    | Set
    | Delete
    | ListKeys
    | ListScopes
    | Snapshot
    | ChangesSince
    | ScopeExists
)

WRITE_OPS: Final = (CreateScope, DeleteScope, Set, Delete)


# ---- results ----------------------------------------------------------------------------------


@dataclass(slots=True)
class ScopeResult:
    """create-scope / delete-scope."""

    revision: int
    changes: tuple[Change, ...] = ()


@dataclass(slots=True)
class GetResult:
    entries: tuple[Entry | None, ...]  # in request order; None = absent
    changes: tuple[Change, ...] = ()


@dataclass(slots=True)
class SetResult:
    versions: tuple[int, ...]  # new version per item, request order
    revision: int
    created_scope: bool
    ts: int
    changes: tuple[Change, ...] = ()


@dataclass(slots=True)
class DeleteResult:
    found: tuple[bool, ...]
    revision: int
    changes: tuple[Change, ...] = ()


@dataclass(slots=True)
class KeyList:
    keys: tuple[str, ...]
    next_cursor: str  # "" when there are no more
    changes: tuple[Change, ...] = ()


@dataclass(slots=True)
class ScopeList:
    scopes: tuple[str, ...]
    changes: tuple[Change, ...] = ()


@dataclass(slots=True)
class SnapshotResult:
    revision: int
    items: tuple[tuple[str, Entry], ...]
    truncated: bool
    changes: tuple[Change, ...] = ()


@dataclass(slots=True)
class ChangeLog:
    revision: int  # current revision of the scope
    changes_since: tuple[Change, ...]
    compacted: bool  # history no longer reaches back to the requested revision
    oldest: int  # oldest revision still in the history (0: none kept)
    more: bool  # a page limit cut the list; ask again from the last revision
    changes: tuple[Change, ...] = field(default=())


@dataclass(slots=True)
class ExistsResult:
    exists: bool
    changes: tuple[Change, ...] = ()


Result = (
    ScopeResult
    | GetResult
    | SetResult
    | DeleteResult
    | KeyList
    | ScopeList
    | SnapshotResult
    | ChangeLog
    | ExistsResult
)
