"""The embedded store: one SQLite file in WAL mode, the default on a single machine.

Each batch is one transaction (one fsync with ``synchronous=FULL``), each operation inside it a
savepoint so that one failing operation (a lost compare-and-set) leaves the others intact. The
connection lives on one dedicated thread: the event loop keeps receiving requests while SQLite
waits for the disk, and the next batch is then bigger (natural group commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from plantd.state import errors
from plantd.state.errors import StateError, StoreUnavailable
from plantd.state.limits import DEFAULT_LIMITS, Limits
from plantd.state.model import (
    OP_CREATE_SCOPE,
    OP_DELETE,
    OP_DELETE_SCOPE,
    OP_EXPIRE,
    OP_SET,
    Change,
    ChangeLog,
    ChangeOp,
    ChangesSince,
    CreateScope,
    Delete,
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
    SetResult,
    Snapshot,
    SnapshotResult,
    change_op,
    history_compacted,
)
from plantd.state.store import Store

Synchronous = Literal["full", "normal"]

DB_FILE = "state.db"
SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS scopes (name TEXT PRIMARY KEY) WITHOUT ROWID;
-- revisions outlive their scope so a re-created scope never reuses one (watchers rely on it)
CREATE TABLE IF NOT EXISTS revs (scope TEXT PRIMARY KEY, rev INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kv (
    scope TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
    version INTEGER NOT NULL, expires_at INTEGER,
    UNIQUE (scope, key)
);
CREATE INDEX IF NOT EXISTS kv_expiry ON kv (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS changes (
    scope TEXT NOT NULL, rev INTEGER NOT NULL, op TEXT NOT NULL, key TEXT NOT NULL,
    value TEXT NOT NULL, version INTEGER NOT NULL, ts INTEGER NOT NULL,
    PRIMARY KEY (scope, rev)
);
"""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class SqliteStore(Store):
    """Store backed by ``<data_dir>/state.db``."""

    kind = "sqlite"

    def __init__(
        self,
        data_dir: Path | str,
        *,
        limits: Limits = DEFAULT_LIMITS,
        synchronous: Synchronous = "full",
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        super().__init__(limits)
        self.path = Path(data_dir).expanduser() / DB_FILE
        self.synchronous = synchronous
        self._clock = clock
        self._con: sqlite3.Connection | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._available = False

    # ---- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state-sqlite")
        await self._call(self._open_sync)
        self._available = True

    def _open_sync(self) -> None:
        try:
            _private_files(self.path)
            con = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=5.0
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"cannot open {self.path}: {exc}") from exc
        try:
            mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreUnavailable(f"{self.path}: cannot switch to WAL mode (got {mode})")
            con.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
            con.executescript(_SCHEMA)
            row = con.execute("SELECT v FROM meta WHERE k='schema'").fetchone()
            if row is None:
                con.execute("INSERT INTO meta (k, v) VALUES ('schema', ?)", (SCHEMA_VERSION,))
            elif row[0] != SCHEMA_VERSION:
                raise StoreUnavailable(
                    f"{self.path} has schema version {row[0]}, this build reads "
                    f"{SCHEMA_VERSION}; use a matching plantd version"
                )
        except sqlite3.Error as exc:
            con.close()
            raise StoreUnavailable(f"cannot initialise {self.path}: {exc}") from exc
        except StoreUnavailable:
            con.close()
            raise
        self._con = con

    async def close(self) -> None:
        self._available = False
        if self._pool is None:
            return
        if self._con is not None:
            con, self._con = self._con, None
            await self._call(con.close)
        self._pool.shutdown(wait=True)
        self._pool = None

    @property
    def available(self) -> bool:
        return self._available

    def describe(self) -> str:
        return f"sqlite {self.path} (synchronous={self.synchronous})"

    async def ping(self) -> None:
        await self._call(self._ping_sync)

    def _ping_sync(self) -> None:
        try:
            self._db().execute("SELECT 1").fetchone()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite: {exc}") from exc

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._pool is None:
            raise StoreUnavailable("the store is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn, *args)

    def _db(self) -> sqlite3.Connection:
        if self._con is None:
            raise StoreUnavailable("the store is not open")
        return self._con

    # ---- batches ------------------------------------------------------------------------------

    async def execute(self, ops: Sequence[Op]) -> list[Result | StateError]:
        result: list[Result | StateError] = await self._call(self._execute_sync, list(ops))
        return result

    def _execute_sync(self, ops: list[Op]) -> list[Result | StateError]:
        con = self._db()
        now = self._clock()
        touched: dict[str, int] = {}  # scope -> highest revision written in this batch
        out: list[Result | StateError] = []
        budget = _ReadBudget(self.limits.max_reply_bytes, self.limits.max_batch_reply_bytes)
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                for op in ops:
                    con.execute("SAVEPOINT op")
                    try:
                        out.append(self._one(con, op, now, touched, budget))
                        con.execute("RELEASE op")
                    except StateError as err:
                        con.execute("ROLLBACK TO op")
                        con.execute("RELEASE op")
                        out.append(err)
                    except (sqlite3.DataError, ValueError, TypeError, OverflowError) as exc:
                        # One operation the database or we could not take (a bug, or a value
                        # SQLite refuses): it fails alone; the others in the batch still commit.
                        con.execute("ROLLBACK TO op")
                        con.execute("RELEASE op")
                        out.append(_op_failed(op, exc))
                self._trim(con, touched)
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            self._available = False
            raise StoreUnavailable(f"sqlite {self.path}: {exc}") from exc
        self._available = True
        return out

    def _one(
        self,
        con: sqlite3.Connection,
        op: Op,
        now: int,
        touched: dict[str, int],
        budget: _ReadBudget,
    ) -> Result:
        match op:
            case Get():
                return self._get(con, op, now, budget)
            case Set():
                return self._set(con, op, now, touched)
            case Delete():
                return self._delete(con, op, now, touched)
            case CreateScope():
                if _scope_exists(con, op.scope):
                    raise errors.scope_exists(op.scope)
                con.execute("INSERT INTO scopes (name) VALUES (?)", (op.scope,))
                ch = self._log(con, op.scope, 1, OP_CREATE_SCOPE, [("", "", 0)], now, touched)
                return ScopeResult(revision=ch[0].revision, changes=tuple(ch))
            case DeleteScope():
                if not _scope_exists(con, op.scope):
                    raise errors.scope_not_found(op.scope)
                con.execute("DELETE FROM scopes WHERE name = ?", (op.scope,))
                con.execute("DELETE FROM kv WHERE scope = ?", (op.scope,))
                ch = self._log(con, op.scope, 1, OP_DELETE_SCOPE, [("", "", 0)], now, touched)
                return ScopeResult(revision=ch[0].revision, changes=tuple(ch))
            case ListKeys():
                return self._list_keys(con, op, now)
            case ListScopes():
                rows = con.execute("SELECT name FROM scopes ORDER BY name").fetchall()
                return ScopeList(scopes=tuple(r[0] for r in rows))
            case Snapshot():
                return self._snapshot(con, op, now, budget)
            case ChangesSince():
                return self._changes_since(con, op, budget)
            case ScopeExists():
                return ExistsResult(exists=_scope_exists(con, op.scope))
        raise StateError(errors.Code.INTERNAL, f"sqlite store cannot run {type(op).__name__}")

    # ---- operations ---------------------------------------------------------------------------

    def _live(
        self,
        con: sqlite3.Connection,
        scope: str,
        keys: Sequence[str],
        now: int,
        budget: _ReadBudget | None = None,
    ) -> dict[str, Entry]:
        """Live entries of ``keys``; with ``budget``, REPLY_TOO_LARGE once the keys and values
        read pass it (rows are read one at a time, so memory stays at the budget + one row)."""
        found: dict[str, Entry] = {}
        size = 0
        limit = budget.limit() if budget is not None else 0
        # One query per chunk: SQLite caps host parameters (32766 here; keep well under).
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            marks = ",".join("?" * len(chunk))
            cur = con.execute(
                f"SELECT key, value, version, expires_at FROM kv "  # noqa: S608 - only '?' marks
                f"WHERE scope = ? AND key IN ({marks})",
                (scope, *chunk),
            )
            for key, value, version, exp in cur:
                if exp is None or exp > now:
                    found[key] = Entry(value, version, exp)
                    if budget is not None:
                        size += len(key) + len(value)
                        if size > limit:
                            cur.close()
                            raise budget.refuse(
                                f"batch-get of {len(keys)} keys",
                                size,
                                "ask for fewer keys per request",
                            )
        if budget is not None:
            budget.spend(size)
        return found

    def _get(self, con: sqlite3.Connection, op: Get, now: int, budget: _ReadBudget) -> GetResult:
        if not _scope_exists(con, op.scope):
            raise errors.scope_not_found(op.scope)
        if len(op.keys) == 1:
            row = con.execute(
                "SELECT value, version, expires_at FROM kv WHERE scope = ? AND key = ?",
                (op.scope, op.keys[0]),
            ).fetchone()
            if row is None or (row[2] is not None and row[2] <= now):
                return GetResult(entries=(None,))
            # One value (bounded by the value limit), but a batch of credit state-gets is not.
            size = len(op.keys[0]) + len(row[0])
            if size > budget.limit():
                raise budget.refuse("state-get", size, "the value is too big to send")
            budget.spend(size)
            return GetResult(entries=(Entry(row[0], row[1], row[2]),))
        live = self._live(con, op.scope, op.keys, now, budget)
        return GetResult(entries=tuple(live.get(k) for k in op.keys))

    def _set(
        self, con: sqlite3.Connection, op: Set, now: int, touched: dict[str, int]
    ) -> SetResult:
        created = False
        if not _scope_exists(con, op.scope):
            if not op.create:
                raise errors.scope_not_found(op.scope)
            con.execute("INSERT INTO scopes (name) VALUES (?)", (op.scope,))
            created = True
        checked = [it for it in op.items if it.if_version is not None]
        if checked:
            live = self._live(con, op.scope, [it.key for it in checked], now)
            lost = []
            for it in checked:
                cur = live[it.key].version if it.key in live else 0
                if cur != it.if_version:
                    lost.append((it.key, int(it.if_version or 0), cur))
            if lost:
                raise errors.conflict(op.scope, lost)
        changes: list[Change] = []
        if created:
            changes += self._log(con, op.scope, 1, OP_CREATE_SCOPE, [("", "", 0)], now, touched)
        # Later items win when a key repeats, as with Redis HSET; each still gets a revision.
        rows = [(it.key, it.value, 0) for it in op.items]
        written = self._log(con, op.scope, len(rows), OP_SET, rows, now, touched)
        con.executemany(
            "INSERT INTO kv (scope, key, value, version, expires_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value, "
            "version = excluded.version, expires_at = excluded.expires_at",
            [
                (
                    op.scope,
                    it.key,
                    it.value,
                    ch.revision,
                    None if it.ttl_ms is None else now + it.ttl_ms,
                )
                for it, ch in zip(op.items, written, strict=True)
            ],
        )
        changes += written
        return SetResult(
            versions=tuple(ch.revision for ch in written),
            revision=written[-1].revision,
            created_scope=created,
            ts=now,
            changes=tuple(changes),
        )

    def _delete(
        self, con: sqlite3.Connection, op: Delete, now: int, touched: dict[str, int]
    ) -> DeleteResult:
        if not _scope_exists(con, op.scope):
            raise errors.scope_not_found(op.scope)
        live = self._live(con, op.scope, [it.key for it in op.items], now)
        lost = []
        for it in op.items:
            cur = live[it.key].version if it.key in live else 0
            if it.if_version is not None and cur != it.if_version:
                lost.append((it.key, it.if_version, cur))
        if lost:
            raise errors.conflict(op.scope, lost)
        gone = [k for k in dict.fromkeys(it.key for it in op.items) if k in live]
        changes: list[Change] = []
        if gone:
            con.executemany(
                "DELETE FROM kv WHERE scope = ? AND key = ?", [(op.scope, k) for k in gone]
            )
            changes = self._log(
                con, op.scope, len(gone), OP_DELETE, [(k, "", 0) for k in gone], now, touched
            )
        revision = changes[-1].revision if changes else _revision(con, op.scope)
        return DeleteResult(
            found=tuple(it.key in live for it in op.items),
            revision=revision,
            changes=tuple(changes),
        )

    def _list_keys(self, con: sqlite3.Connection, op: ListKeys, now: int) -> KeyList:
        if not _scope_exists(con, op.scope):
            raise errors.scope_not_found(op.scope)
        start = max(op.prefix, op.cursor)
        cmp = ">" if op.cursor and op.cursor >= op.prefix else ">="
        cur = con.execute(
            f"SELECT key FROM kv WHERE scope = ? AND key {cmp} ? "  # noqa: S608 - fixed operator
            "AND (expires_at IS NULL OR expires_at > ?) ORDER BY key",
            (op.scope, start, now),
        )
        keys: list[str] = []
        more = False
        for (key,) in cur:
            if not key.startswith(op.prefix):
                break
            if len(keys) == op.limit:
                more = True
                break
            keys.append(key)
        cur.close()
        return KeyList(keys=tuple(keys), next_cursor=keys[-1] if more and keys else "")

    def _snapshot(
        self, con: sqlite3.Connection, op: Snapshot, now: int, budget: _ReadBudget
    ) -> SnapshotResult:
        if not _scope_exists(con, op.scope):
            raise errors.scope_not_found(op.scope)
        cur = con.execute(
            "SELECT key, value, version, expires_at FROM kv WHERE scope = ? "
            "AND (expires_at IS NULL OR expires_at > ?) ORDER BY key LIMIT ?",
            (op.scope, now, op.limit + 1),
        )
        limit = budget.limit()
        items: list[tuple[str, Entry]] = []
        size = 0
        truncated = False
        for k, v, ver, exp in cur:
            if len(items) == op.limit:
                truncated = True
                break
            size += len(k) + len(v)
            if size > limit:
                cur.close()
                raise budget.refuse(
                    f"snapshot of scope {op.scope[:80]!r}",
                    size,
                    errors.SNAPSHOT_ADVICE,
                )
            items.append((k, Entry(v, ver, exp)))
        cur.close()
        budget.spend(size)
        return SnapshotResult(
            revision=_revision(con, op.scope), items=tuple(items), truncated=truncated
        )

    def _changes_since(
        self, con: sqlite3.Connection, op: ChangesSince, budget: _ReadBudget
    ) -> ChangeLog:
        current = _revision(con, op.scope)
        oldest_row = con.execute(
            "SELECT MIN(rev) FROM changes WHERE scope = ?", (op.scope,)
        ).fetchone()
        oldest = int(oldest_row[0] or 0)
        if history_compacted(op.revision, current, oldest):
            return ChangeLog(current, (), compacted=True, oldest=oldest, more=False)
        cur = con.execute(
            "SELECT rev, op, key, value, version, ts FROM changes WHERE scope = ? AND rev > ? "
            "ORDER BY rev LIMIT ?",
            (op.scope, op.revision, op.limit + 1),
        )
        # A page ends at the limit or at the reply budget, whichever comes first: past the
        # budget the client pages on from the last revision it got ("more": true).
        limit = budget.limit()
        changes: list[Change] = []
        size = 0
        more = False
        for rev, o, k, v, ver, ts in cur:
            size += len(k) + len(v)
            if len(changes) == op.limit or (changes and size > limit):
                more = True
                break
            changes.append(Change(op.scope, change_op(o), k, v, ver, rev, ts))
        cur.close()
        budget.spend(size)
        return ChangeLog(current, tuple(changes), compacted=False, oldest=oldest, more=more)

    # ---- history ------------------------------------------------------------------------------

    def _log(
        self,
        con: sqlite3.Connection,
        scope: str,
        count: int,
        op: ChangeOp,
        rows: list[tuple[str, str, int]],
        now: int,
        touched: dict[str, int],
    ) -> list[Change]:
        """Take ``count`` revisions for ``scope`` and record one change per row."""
        last = con.execute(
            "INSERT INTO revs (scope, rev) VALUES (?, ?) "
            "ON CONFLICT (scope) DO UPDATE SET rev = rev + excluded.rev RETURNING rev",
            (scope, count),
        ).fetchone()[0]
        first = last - count + 1
        changes = [
            Change(scope, op, key, value, (first + i) if op == OP_SET else 0, first + i, now)
            for i, (key, value, _) in enumerate(rows)
        ]
        con.executemany(
            "INSERT INTO changes (scope, rev, op, key, value, version, ts) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(c.scope, c.revision, c.op, c.key, c.value, c.version, c.ts) for c in changes],
        )
        touched[scope] = last
        return changes

    def _trim(self, con: sqlite3.Connection, touched: dict[str, int]) -> None:
        keep = self.limits.history_len
        for scope, last in touched.items():
            con.execute("DELETE FROM changes WHERE scope = ? AND rev <= ?", (scope, last - keep))

    # ---- expiry -------------------------------------------------------------------------------

    async def sweep_expired(self, max_keys: int = 1000) -> list[Change]:
        changes: list[Change] = await self._call(self._sweep_sync, max_keys)
        return changes

    def _sweep_sync(self, max_keys: int) -> list[Change]:
        con = self._db()
        now = self._clock()
        try:
            due = con.execute(
                "SELECT scope, key FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ? "
                "ORDER BY expires_at LIMIT ?",
                (now, max_keys),
            ).fetchall()
            if not due:
                return []
            by_scope: dict[str, list[str]] = {}
            for scope, key in due:
                by_scope.setdefault(scope, []).append(key)
            touched: dict[str, int] = {}
            out: list[Change] = []
            con.execute("BEGIN IMMEDIATE")
            try:
                for scope, keys in by_scope.items():
                    # Re-check inside the transaction: another writer may have renewed a key.
                    still = [
                        k
                        for k in keys
                        if con.execute(
                            "DELETE FROM kv WHERE scope = ? AND key = ? AND expires_at <= ? "
                            "RETURNING 1",
                            (scope, k, now),
                        ).fetchone()
                        is not None
                    ]
                    if still:
                        rows = [(k, "", 0) for k in still]
                        out += self._log(con, scope, len(rows), OP_EXPIRE, rows, now, touched)
                self._trim(con, touched)
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite {self.path}: {exc}") from exc
        return out


class _ReadBudget:
    """What the reads of one batch may still return: per reply, and for the batch together.

    The worker returns a batch's replies together, so without the batch budget a batch of
    ``credit`` reads just under ``max_reply_bytes`` each would hold them all at once.
    """

    __slots__ = ("per_batch", "per_reply", "room")

    def __init__(self, per_reply: int, per_batch: int) -> None:
        self.per_reply = per_reply
        self.per_batch = per_batch
        self.room = per_batch

    def limit(self) -> int:
        return min(self.per_reply, self.room)

    def spend(self, size: int) -> None:
        self.room -= size

    def refuse(self, what: str, size: int, advice: str) -> StateError:
        if self.room >= self.per_reply:
            return errors.reply_too_large(what, size, self.per_reply, advice)
        return StateError(
            errors.Code.REPLY_TOO_LARGE,
            f"the reply to {what} would pass what is left of this worker batch's "
            f"max_batch_reply_bytes ({max(self.room, 0)} of {self.per_batch} bytes; other "
            "requests in the same batch took the rest); retry shortly, or ask for less",
        )


def _op_failed(op: Op, exc: Exception) -> StateError:
    return StateError(
        errors.Code.INTERNAL,
        f"the sqlite store could not run {type(op).__name__}: {type(exc).__name__}: {exc}",
    )


def _private_files(db: Path) -> None:
    """The data directory 0700 (when we create it) and the database files 0600, before open.

    SQLite creates ``-wal`` and ``-shm`` with the permissions of the database file (os_unix.c,
    findCreateFileMode), so the database must be 0600 *before* the first connection: chmod
    after ``PRAGMA journal_mode=WAL`` left them 0644 (readable by every local user).
    """
    directory = db.parent
    if not directory.exists():
        directory.mkdir(parents=True, mode=0o700)
        directory.chmod(0o700)  # mkdir's mode is filtered by the umask
    fd = os.open(db, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm"):
        side = db.with_name(db.name + suffix)
        with contextlib.suppress(FileNotFoundError):
            side.chmod(0o600)


def _scope_exists(con: sqlite3.Connection, scope: str) -> bool:
    return con.execute("SELECT 1 FROM scopes WHERE name = ?", (scope,)).fetchone() is not None


def _revision(con: sqlite3.Connection, scope: str) -> int:
    row = con.execute("SELECT rev FROM revs WHERE scope = ?", (scope,)).fetchone()
    return int(row[0]) if row else 0
