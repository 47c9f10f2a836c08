"""The embedded identity store: one SQLite file (0600, in a 0700 directory), WAL.

Several replicas on one machine may share the file: every write is one ``BEGIN IMMEDIATE``
transaction (SQLite's write lock), so the conditional writes in :mod:`plantd.identity.store`
are atomic across processes too. All calls run on one thread of our own (the loop never
blocks on the disk); the connection lives on that thread.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from plantd.identity import records
from plantd.identity.errors import Conflict, NotFound
from plantd.identity.model import Module, Organization, RefreshRecord, Role, Rotation, User
from plantd.identity.store import Store
from plantd.identity.throttle import Backoff, Bucket, take

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL UNIQUE, email TEXT NOT NULL UNIQUE, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS roles (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE,
    doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS orgs (id INTEGER PRIMARY KEY AUTOINCREMENT, slug TEXT NOT NULL UNIQUE,
    doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS user_roles (user_id INTEGER NOT NULL, role_id INTEGER NOT NULL,
    org_id INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (user_id, role_id, org_id));
CREATE TABLE IF NOT EXISTS user_orgs (user_id INTEGER NOT NULL, org_id INTEGER NOT NULL,
    PRIMARY KEY (user_id, org_id));
CREATE TABLE IF NOT EXISTS refresh (hash TEXT PRIMARY KEY, family TEXT NOT NULL,
    user_id TEXT NOT NULL, audience TEXT NOT NULL, created REAL NOT NULL, expires REAL NOT NULL,
    rotated_to TEXT, revoked INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS refresh_family ON refresh (family);
CREATE INDEX IF NOT EXISTS refresh_user ON refresh (user_id);
CREATE TABLE IF NOT EXISTS not_before (user_id TEXT PRIMARY KEY, ts REAL NOT NULL);
CREATE TABLE IF NOT EXISTS buckets (key TEXT PRIMARY KEY, tokens REAL NOT NULL,
    updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS failures (key TEXT PRIMARY KEY, count INTEGER NOT NULL,
    last REAL NOT NULL);
CREATE TABLE IF NOT EXISTS totp_steps (user_id INTEGER PRIMARY KEY, last INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS modules (name TEXT PRIMARY KEY, public_key TEXT NOT NULL UNIQUE,
    doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS join_tokens (hash TEXT PRIMARY KEY, grant_doc TEXT NOT NULL,
    expires REAL NOT NULL);
"""

_USER_FIELDS = records.USER_FIELDS
_ROLE_FIELDS = records.ROLE_FIELDS
_ORG_FIELDS = records.ORG_FIELDS
# Rows are (id, doc): the id lives in its column only, the rest in the JSON document.


def _user(row: Any) -> User:
    return records.user_from(row[0], row[1])


def _role(row: Any) -> Role:
    return records.role_from(row[0], row[1])


def _org(row: Any) -> Organization:
    return records.org_from(row[0], row[1])


_doc = records.encode


class SqliteStore(Store):
    kind = "sqlite"

    def __init__(self, data_dir: Path, *, busy_timeout_ms: int = 5000) -> None:
        self.data_dir = data_dir
        self.path = data_dir / "identity.db"
        self.busy_timeout_ms = busy_timeout_ms
        self._db: sqlite3.Connection | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="identity-db")
        self._ok = False

    def describe(self) -> str:
        return f"sqlite:{self.path}"

    @property
    def available(self) -> bool:
        return self._ok

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # ---- lifecycle ------------------------------------------------------------------------------

    def _open(self) -> None:
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        if not self.path.exists():  # create it 0600 before SQLite does (umask-independent);
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))  # -wal/-shm copy it
        os.chmod(self.path, 0o600)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        db.executescript(SCHEMA)
        self._db = db
        self._ok = True

    async def open(self) -> None:
        await self._run(self._open)

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        self._ok = False

    async def close(self) -> None:
        await self._run(self._close)
        self._pool.shutdown(wait=True)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = self._db
        assert db is not None, "store not open"
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _one(self, sql: str, *args: Any) -> Any:
        assert self._db is not None, "store not open"
        return self._db.execute(sql, args).fetchone()

    def _all(self, sql: str, *args: Any) -> list[Any]:
        assert self._db is not None, "store not open"
        return self._db.execute(sql, args).fetchall()

    # ---- users ----------------------------------------------------------------------------------

    def _fill(self, u: User) -> User:
        u.roles = [r.name for r in self._user_roles(u.id)]
        u.organizations = [o.slug for o in self._user_orgs(u.id)]
        return u

    def _user_roles(self, user_id: int) -> list[Role]:
        rows = self._all(
            "SELECT DISTINCT r.id, r.doc FROM user_roles ur JOIN roles r ON r.id = ur.role_id "
            "WHERE ur.user_id = ? ORDER BY r.name",
            user_id,
        )
        return [_role(r) for r in rows]

    def _user_orgs(self, user_id: int) -> list[Organization]:
        rows = self._all(
            "SELECT o.id, o.doc FROM user_orgs uo JOIN orgs o ON o.id = uo.org_id "
            "WHERE uo.user_id = ? ORDER BY o.slug",
            user_id,
        )
        return [_org(r) for r in rows]

    async def user_roles(self, user_id: int) -> list[Role]:
        return await self._run(self._user_roles, user_id)

    async def user_orgs(self, user_id: int) -> list[Organization]:
        return await self._run(self._user_orgs, user_id)

    @staticmethod
    def _conflict(exc: sqlite3.IntegrityError) -> Conflict:
        text = str(exc)
        what = next((w for w in ("username", "email", "name", "slug") if f".{w}" in text), "record")
        return Conflict(f"{what} already exists")

    def _create_user(self, u: User) -> User:
        try:
            with self._tx() as db:
                cur = db.execute(
                    "INSERT INTO users (username, email, doc) VALUES (?, ?, ?)",
                    (u.username.lower(), u.email.lower(), _doc(u)),
                )
                u.id = int(cur.lastrowid or 0)
        except sqlite3.IntegrityError as exc:
            raise self._conflict(exc) from None
        return self._fill(u)

    async def create_user(self, user: User) -> User:
        return await self._run(self._create_user, user)

    def _get_user(self, user_id: int, username: str, email: str) -> User | None:
        if user_id:
            row = self._one("SELECT id, doc FROM users WHERE id = ?", user_id)
        elif username:
            row = self._one("SELECT id, doc FROM users WHERE username = ?", username.lower())
        elif email:
            row = self._one("SELECT id, doc FROM users WHERE email = ?", email.lower())
        else:
            return None
        return self._fill(_user(row)) if row else None

    async def get_user(
        self, *, user_id: int = 0, username: str = "", email: str = ""
    ) -> User | None:
        return await self._run(self._get_user, user_id, username, email)

    def _find_login(self, identifier: str) -> User | None:
        ident = identifier.lower()
        row = self._one("SELECT id, doc FROM users WHERE username = ? OR email = ?", ident, ident)
        return self._fill(_user(row)) if row else None

    async def find_login(self, identifier: str) -> User | None:
        return await self._run(self._find_login, identifier)

    def _update_user(self, user_id: int, changes: dict[str, Any]) -> User:
        try:
            with self._tx() as db:
                row = db.execute("SELECT id, doc FROM users WHERE id = ?", (user_id,)).fetchone()
                if row is None:
                    raise NotFound("user not found")
                u = _user(row)
                for k, v in changes.items():
                    if k not in _USER_FIELDS:
                        raise ValueError(f"not a user field: {k}")
                    setattr(u, k, v)
                db.execute(
                    "UPDATE users SET username = ?, email = ?, doc = ? WHERE id = ?",
                    (u.username.lower(), u.email.lower(), _doc(u), user_id),
                )
        except sqlite3.IntegrityError as exc:
            raise self._conflict(exc) from None
        return self._fill(u)

    async def update_user(self, user_id: int, changes: dict[str, Any]) -> User:
        return await self._run(self._update_user, user_id, changes)

    def _delete_user(self, user_id: int) -> bool:
        with self._tx() as db:
            n = db.execute("DELETE FROM users WHERE id = ?", (user_id,)).rowcount
            db.execute("DELETE FROM user_roles WHERE user_id = ?", (user_id,))
            db.execute("DELETE FROM user_orgs WHERE user_id = ?", (user_id,))
            db.execute("UPDATE refresh SET revoked = 1 WHERE user_id = ?", (str(user_id),))
        return bool(n)

    async def delete_user(self, user_id: int) -> bool:
        return await self._run(self._delete_user, user_id)

    def _list_users(self, offset: int, limit: int) -> tuple[list[User], int]:
        rows = self._all("SELECT id, doc FROM users ORDER BY id LIMIT ? OFFSET ?", limit, offset)
        total = self._one("SELECT count(*) FROM users")[0]
        return [self._fill(_user(r)) for r in rows], int(total)

    async def list_users(self, offset: int, limit: int) -> tuple[list[User], int]:
        return await self._run(self._list_users, offset, limit)

    async def count_users(self) -> int:
        return int((await self._run(self._one, "SELECT count(*) FROM users"))[0])

    # ---- roles and organizations ----------------------------------------------------------------

    def _insert(self, table: str, unique: str, obj: Role | Organization) -> None:
        key = obj.name if isinstance(obj, Role) else obj.slug
        try:
            with self._tx() as db:
                cur = db.execute(
                    f"INSERT INTO {table} ({unique}, doc) VALUES (?, ?)",  # noqa: S608
                    (key, _doc(obj)),
                )
                obj.id = int(cur.lastrowid or 0)
        except sqlite3.IntegrityError:
            raise Conflict(f"{unique} {key!r} already exists") from None

    async def create_role(self, role: Role) -> Role:
        await self._run(self._insert, "roles", "name", role)
        return role

    async def create_org(self, org: Organization) -> Organization:
        await self._run(self._insert, "orgs", "slug", org)
        return org

    async def get_role(self, *, role_id: int = 0, name: str = "") -> Role | None:
        col, val = ("id", role_id) if role_id else ("name", name)
        row = await self._run(self._one, f"SELECT id, doc FROM roles WHERE {col} = ?", val)  # noqa: S608
        return _role(row) if row else None

    async def get_org(self, *, org_id: int = 0, slug: str = "") -> Organization | None:
        col, val = ("id", org_id) if org_id else ("slug", slug)
        row = await self._run(self._one, f"SELECT id, doc FROM orgs WHERE {col} = ?", val)  # noqa: S608
        return _org(row) if row else None

    def _update_doc(self, table: str, unique: str, obj_id: int, changes: dict[str, Any]) -> Any:
        make: Callable[[Any], Any] = _role if table == "roles" else _org
        allowed = _ROLE_FIELDS if table == "roles" else _ORG_FIELDS
        try:
            with self._tx() as db:
                row = db.execute(
                    f"SELECT id, doc FROM {table} WHERE id = ?",  # noqa: S608
                    (obj_id,),
                ).fetchone()
                if row is None:
                    raise NotFound(f"{table[:-1]} not found")
                obj = make(row)
                for k, v in changes.items():
                    if k not in allowed:
                        raise ValueError(f"not a field: {k}")
                    setattr(obj, k, v)
                db.execute(
                    f"UPDATE {table} SET {unique} = ?, doc = ? WHERE id = ?",  # noqa: S608
                    (getattr(obj, unique), _doc(obj), obj_id),
                )
        except sqlite3.IntegrityError:
            raise Conflict(f"{unique} already exists") from None
        return obj

    async def update_role(self, role_id: int, changes: dict[str, Any]) -> Role:
        role: Role = await self._run(self._update_doc, "roles", "name", role_id, changes)
        return role

    async def update_org(self, org_id: int, changes: dict[str, Any]) -> Organization:
        org: Organization = await self._run(self._update_doc, "orgs", "slug", org_id, changes)
        return org

    def _delete_doc(self, table: str, link: str, col: str, obj_id: int) -> bool:
        with self._tx() as db:
            n = db.execute(f"DELETE FROM {table} WHERE id = ?", (obj_id,)).rowcount  # noqa: S608
            db.execute(f"DELETE FROM {link} WHERE {col} = ?", (obj_id,))  # noqa: S608
        return bool(n)

    async def delete_role(self, role_id: int) -> bool:
        return await self._run(self._delete_doc, "roles", "user_roles", "role_id", role_id)

    async def delete_org(self, org_id: int) -> bool:
        return await self._run(self._delete_doc, "orgs", "user_orgs", "org_id", org_id)

    def _list_docs(self, table: str, offset: int, limit: int) -> tuple[list[Any], int]:
        make: Callable[[Any], Any] = _role if table == "roles" else _org
        rows = self._all(
            f"SELECT id, doc FROM {table} ORDER BY id LIMIT ? OFFSET ?",  # noqa: S608
            limit,
            offset,
        )
        total = self._one(f"SELECT count(*) FROM {table}")[0]  # noqa: S608
        return [make(r) for r in rows], int(total)

    async def list_roles(self, offset: int, limit: int) -> tuple[list[Role], int]:
        out: tuple[list[Role], int] = await self._run(self._list_docs, "roles", offset, limit)
        return out

    async def list_orgs(self, offset: int, limit: int) -> tuple[list[Organization], int]:
        out: tuple[list[Organization], int] = await self._run(
            self._list_docs, "orgs", offset, limit
        )
        return out

    def _assign(self, kind: str, user_id: int, target_id: int, org_id: int, add: bool) -> bool:
        table, target = ("user_roles", "roles") if kind == "role" else ("user_orgs", "orgs")
        with self._tx() as db:
            if db.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone() is None:
                raise NotFound("user not found")
            exists = db.execute(
                f"SELECT 1 FROM {target} WHERE id = ?",  # noqa: S608
                (target_id,),
            ).fetchone()
            if exists is None:
                raise NotFound(f"{kind} not found")
            if kind == "role":
                args: tuple[int, ...] = (user_id, target_id, org_id)
                cols, marks = "user_id, role_id, org_id", "?, ?, ?"
                where = "user_id = ? AND role_id = ? AND org_id = ?"
            else:
                args, cols, marks = (user_id, target_id), "user_id, org_id", "?, ?"
                where = "user_id = ? AND org_id = ?"
            if add:
                sql = f"INSERT OR IGNORE INTO {table} ({cols}) VALUES ({marks})"  # noqa: S608
            else:
                sql = f"DELETE FROM {table} WHERE {where}"  # noqa: S608
            return bool(db.execute(sql, args).rowcount)

    async def assign(self, kind: str, user_id: int, target_id: int, org_id: int = 0) -> bool:
        return await self._run(self._assign, kind, user_id, target_id, org_id, True)

    async def unassign(self, kind: str, user_id: int, target_id: int, org_id: int = 0) -> bool:
        return await self._run(self._assign, kind, user_id, target_id, org_id, False)

    # ---- sessions -------------------------------------------------------------------------------

    def _add_refresh(self, r: RefreshRecord) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO refresh (hash, family, user_id, audience, created, expires) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (r.hash, r.family, r.user_id, ",".join(r.audience), r.created, r.expires),
            )
            # Housekeeping in the same write: tokens past expiry are useless.
            db.execute("DELETE FROM refresh WHERE expires < ?", (r.created - 86400,))

    async def add_refresh(self, record: RefreshRecord) -> None:
        await self._run(self._add_refresh, record)

    def _rotate(self, old_hash: str, new: RefreshRecord, now: float) -> Rotation:
        with self._tx() as db:
            row = db.execute(
                "SELECT family, user_id, audience, created, expires, rotated_to, revoked "
                "FROM refresh WHERE hash = ?",
                (old_hash,),
            ).fetchone()
            if row is None:
                return Rotation("unknown")
            family, user_id, aud, created, expires, rotated_to, revoked = row
            old = RefreshRecord(old_hash, family, user_id, tuple(aud.split(",")), created, expires)
            if rotated_to is not None or revoked:
                # Reuse of a rotated (or revoked) token: someone holds a copy. RFC 9700 §4.14.2:
                # revoke the whole family, the legitimate holder logs in again.
                db.execute("UPDATE refresh SET revoked = 1 WHERE family = ?", (family,))
                return Rotation("reused" if rotated_to is not None else "revoked", old)
            if expires <= now:
                return Rotation("expired", old)
            # The one conditional write: only the first of two concurrent refreshes matches.
            n = db.execute(
                "UPDATE refresh SET rotated_to = ? WHERE hash = ? AND rotated_to IS NULL "
                "AND revoked = 0",
                (new.hash, old_hash),
            ).rowcount
            if n != 1:
                db.execute("UPDATE refresh SET revoked = 1 WHERE family = ?", (family,))
                return Rotation("reused", old)
            db.execute(
                "INSERT INTO refresh (hash, family, user_id, audience, created, expires) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (new.hash, family, user_id, aud, new.created, new.expires),
            )
        return Rotation("rotated", old)

    async def rotate_refresh(self, old_hash: str, new: RefreshRecord, now: float) -> Rotation:
        return await self._run(self._rotate, old_hash, new, now)

    def _revoke_user(self, subject: str) -> int:
        with self._tx() as db:
            return int(
                db.execute(
                    "UPDATE refresh SET revoked = 1 WHERE user_id = ? AND revoked = 0", (subject,)
                ).rowcount
            )

    async def revoke_refresh_user(self, subject: str) -> int:
        return await self._run(self._revoke_user, subject)

    def _bump(self, user_id: str, ts: float) -> float:
        with self._tx() as db:
            db.execute(
                "INSERT INTO not_before (user_id, ts) VALUES (?, ?) ON CONFLICT (user_id) "
                "DO UPDATE SET ts = max(ts, excluded.ts)",
                (user_id, ts),
            )
            return float(
                db.execute("SELECT ts FROM not_before WHERE user_id = ?", (user_id,)).fetchone()[0]
            )

    async def bump_not_before(self, subject: str, ts: float) -> float:
        return await self._run(self._bump, subject, ts)

    async def get_not_before(self, subject: str) -> float:
        row = await self._run(self._one, "SELECT ts FROM not_before WHERE user_id = ?", subject)
        return float(row[0]) if row else 0.0

    async def recent_not_before(self, since: float) -> list[tuple[str, float]]:
        rows = await self._run(
            self._all, "SELECT user_id, ts FROM not_before WHERE ts >= ? ORDER BY ts", since
        )
        return [(str(r[0]), float(r[1])) for r in rows]

    # ---- brute force ----------------------------------------------------------------------------

    def _take(self, key: str, bucket: Bucket, now: float) -> tuple[bool, float]:
        with self._tx() as db:
            row = db.execute("SELECT tokens, updated FROM buckets WHERE key = ?", (key,)).fetchone()
            tokens, updated = (row[0], row[1]) if row else (bucket.capacity, now)
            ok, left, retry = take(bucket, tokens, updated, now)
            db.execute(
                "INSERT INTO buckets (key, tokens, updated) VALUES (?, ?, ?) ON CONFLICT (key) "
                "DO UPDATE SET tokens = excluded.tokens, updated = excluded.updated",
                (key, left, now),
            )
        return ok, retry

    async def take_token(self, key: str, bucket: Bucket, now: float) -> tuple[bool, float]:
        return await self._run(self._take, key, bucket, now)

    async def failures(self, key: str) -> tuple[int, float]:
        row = await self._run(self._one, "SELECT count, last FROM failures WHERE key = ?", key)
        return (int(row[0]), float(row[1])) if row else (0, 0.0)

    def _fail(self, key: str, now: float) -> int:
        with self._tx() as db:
            db.execute(
                "INSERT INTO failures (key, count, last) VALUES (?, 1, ?) ON CONFLICT (key) "
                "DO UPDATE SET count = count + 1, last = excluded.last",
                (key, now),
            )
            return int(db.execute("SELECT count FROM failures WHERE key = ?", (key,)).fetchone()[0])

    async def record_failure(self, key: str, now: float) -> int:
        return await self._run(self._fail, key, now)

    def _begin(self, key: str, backoff: Backoff, now: float, critical: bool) -> float:
        with self._tx() as db:
            row = db.execute("SELECT count, last FROM failures WHERE key = ?", (key,)).fetchone()
            count, last = (int(row[0]), float(row[1])) if row else (0, 0.0)
            wait = backoff.wait(count, last, now, critical=critical)
            if wait > 0:
                return wait
            db.execute(
                "INSERT INTO failures (key, count, last) VALUES (?, 1, ?) ON CONFLICT (key) "
                "DO UPDATE SET count = count + 1, last = excluded.last",
                (key, now),
            )
        return 0.0

    async def begin_attempt(
        self, key: str, backoff: Backoff, now: float, *, critical: bool
    ) -> float:
        return await self._run(self._begin, key, backoff, now, critical)

    def _clear(self, key: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM failures WHERE key = ?", (key,))

    async def clear_failures(self, key: str) -> None:
        await self._run(self._clear, key)

    def _accept_step(self, user_id: int, step: int) -> bool:
        with self._tx() as db:
            row = db.execute("SELECT last FROM totp_steps WHERE user_id = ?", (user_id,)).fetchone()
            if row is not None and int(row[0]) >= step:
                return False
            db.execute(
                "INSERT INTO totp_steps (user_id, last) VALUES (?, ?) ON CONFLICT (user_id) "
                "DO UPDATE SET last = excluded.last",
                (user_id, step),
            )
        return True

    async def accept_totp_step(self, user_id: int, step: int) -> bool:
        return await self._run(self._accept_step, user_id, step)

    async def get_meta(self, key: str) -> str | None:
        row = await self._run(self._one, "SELECT value FROM meta WHERE key = ?", key)
        return str(row[0]) if row else None

    def _set_meta(self, key: str, value: str | None) -> None:
        with self._tx() as db:
            if value is None:
                db.execute("DELETE FROM meta WHERE key = ?", (key,))
            else:
                db.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) "
                    "DO UPDATE SET value = excluded.value",
                    (key, value),
                )

    async def set_meta(self, key: str, value: str | None) -> None:
        await self._run(self._set_meta, key, value)

    # ---- machine identities ---------------------------------------------------------------------

    def _add_module(self, m: Module, max_modules: int) -> None:
        try:
            with self._tx() as db:
                (n,) = db.execute("SELECT count(*) FROM modules").fetchone()
                if n >= max_modules:
                    raise Conflict(f"{n} identities are enrolled, the most allowed; revoke some")
                db.execute(
                    "INSERT INTO modules (name, public_key, doc) VALUES (?, ?, ?)",
                    (m.name, m.public_key, records.module_doc(m)),
                )
        except sqlite3.IntegrityError as exc:
            what = "public key" if "public_key" in str(exc) else "name"
            raise Conflict(f"an identity with this {what} is enrolled already") from None

    async def add_module(self, module: Module, max_modules: int) -> None:
        await self._run(self._add_module, module, max_modules)

    async def get_module(self, name: str) -> Module | None:
        row = await self._run(self._one, "SELECT doc FROM modules WHERE name = ?", name)
        return records.module_from(row[0]) if row else None

    async def list_modules(self) -> list[Module]:
        rows = await self._run(self._all, "SELECT doc FROM modules ORDER BY name")
        return [records.module_from(r[0]) for r in rows]

    def _delete_module(self, name: str) -> Module | None:
        with self._tx() as db:
            row = db.execute("SELECT doc FROM modules WHERE name = ?", (name,)).fetchone()
            db.execute("DELETE FROM modules WHERE name = ?", (name,))
        return records.module_from(row[0]) if row else None

    async def delete_module(self, name: str) -> Module | None:
        return await self._run(self._delete_module, name)

    def _add_join(self, h: str, grant: str, expires: float, now: float, max_live: int) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM join_tokens WHERE expires <= ?", (now,))
            (n,) = db.execute("SELECT count(*) FROM join_tokens").fetchone()
            if n >= max_live:
                raise Conflict(
                    f"{n} join tokens are outstanding, the most allowed; let some expire"
                )
            db.execute(
                "INSERT INTO join_tokens (hash, grant_doc, expires) VALUES (?, ?, ?)",
                (h, grant, expires),
            )

    async def add_join_token(
        self, token_hash: str, grant: str, expires: float, now: float, max_live: int
    ) -> None:
        await self._run(self._add_join, token_hash, grant, expires, now, max_live)

    def _take_join(self, h: str, now: float) -> str | None:
        with self._tx() as db:
            row = db.execute(
                "DELETE FROM join_tokens WHERE hash = ? RETURNING grant_doc, expires", (h,)
            ).fetchone()
        if row is None or float(row[1]) <= now:
            return None
        return str(row[0])

    async def take_join_token(self, token_hash: str, now: float) -> str | None:
        return await self._run(self._take_join, token_hash, now)
