"""The production store: Redis, one Lua script call per operation, one pipeline per batch.

Why this shape (measured, docs/state.md): a Python client pays ~100 µs per unpipelined Redis
call but ~5 µs per pipelined one, so the worker hands over everything the broker delivered and
this store sends it as ONE pipeline; each operation is ONE script call, so it is atomic and
costs one reply to parse.

Outages: any connection error marks the store unavailable and starts a reconnect loop with
backoff; until it succeeds every batch fails at once with ``StoreUnavailable`` (no waiting on
dead sockets), and ``available`` drives ``/readyz``. redis-py's own retries are disabled: a
retried pipeline could apply a write twice. The reconnect loop cannot die: whatever a connect
attempt raises is logged and retried, and a batch or probe that finds the store down with no
loop running starts one, so an outage always ends when Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import redis.asyncio as aioredis
from redis import exceptions as rexc

from plantd.common.redis_conn import RedisSetupError, RedisTarget, client_for
from plantd.common.redis_url import redact_url
from plantd.state import errors
from plantd.state import redis_scripts as lua
from plantd.state.errors import Code, StateError, StoreUnavailable
from plantd.state.limits import DEFAULT_LIMITS, Limits
from plantd.state.model import (
    OP_CREATE_SCOPE,
    OP_DELETE,
    OP_DELETE_SCOPE,
    OP_EXPIRE,
    OP_SET,
    Change,
    ChangeLog,
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

log = logging.getLogger("plantd.state.redis")

DEFAULT_PREFIX = "plantd:"

# Errors that mean "Redis is not serving us right now" (as opposed to "this command is wrong").
_DOWN = (
    rexc.ConnectionError,
    rexc.TimeoutError,
    rexc.BusyLoadingError,
    rexc.ReadOnlyError,
    OSError,
    asyncio.TimeoutError,
)
# What asyncio's transport leaks when a write meets a connection the peer already reset
# (redis-py issue 4287: TypeError/AttributeError instead of ConnectionError on CPython 3.12+).
# Raised while sending or reading on a pooled connection they mean "this connection is dead".
_TRANSPORT_LEAKS = (TypeError, AttributeError)

# (operation, its part of the script's reply) -> result. Plain functions, not a closure per
# operation: a batch builds none.
Decoder = Callable[[Any, Any], Result | StateError]


class RedisStore(Store):
    """Store on a Redis server (``redis://`` or ``rediss://`` for TLS)."""

    kind = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        limits: Limits = DEFAULT_LIMITS,
        password: str | None = None,
        password_file: Path | None = None,
        ca_file: Path | None = None,
        socket_timeout: float = 2.0,
        connect_timeout: float = 1.0,
        max_backoff: float = 2.0,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 500,
    ) -> None:
        super().__init__(limits)
        self.url = url
        self.prefix = prefix
        self.target = RedisTarget(
            url, password, password_file, ca_file, socket_timeout, connect_timeout
        )
        self._max_backoff = max_backoff
        self._client: aioredis.Redis | None = None
        self._available = False
        self._down_since: float | None = None
        self._down_reason = "not connected yet"
        self._reconnector: asyncio.Task[None] | None = None
        self._k_scopes = f"{prefix}scopes"
        self._k_revs = f"{prefix}revs"
        self._k_ttl = f"{prefix}ttl"
        self._maxlen = str(limits.history_len)
        # The batch script's first arguments: history, then the read budget (redis_scripts).
        self._argv_head = (
            self._maxlen,
            str(limits.max_reply_bytes),
            str(limits.max_batch_reply_bytes),
            str(limits.max_value_bytes),
            str(limits.max_request_bytes),
        )
        self.store_errors = 0  # batches that failed on the store (metrics read it)
        # WAIT after a batch that writes: its writes are acknowledged only once this many
        # replicas have them (the cost is one replication round trip: python -m bench.ha).
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self._wait_command = _pack(["WAIT", str(wait_replicas), str(wait_timeout_ms)])

    # ---- lifecycle ----------------------------------------------------------------------------

    def describe(self) -> str:
        wait = f" wait={self.wait_replicas}/{self.wait_timeout_ms}ms" if self.wait_replicas else ""
        return f"redis {redact_url(self.url)} prefix={self.prefix!r}{wait}"

    def _make_client(self) -> aioredis.Redis:
        try:
            return client_for(self.target)
        except RedisSetupError as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def open(self) -> None:
        """Connect once; if Redis is down, keep reconnecting in the background and return.

        The service starts unready rather than crashing: Redis may start after us.
        """
        self._client = self._make_client()
        try:
            await self._connect()
        except StoreUnavailable as exc:
            self._mark_down(str(exc))

    async def _connect(self) -> None:
        client = self._require_client()
        try:
            await client.ping()
            pipe = client.pipeline(transaction=False)
            for script in lua.SCRIPTS:
                pipe.execute_command("SCRIPT", "LOAD", script.source)
            await pipe.execute()
        except rexc.AuthenticationError as exc:  # before _DOWN: it is a ConnectionError
            raise StoreUnavailable(
                f"Redis rejected the credentials ({exc}); check the URL or password file"
            ) from exc
        except _DOWN as exc:
            raise StoreUnavailable(_describe(exc)) from exc
        except rexc.ResponseError as exc:
            raise StoreUnavailable(f"Redis refused to load scripts: {exc}") from exc
        if not self._available:
            # Idle pooled connections predate the outage and may point at a dead server.
            await client.connection_pool.disconnect(inuse_connections=False)
            if self._down_since is not None:
                log.info(
                    "redis store is back after %.1fs",
                    time.monotonic() - self._down_since,
                    extra={"store": self.describe()},
                )
            self._available = True
            self._down_since = None

    async def close(self) -> None:
        self._available = False
        client, self._client = self._client, None  # first: no reconnect loop starts again
        if self._reconnector is not None:
            self._reconnector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnector
            self._reconnector = None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()

    @property
    def available(self) -> bool:
        return self._available

    @property
    def down_reason(self) -> str:
        """Why the store is (or last was) unavailable; never holds a password."""
        return self._down_reason

    async def ping(self) -> None:
        if not self._available:
            self._ensure_reconnecting()
            raise StoreUnavailable(self._down_reason)
        try:
            await self._require_client().ping()
        except (*_DOWN, *_TRANSPORT_LEAKS) as exc:
            self._mark_down(_describe(exc))
            raise StoreUnavailable(self._down_reason) from exc

    def _require_client(self) -> aioredis.Redis:
        if self._client is None:
            raise StoreUnavailable("the store is not open")
        return self._client

    def _mark_down(self, reason: str) -> None:
        self._down_reason = f"redis {redact_url(self.url)}: {reason}"
        if self._available or self._down_since is None:
            log.warning(
                "redis store unavailable: %s; reconnecting in the background",
                reason,
                extra={"store": self.describe()},
            )
            self._down_since = time.monotonic()
        self._available = False
        self._ensure_reconnecting()

    def _ensure_reconnecting(self) -> None:
        """Start the reconnect loop unless it runs (or the store was closed)."""
        if self._client is None:
            return
        if self._reconnector is None or self._reconnector.done():
            self._reconnector = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        delay = 0.05
        while not self._available and self._client is not None:
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_backoff)
            try:
                await self._connect()
            except StoreUnavailable as exc:
                self._down_reason = f"redis {redact_url(self.url)}: {exc}"
            except Exception as exc:  # any failure to connect is retried
                # Not one of the errors we know (a transport leak, a client bug): the loop
                # must outlive it, or the store would stay down after Redis is back.
                reason = f"{type(exc).__name__}: {exc}"
                if not self._down_reason.endswith(reason):
                    log.warning("redis reconnect failed unexpectedly: %s; retrying", reason)
                self._down_reason = f"redis {redact_url(self.url)}: {reason}"

    # ---- batches ------------------------------------------------------------------------------

    def _scope_keys(self, scope: str) -> list[str]:
        base = f"{self.prefix}s:{scope}:"
        return [base + "d", base + "v", base + "x", base + "log"]

    async def execute(self, ops: Sequence[Op]) -> list[Result | StateError]:
        if not self._available:
            self._ensure_reconnecting()
            raise StoreUnavailable(self._down_reason)
        keys = [self._k_scopes, self._k_revs, self._k_ttl]
        slots: dict[str, str] = {}
        argv: list[str] = [*self._argv_head]
        decoders: list[Decoder] = []
        writes = False
        for op in ops:
            encoder = _ENCODERS.get(op.__class__)
            if encoder is None:
                raise StateError(Code.INTERNAL, f"redis store cannot run {type(op).__name__}")
            code, scope, args, decode = encoder(op)
            slot = "0"
            if code not in _UNSCOPED:
                slot = slots.get(scope, "")
                if not slot:
                    slot = slots[scope] = str(len(slots) + 1)
                    keys += self._scope_keys(scope)
            argv += (code, slot, scope, str(len(args)))
            argv += args
            decoders.append(decode)
            writes = writes or op.__class__ in _WRITES
        commands = [_pack(["EVALSHA", lua.BATCH.sha, str(len(keys)), *keys, *argv])]
        wait = self.wait_replicas > 0 and writes
        if wait:
            commands.append(self._wait_command)  # same send: no extra round trip to Redis
        try:
            reply, *waited = await self._run(commands)
            if isinstance(reply, rexc.ResponseError):
                raise reply
        except rexc.ResponseError as exc:
            # The whole batch was refused (OOM, ACL, or a bug in the script): say so per op.
            log.error("redis refused a batch: %s", exc, extra={"operations": len(ops)})
            return [_response_error(exc) for _ in ops]
        out: list[Result | StateError] = []
        for decode, op, part in zip(decoders, ops, reply, strict=True):
            try:
                out.append(decode(op, part))
            except StateError as err:
                out.append(err)
            except _Refused as big:
                out.append(big.error(op, self.limits))
        if wait:
            self._check_replicated(ops, out, waited[0])
        return out

    def _check_replicated(
        self, ops: Sequence[Op], out: list[Result | StateError], got: Any
    ) -> None:
        """Turn each write's success into NOT_REPLICATED when WAIT counted too few replicas."""
        replicas = got if isinstance(got, int) else 0  # an error reply confirms nothing
        if replicas >= self.wait_replicas:
            return
        for i, (op, res) in enumerate(zip(ops, out, strict=True)):
            if op.__class__ in _WRITES and not isinstance(res, StateError):
                changes: tuple[Change, ...] = getattr(res, "changes", ())
                out[i] = errors.not_replicated(
                    replicas, self.wait_replicas, self.wait_timeout_ms, changes
                )

    async def _run(self, commands: list[bytes]) -> list[Any]:
        """Send packed commands on one connection; their replies, in order.

        Re-sends once if Redis lost its script cache (restart): NOSCRIPT means nothing ran.
        Raises ``StoreUnavailable`` (connection trouble) or ``ResponseError`` (refused).
        """
        try:
            try:
                return await self._exchange(commands)
            except rexc.NoScriptError:
                await self._connect()
                return await self._exchange(commands)
        except _DOWN as exc:
            self.store_errors += 1
            self._mark_down(_describe(exc))
            raise StoreUnavailable(self._down_reason) from exc
        except StoreUnavailable as exc:
            self.store_errors += 1
            self._mark_down(str(exc))
            raise

    async def _exchange(self, commands: list[bytes]) -> list[Any]:
        pool = self._require_client().connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        replies: list[Any] = []
        error: rexc.ResponseError | None = None
        try:
            await conn.send_packed_command(b"".join(commands))
            for _ in commands:
                try:
                    replies.append(await conn.read_response())
                except rexc.ResponseError as exc:  # the connection stays in step
                    error = error or exc
                    replies.append(exc)
        except _TRANSPORT_LEAKS as exc:
            await conn.disconnect()
            raise rexc.ConnectionError(f"connection broken ({type(exc).__name__}: {exc})") from exc
        except BaseException:
            # A half-read reply would desynchronise the connection: drop it.
            await conn.disconnect()
            raise
        finally:
            await pool.release(conn)
        if error is not None and (len(commands) == 1 or isinstance(error, rexc.NoScriptError)):
            raise error  # one send holds one script: NOSCRIPT means none of it ran
        return replies

    # ---- expiry -------------------------------------------------------------------------------

    async def sweep_expired(self, max_keys: int = 1000) -> list[Change]:
        if not self._available:
            self._ensure_reconnecting()
            return []
        client = self._require_client()
        # Scopes whose earliest expiry is due by our clock (+1 s for skew; the script
        # decides with Redis's clock, so an early call only costs one cheap script run).
        horizon = time.time_ns() // 1_000_000 + 1000
        try:
            found = await client.zrangebyscore(self._k_ttl, "-inf", horizon, start=0, num=20)
        except _DOWN as exc:
            self._mark_down(_describe(exc))
            return []
        due = [str(s) for s in found]
        if not due:
            return []
        keys = [self._k_scopes, self._k_revs, self._k_ttl]
        commands = [
            _pack(
                [
                    "EVALSHA",
                    lua.SWEEP.sha,
                    "7",
                    *keys,
                    *self._scope_keys(scope),
                    scope,
                    self._maxlen,
                    str(max_keys),
                ]
            )
            for scope in due
        ]
        try:
            replies = await self._run(commands)
        except rexc.ResponseError as exc:
            log.warning("expiry sweep failed: %s", exc)
            return []
        out: list[Change] = []
        for scope, reply in zip(due, replies, strict=True):
            if isinstance(reply, Exception):
                log.warning("expiry sweep of scope %r failed: %s", scope, reply)
                continue
            keys_gone, first, now = reply[0], int(reply[1]), int(reply[2])
            out += [
                Change(scope, OP_EXPIRE, k, "", 0, first + i, now) for i, k in enumerate(keys_gone)
            ]
        return out


def _pack(args: Sequence[str]) -> bytes:
    """One command in RESP (what redis-py's pack_command does, minus its per-argument cost).

    Built as one str and encoded once; a bulk length is the UTF-8 size, which for the usual
    ASCII argument is its ``len`` (checked in C by ``isascii``).
    """
    out = [f"*{len(args)}\r\n"]
    for a in args:
        out += ("$", str(len(a) if a.isascii() else len(a.encode())), "\r\n", a, "\r\n")
    return "".join(out).encode()


# Operations the batch script runs without a scope slot.
_UNSCOPED: Final = frozenset((lua.OP_SCOPES, lua.OP_EXISTS))
# Operations that change the store: what WAIT (``wait_replicas``) must confirm.
_WRITES: Final = frozenset((Set, Delete, CreateScope, DeleteScope))

Encoded = tuple[str, str, Sequence[str], Decoder]


def _enc_get(op: Get) -> Encoded:
    return lua.OP_GET, op.scope, op.keys, _decode_get


def _enc_set(op: Set) -> Encoded:
    args = ["1" if op.create else "0"]
    for it in op.items:
        args += (
            it.key,
            it.value,
            "" if it.ttl_ms is None else str(it.ttl_ms),
            "" if it.if_version is None else str(it.if_version),
        )
    return lua.OP_SET, op.scope, args, _decode_set


def _enc_delete(op: Delete) -> Encoded:
    args: list[str] = []
    for d in op.items:
        args += (d.key, "" if d.if_version is None else str(d.if_version))
    return lua.OP_DELETE, op.scope, args, _decode_delete


def _enc_changes(op: ChangesSince) -> Encoded:
    args = [str(op.revision), str(op.limit + 1)]
    return lua.OP_CHANGES, op.scope, args, _decode_changes


# Dispatch on the exact type: a `match` over ten classes costs several isinstance calls per op.
_ENCODERS: dict[type, Callable[[Any], Encoded]] = {
    Get: _enc_get,
    Set: _enc_set,
    Delete: _enc_delete,
    CreateScope: lambda op: (lua.OP_CREATE_SCOPE, op.scope, (), _decode_create_scope),
    DeleteScope: lambda op: (lua.OP_DELETE_SCOPE, op.scope, (), _decode_delete_scope),
    ListKeys: lambda op: (lua.OP_READ_ALL, op.scope, ("0",), _decode_list_keys),
    Snapshot: lambda op: (lua.OP_READ_ALL, op.scope, ("1", str(op.limit)), _decode_snapshot),
    ChangesSince: _enc_changes,
    ListScopes: lambda op: (lua.OP_SCOPES, "", (), _decode_scopes),
    ScopeExists: lambda op: (lua.OP_EXISTS, op.scope, (), _decode_exists),
}


# ---- reply decoding (pure) ---------------------------------------------------------------------


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _response_error(exc: rexc.ResponseError) -> StateError:
    # e.g. OOM, a script bug, or ACL denial: the store refused this one command.
    return StateError(Code.STORE_UNAVAILABLE, f"redis refused the operation: {exc}")


def _check(reply: Any, scope: str) -> None:
    """Raise the StateError a script signalled with its first element."""
    if isinstance(reply, list) and reply and reply[0] != "OK":
        tag = reply[0]
        if tag == "SCOPE_NOT_FOUND":
            raise errors.scope_not_found(scope)
        if tag == "SCOPE_EXISTS":
            raise errors.scope_exists(scope)
        if tag == "CONFLICT":
            lost = reply[1]
            raise errors.conflict(
                scope,
                [(lost[i], int(lost[i + 1]), int(lost[i + 2])) for i in range(0, len(lost), 3)],
            )
        raise StateError(Code.INTERNAL, f"unexpected store reply {tag!r}")


class _Refused(Exception):
    """The script stopped a read at the budget: ``{'TOO_LARGE', size, room}``.

    Raised by a decoder (which does not know the limits); ``execute`` turns it into the
    same REPLY_TOO_LARGE error the embedded store gives.
    """

    def __init__(self, size: int, room: int) -> None:
        super().__init__(size, room)
        self.size = size
        self.room = room

    def error(self, op: Op, limits: Limits) -> StateError:
        if isinstance(op, Snapshot):
            what, advice = f"snapshot of scope {op.scope[:80]!r}", errors.SNAPSHOT_ADVICE
        elif isinstance(op, Get) and len(op.keys) > 1:
            what, advice = f"batch-get of {len(op.keys)} keys", "ask for fewer keys per request"
        else:
            what, advice = "state-get", "the value is too big to send"
        if self.room >= limits.max_reply_bytes:
            return errors.reply_too_large(what, self.size, limits.max_reply_bytes, advice)
        return StateError(
            Code.REPLY_TOO_LARGE,
            f"the reply to {what} would pass what is left of this worker batch's "
            f"max_batch_reply_bytes ({max(self.room, 0)} of {limits.max_batch_reply_bytes} "
            "bytes; other requests in the same batch took the rest); retry shortly, or ask "
            "for less",
        )


def _refused(reply: Any) -> None:
    if reply[0] == "TOO_LARGE":
        raise _Refused(int(reply[1]), int(reply[2]))


def _exp(raw: Any) -> int | None:
    return None if raw is None else int(float(raw))


def _decode_get(op: Get, reply: Any) -> Result:
    if reply == 0:
        raise errors.scope_not_found(op.scope)
    _refused(reply)
    vals, vers, exps = reply
    # List comprehensions: a generator into tuple() costs a frame switch per key.
    if not exps:  # the scope has no TTLs: the common, cheap case
        return GetResult(
            tuple(
                [None if v is None else Entry(v, int(n)) for v, n in zip(vals, vers, strict=True)]
            )
        )
    return GetResult(
        tuple(
            [
                None if v is None else Entry(v, int(n), None if x is None else int(float(x)))
                for v, n, x in zip(vals, vers, exps, strict=True)
            ]
        )
    )


def _decode_set(op: Set, reply: Any) -> Result:
    _check(reply, op.scope)
    first, now, created = int(reply[1]), int(reply[2]), reply[3] == 1
    changes: list[Change] = []
    if created:
        changes.append(Change(op.scope, OP_CREATE_SCOPE, "", "", 0, first - 1, now))
    changes += [
        Change(op.scope, OP_SET, it.key, it.value, first + i, first + i, now)
        for i, it in enumerate(op.items)
    ]
    return SetResult(
        versions=tuple(range(first, first + len(op.items))),
        revision=first + len(op.items) - 1,
        created_scope=created,
        ts=now,
        changes=tuple(changes),
    )


def _decode_delete(op: Delete, reply: Any) -> Result:
    _check(reply, op.scope)
    found = tuple(f == 1 for f in reply[1])
    revision, now = int(reply[2]), int(reply[3])
    gone = [k for k in dict.fromkeys(it.key for it, f in zip(op.items, found, strict=True) if f)]
    first = revision - len(gone) + 1
    changes = tuple(
        Change(op.scope, OP_DELETE, k, "", 0, first + i, now) for i, k in enumerate(gone)
    )
    return DeleteResult(found=found, revision=revision, changes=changes)


def _decode_scope(scope: str, op: str, reply: Any) -> Result:
    _check(reply, scope)
    rev, now = int(reply[1]), int(reply[2])
    return ScopeResult(revision=rev, changes=(Change(scope, change_op(op), "", "", 0, rev, now),))


def _decode_create_scope(op: CreateScope, reply: Any) -> Result:
    return _decode_scope(op.scope, OP_CREATE_SCOPE, reply)


def _decode_delete_scope(op: DeleteScope, reply: Any) -> Result:
    return _decode_scope(op.scope, OP_DELETE_SCOPE, reply)


def _decode_list_keys(op: ListKeys, reply: Any) -> Result:
    _check(reply, op.scope)
    expired = set(reply[1])
    start, strict = (
        (op.cursor, True) if op.cursor and op.cursor >= op.prefix else (op.prefix, False)
    )
    keys = sorted(
        k
        for k in reply[3]
        if k not in expired and k.startswith(op.prefix) and (k > start if strict else k >= start)
    )
    more = len(keys) > op.limit
    page = keys[: op.limit]
    return KeyList(keys=tuple(page), next_cursor=page[-1] if more and page else "")


def _decode_snapshot(op: Snapshot, reply: Any) -> Result:
    _refused(reply)
    _check(reply, op.scope)
    rev, truncated, keys, vals, vers, exps = reply[1:]
    if not exps:
        exps = [None] * len(keys)
    items = sorted(zip(keys, vals, vers, exps, strict=True))
    return SnapshotResult(
        revision=int(rev),
        items=tuple((k, Entry(v, int(n or 0), _exp(x))) for k, v, n, x in items),
        truncated=truncated == 1,
    )


def _entry_changes(scope: str, entry_id: str, fields: list[str]) -> list[Change]:
    """The changes one history entry holds (see redis_scripts: one entry per operation)."""
    last = int(entry_id.partition("-")[0])
    kind, n, ts = change_op(fields[1]), int(fields[3]), int(fields[5])
    first = last - n + 1
    if kind in (OP_CREATE_SCOPE, OP_DELETE_SCOPE):
        return [Change(scope, kind, "", "", 0, last, ts)]
    out: list[Change] = []
    rest = fields[6:]
    i = 0
    while i < len(rest):
        key = rest[i + 1]
        if kind == OP_SET:
            rev = first + len(out)
            out.append(Change(scope, kind, key, rest[i + 3], rev, rev, ts))
            i += 4
        else:
            out.append(Change(scope, kind, key, "", 0, first + len(out), ts))
            i += 2
    return out


def _decode_changes(op: ChangesSince, reply: Any) -> Result:
    current, oldest, entries = int(reply[0]), int(reply[1]), reply[2]
    at_budget = reply[3] == 1  # the script ended the page at the read budget
    if history_compacted(op.revision, current, oldest):
        return ChangeLog(current, (), compacted=True, oldest=oldest, more=False)
    changes = [
        c
        for entry_id, fields in entries
        for c in _entry_changes(op.scope, entry_id, fields)
        if c.revision > op.revision
    ]
    return ChangeLog(
        current,
        tuple(changes[: op.limit]),
        compacted=False,
        oldest=oldest,
        more=at_budget or len(changes) > op.limit,
    )


def _decode_scopes(op: ListScopes, reply: Any) -> Result:
    return ScopeList(scopes=tuple(sorted(reply)))


def _decode_exists(op: ScopeExists, reply: Any) -> Result:
    return ExistsResult(exists=bool(reply))


__all__ = ["DEFAULT_PREFIX", "RedisStore", "redact_url"]
