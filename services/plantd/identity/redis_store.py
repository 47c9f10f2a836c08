"""The identity store on Redis, for clusters: replicas keep nothing but caches.

Layout (every key starts with ``prefix``, default ``plantd:{identity}:``; the ``{identity}``
hash tag keeps them in one Redis Cluster slot, so a script may touch keys it computes):

- ``user:ID`` / ``role:ID`` / ``org:ID``: the record's JSON document
  (:mod:`plantd.identity.records`, the same bytes as a SQLite row); ``seq:KIND`` the id
  counter (never reused), ``KINDs`` a sorted set of ids (pages), ``idx:KIND:FIELD`` hashes
  from a unique name to its id;
- ``urole:ID`` (``ROLE:ORG`` members) and ``uorg:ID``: assignments; a link to a deleted role or
  organization is skipped when read (ids are never reused, so it can never point at a new one);
- ``rt:HASH`` a refresh token (hash), ``fam:F`` / ``urt:ID`` its family and its user's tokens,
  all expiring a day after the token;
- ``nb`` (hash) and ``nbz`` (sorted by time): per-user not_before;
- ``bucket:KEY`` (expires once full again), ``fail:KEY``, ``totp``, ``meta``;
- ``module:NAME``, ``modules``, ``idx:module:key``: enrolled identities; ``join`` + ``jt:HASH``
  one-time join tokens (expiring).

Every security decision (refresh rotation and family revocation, token buckets, backoff,
TOTP steps, not_before, unique names, one-time join tokens) is ONE Lua script
(:mod:`plantd.identity.redis_scripts`). Record updates are optimistic ``WATCH``/``MULTI``
transactions retried on a concurrent change. A connection error fails the request with
``STORE_UNAVAILABLE`` (the next request tries again); redis-py's own retries are off
(:mod:`plantd.common.redis_conn`, the state store's recipe too), so a write is never applied twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.commands.core import AsyncScript

from plantd.common.redis_conn import RedisSetupError, RedisTarget, client_for
from plantd.common.redis_url import redact_url
from plantd.identity import records
from plantd.identity import redis_scripts as lua
from plantd.identity.errors import Code, Conflict, IdentityError, NotFound
from plantd.identity.model import Module, Organization, RefreshRecord, Role, Rotation, User
from plantd.identity.store import Store
from plantd.identity.throttle import Backoff, Bucket

T = TypeVar("T")

DEFAULT_PREFIX: Final = "plantd:{identity}:"
KEEP_AFTER_EXPIRY_S: Final = 86400  # refresh records outlive their token a day (reuse detection)
WATCH_RETRIES: Final = 20  # optimistic update retries before giving up (CONFLICT)

_DOWN = (rexc.ConnectionError, rexc.TimeoutError, rexc.BusyLoadingError, OSError)


Record = User | Role | Organization
_MAKERS: Final[dict[str, Callable[[int, str], Record]]] = {
    "user": records.user_from,
    "role": records.role_from,
    "org": records.org_from,
}


def _num(x: float) -> str:
    return repr(float(x))


# The reason of an open() that failed because Redis did not answer (it may come up later),
# as opposed to one that cannot heal by waiting (wrong credentials, bad TLS settings).
UNREACHABLE = "store_unreachable"


class RedisStore(Store):
    kind = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        password: str | None = None,
        password_file: Path | None = None,
        ca_file: Path | None = None,
        socket_timeout: float = 2.0,
        connect_timeout: float = 1.0,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.target = RedisTarget(
            url, password, password_file, ca_file, socket_timeout, connect_timeout
        )
        self._client: aioredis.Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._ok = False

    def describe(self) -> str:
        return f"redis {redact_url(self.url)} prefix={self.prefix!r}"

    @property
    def available(self) -> bool:
        return self._ok

    # ---- lifecycle ------------------------------------------------------------------------------

    def _make_client(self) -> aioredis.Redis:
        try:
            return client_for(self.target)
        except RedisSetupError as exc:
            raise self._down(str(exc)) from exc

    def _down(self, why: str, reason: str | None = None) -> IdentityError:
        self._ok = False
        return IdentityError(
            Code.STORE_UNAVAILABLE,
            f"the identity store is unavailable ({why}); retry later",
            reason=reason,
        )

    async def open(self) -> None:
        client = self._client = self._make_client()
        self._scripts = {s.name: client.register_script(s.source) for s in lua.SCRIPTS}
        try:
            await client.ping()
        except rexc.AuthenticationError as exc:
            raise self._down(f"Redis rejected the credentials: {exc}") from exc
        except _DOWN as exc:
            raise self._down(f"{redact_url(self.url)}: {exc}", UNREACHABLE) from exc
        self._ok = True

    async def close(self) -> None:
        self._ok = False
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    def _c(self) -> Any:  # redis-py's reply types are unions of bytes and str: we decode
        if self._client is None:
            raise self._down("the store is not open")
        return self._client

    async def _io(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """Run one exchange; connection trouble becomes STORE_UNAVAILABLE for this request."""
        try:
            out = await fn(self._c())
        except rexc.AuthenticationError as exc:
            raise self._down(f"Redis rejected the credentials: {exc}") from exc
        except _DOWN as exc:
            raise self._down(f"{redact_url(self.url)}: {type(exc).__name__}: {exc}") from exc
        self._ok = True
        return out

    async def _script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        script = self._scripts[name]
        return await self._io(lambda _c: script(keys=keys, args=args))

    def _k(self, *parts: object) -> str:
        return self.prefix + ":".join(str(p) for p in parts)

    # ---- records (users, roles, organizations) --------------------------------------------------

    def _uniques(self, kind: str, obj: User | Role | Organization) -> list[tuple[str, str]]:
        if isinstance(obj, User):
            return [("username", obj.username.lower()), ("email", obj.email.lower())]
        if isinstance(obj, Role):
            return [("name", obj.name)]
        return [("slug", obj.slug)]

    async def _create(self, kind: str, obj: User | Role | Organization) -> int:
        uniques = self._uniques(kind, obj)
        keys = [self._k("seq", kind), self._k(kind + "s")]
        keys += [self._k("idx", kind, f) for f, _ in uniques]
        args = [self._k(kind, ""), records.encode(obj), *(v for _, v in uniques)]
        n = int(await self._script("create", keys, args))
        if n < 0:
            field, value = uniques[-n - 1]
            if kind == "user":
                raise Conflict(f"{field} already exists")
            raise Conflict(f"{field} {value!r} already exists")
        return n

    async def _get_doc(self, kind: str, obj_id: int) -> str | None:
        if obj_id <= 0:
            return None
        doc: str | None = await self._io(lambda c: c.get(self._k(kind, obj_id)))
        return doc

    async def _id_of(self, kind: str, field: str, value: str) -> int:
        v = await self._io(lambda c: c.hget(self._k("idx", kind, field), value))
        return int(v) if v else 0

    async def _find(self, kind: str, obj_id: int, field: str, value: str) -> tuple[int, str | None]:
        """A record's id and document, by id or else by a unique ``field``'s ``value``."""
        if not obj_id and value:
            obj_id = await self._id_of(kind, field, value)
        return obj_id, await self._get_doc(kind, obj_id)

    async def _update(
        self, kind: str, obj_id: int, changes: dict[str, Any], allowed: frozenset[str]
    ) -> Any:
        make = _MAKERS
        for k in changes:
            if k not in allowed:
                raise ValueError(f"not a {kind} field: {k}")
        key = self._k(kind, obj_id)

        async def attempt(c: Any) -> Any:
            async with c.pipeline(transaction=True) as pipe:
                for _ in range(WATCH_RETRIES):
                    try:
                        await pipe.watch(key)
                        doc = await pipe.get(key)
                        if doc is None:
                            raise NotFound(f"{'organization' if kind == 'org' else kind} not found")
                        obj = make[kind](obj_id, doc)
                        before = self._uniques(kind, obj)
                        for k, v in changes.items():
                            setattr(obj, k, v)
                        after = self._uniques(kind, obj)
                        moved = [(f, o, n) for (f, o), (_, n) in zip(before, after, strict=True)]
                        moved = [m for m in moved if m[1] != m[2]]
                        for f, _, new in moved:
                            await pipe.watch(self._k("idx", kind, f))
                            holder = await pipe.hget(self._k("idx", kind, f), new)
                            if holder and int(holder) != obj_id:
                                raise Conflict(f"{f} already exists")
                        pipe.multi()
                        pipe.set(key, records.encode(obj))
                        for f, old, new in moved:
                            pipe.hdel(self._k("idx", kind, f), old)
                            pipe.hset(self._k("idx", kind, f), new, str(obj_id))
                        await pipe.execute()
                        return obj
                    except rexc.WatchError:
                        continue
            raise Conflict(f"{kind} {obj_id} changed concurrently {WATCH_RETRIES} times; retry")

        return await self._io(attempt)

    async def _delete(self, kind: str, obj_id: int, links: list[str]) -> bool:
        key = self._k(kind, obj_id)
        make = _MAKERS

        async def attempt(c: Any) -> bool:
            async with c.pipeline(transaction=True) as pipe:
                for _ in range(WATCH_RETRIES):
                    try:
                        await pipe.watch(key)
                        doc = await pipe.get(key)
                        if doc is None:
                            return False
                        obj = make[kind](obj_id, doc)
                        pipe.multi()
                        pipe.delete(key, *links)
                        pipe.zrem(self._k(kind + "s"), str(obj_id))
                        for f, v in self._uniques(kind, obj):
                            pipe.hdel(self._k("idx", kind, f), v)
                        await pipe.execute()
                        return True
                    except rexc.WatchError:
                        continue
            raise Conflict(f"{kind} {obj_id} changed concurrently; retry")

        return await self._io(attempt)

    async def _page(self, kind: str, offset: int, limit: int) -> tuple[list[tuple[int, str]], int]:
        async def read(c: Any) -> tuple[list[tuple[int, str]], int]:
            ids = await c.zrange(self._k(kind + "s"), offset, offset + limit - 1)
            total = await c.zcard(self._k(kind + "s"))
            docs = await c.mget([self._k(kind, i) for i in ids]) if ids else []
            return [(int(i), d) for i, d in zip(ids, docs, strict=True) if d], int(total)

        return await self._io(read)

    # ---- users ----------------------------------------------------------------------------------

    async def _fill(self, u: User) -> User:
        u.roles = [r.name for r in await self.user_roles(u.id)]
        u.organizations = [o.slug for o in await self.user_orgs(u.id)]
        return u

    async def create_user(self, user: User) -> User:
        user.id = await self._create("user", user)
        return await self._fill(user)

    async def get_user(
        self, *, user_id: int = 0, username: str = "", email: str = ""
    ) -> User | None:
        if not user_id and username:
            user_id = await self._id_of("user", "username", username.lower())
        elif not user_id and email:
            user_id = await self._id_of("user", "email", email.lower())
        doc = await self._get_doc("user", user_id)
        return await self._fill(records.user_from(user_id, doc)) if doc else None

    async def find_login(self, identifier: str) -> User | None:
        ident = identifier.lower()
        uid = await self._id_of("user", "username", ident) or await self._id_of(
            "user", "email", ident
        )
        return await self.get_user(user_id=uid) if uid else None

    async def update_user(self, user_id: int, changes: dict[str, Any]) -> User:
        user: User = await self._update("user", user_id, changes, records.USER_FIELDS)
        return await self._fill(user)

    async def delete_user(self, user_id: int) -> bool:
        links = [self._k("urole", user_id), self._k("uorg", user_id)]
        gone = await self._delete("user", user_id, links)
        await self.revoke_refresh_user(str(user_id))
        return gone

    async def list_users(self, offset: int, limit: int) -> tuple[list[User], int]:
        rows, total = await self._page("user", offset, limit)
        return [await self._fill(records.user_from(i, d)) for i, d in rows], total

    async def count_users(self) -> int:
        n: int = await self._io(lambda c: c.zcard(self._k("users")))
        return int(n)

    # ---- roles, organizations, assignments ------------------------------------------------------

    async def create_role(self, role: Role) -> Role:
        role.id = await self._create("role", role)
        return role

    async def get_role(self, *, role_id: int = 0, name: str = "") -> Role | None:
        role_id, doc = await self._find("role", role_id, "name", name)
        return records.role_from(role_id, doc) if doc else None

    async def update_role(self, role_id: int, changes: dict[str, Any]) -> Role:
        role: Role = await self._update("role", role_id, changes, records.ROLE_FIELDS)
        return role

    async def delete_role(self, role_id: int) -> bool:
        return await self._delete("role", role_id, [])

    async def list_roles(self, offset: int, limit: int) -> tuple[list[Role], int]:
        rows, total = await self._page("role", offset, limit)
        return [records.role_from(i, d) for i, d in rows], total

    async def create_org(self, org: Organization) -> Organization:
        org.id = await self._create("org", org)
        return org

    async def get_org(self, *, org_id: int = 0, slug: str = "") -> Organization | None:
        org_id, doc = await self._find("org", org_id, "slug", slug)
        return records.org_from(org_id, doc) if doc else None

    async def update_org(self, org_id: int, changes: dict[str, Any]) -> Organization:
        org: Organization = await self._update("org", org_id, changes, records.ORG_FIELDS)
        return org

    async def delete_org(self, org_id: int) -> bool:
        return await self._delete("org", org_id, [])

    async def list_orgs(self, offset: int, limit: int) -> tuple[list[Organization], int]:
        rows, total = await self._page("org", offset, limit)
        return [records.org_from(i, d) for i, d in rows], total

    async def _assign(
        self, kind: str, user_id: int, target_id: int, org_id: int, add: bool
    ) -> bool:
        if kind == "role":
            link, target, member = (
                self._k("urole", user_id),
                self._k("role", target_id),
                (f"{target_id}:{org_id}"),
            )
        else:
            link, target, member = (
                self._k("uorg", user_id),
                self._k("org", target_id),
                str(target_id),
            )
        n = int(
            await self._script(
                "assign", [self._k("user", user_id), target, link], [member, "1" if add else "0"]
            )
        )
        if n == -1:
            raise NotFound("user not found")
        if n == -2:
            raise NotFound(f"{kind} not found")
        return bool(n)

    async def assign(self, kind: str, user_id: int, target_id: int, org_id: int = 0) -> bool:
        return await self._assign(kind, user_id, target_id, org_id, True)

    async def unassign(self, kind: str, user_id: int, target_id: int, org_id: int = 0) -> bool:
        return await self._assign(kind, user_id, target_id, org_id, False)

    async def _linked(self, link: str, kind: str) -> list[tuple[int, str]]:
        async def read(c: Any) -> list[tuple[int, str]]:
            members = await c.smembers(link)
            ids = sorted({int(str(m).split(":")[0]) for m in members})
            docs = await c.mget([self._k(kind, i) for i in ids]) if ids else []
            return [(i, d) for i, d in zip(ids, docs, strict=True) if d]

        return await self._io(read)

    async def user_roles(self, user_id: int) -> list[Role]:
        rows = await self._linked(self._k("urole", user_id), "role")
        return sorted((records.role_from(i, d) for i, d in rows), key=lambda r: r.name)

    async def user_orgs(self, user_id: int) -> list[Organization]:
        rows = await self._linked(self._k("uorg", user_id), "org")
        return sorted((records.org_from(i, d) for i, d in rows), key=lambda o: o.slug)

    # ---- sessions -------------------------------------------------------------------------------

    def _keep_ms(self, expires: float, now: float) -> int:
        return max(1000, int((expires - now + KEEP_AFTER_EXPIRY_S) * 1000))

    async def add_refresh(self, record: RefreshRecord) -> None:
        r = record
        keep = self._keep_ms(r.expires, r.created)

        async def write(c: Any) -> None:
            pipe = c.pipeline(transaction=True)
            key = self._k("rt", r.hash)
            pipe.hset(
                key,
                mapping={
                    "family": r.family,
                    "user_id": r.user_id,
                    "audience": ",".join(r.audience),
                    "created": _num(r.created),
                    "expires": _num(r.expires),
                    "revoked": "0",
                },
            )
            pipe.pexpire(key, keep)
            for k in (self._k("fam", r.family), self._k("urt", r.user_id)):
                pipe.sadd(k, r.hash)
                pipe.pexpire(k, keep)
            await pipe.execute()

        await self._io(write)

    async def rotate_refresh(self, old_hash: str, new: RefreshRecord, now: float) -> Rotation:
        out = await self._script(
            "rotate",
            [self._k("rt", old_hash)],
            [
                self.prefix,
                new.hash,
                _num(now),
                _num(new.created),
                _num(new.expires),
                self._keep_ms(new.expires, now),
            ],
        )
        if out[0] == "unknown":
            return Rotation("unknown")
        family, user_id, aud, created, expires = out[1:6]
        old = RefreshRecord(
            old_hash, family, user_id, tuple(aud.split(",")), float(created), float(expires)
        )
        return Rotation(str(out[0]), old)

    async def revoke_refresh_user(self, subject: str) -> int:
        return int(await self._script("revoke_user", [self._k("urt", subject)], [self.prefix]))

    async def bump_not_before(self, subject: str, ts: float) -> float:
        out = await self._script("bump", [self._k("nb"), self._k("nbz")], [subject, _num(ts)])
        return float(out)

    async def get_not_before(self, subject: str) -> float:
        v = await self._io(lambda c: c.hget(self._k("nb"), subject))
        return float(v) if v else 0.0

    async def recent_not_before(self, since: float) -> list[tuple[str, float]]:
        rows = await self._io(
            lambda c: c.zrangebyscore(self._k("nbz"), _num(since), "+inf", withscores=True)
        )
        return [(str(s), float(ts)) for s, ts in rows]

    # ---- brute force ----------------------------------------------------------------------------

    async def take_token(self, key: str, bucket: Bucket, now: float) -> tuple[bool, float]:
        ok, retry = await self._script(
            "take",
            [self._k("bucket", key)],
            [_num(bucket.capacity), _num(bucket.rate), _num(now), "1"],
        )
        return bool(int(ok)), float(retry)

    async def failures(self, key: str) -> tuple[int, float]:
        row = await self._io(lambda c: c.hmget(self._k("fail", key), ["count", "last"]))
        return (int(row[0]), float(row[1])) if row[0] else (0, 0.0)

    async def record_failure(self, key: str, now: float) -> int:
        return int(await self._script("fail", [self._k("fail", key)], [_num(now)]))

    async def begin_attempt(
        self, key: str, backoff: Backoff, now: float, *, critical: bool
    ) -> float:
        out = await self._script(
            "begin",
            [self._k("fail", key)],
            [
                _num(now),
                str(backoff.free_failures),
                _num(backoff.base_s),
                _num(backoff.max_s),
                str(backoff.max_failures),
                "1" if critical else "0",
            ],
        )
        return float(out)  # "inf" parses to math.inf

    async def clear_failures(self, key: str) -> None:
        await self._io(lambda c: c.delete(self._k("fail", key)))

    async def accept_totp_step(self, user_id: int, step: int) -> bool:
        return bool(int(await self._script("totp", [self._k("totp")], [str(user_id), str(step)])))

    # ---- machine identities ---------------------------------------------------------------------

    def _module_keys(self, name: str) -> list[str]:
        return [self._k("module", name), self._k("modules"), self._k("idx", "module", "key")]

    async def add_module(self, module: Module, max_modules: int) -> None:
        n = int(
            await self._script(
                "add_module",
                self._module_keys(module.name),
                [module.name, module.public_key, records.module_doc(module), str(max_modules)],
            )
        )
        if n == 1:
            raise Conflict("an identity with this name is enrolled already")
        if n == 2:
            raise Conflict("an identity with this public key is enrolled already")
        if n == 3:
            raise Conflict(f"{max_modules} identities are enrolled, the most allowed; revoke some")

    async def get_module(self, name: str) -> Module | None:
        doc = await self._io(lambda c: c.get(self._k("module", name)))
        return records.module_from(doc) if doc else None

    async def list_modules(self) -> list[Module]:
        async def read(c: Any) -> list[str]:
            names = await c.zrange(self._k("modules"), 0, -1)  # lexical: all scores are 0
            return [
                d
                for d in (await c.mget([self._k("module", n) for n in names]) if names else [])
                if d
            ]

        return [records.module_from(d) for d in await self._io(read)]

    async def delete_module(self, name: str) -> Module | None:
        current = await self.get_module(name)
        if current is None:
            return None
        doc = await self._script(
            "delete_module", self._module_keys(name), [name, current.public_key]
        )
        return records.module_from(doc) if doc else None

    async def add_join_token(
        self, token_hash: str, grant: str, expires: float, now: float, max_live: int
    ) -> None:
        ttl_ms = max(1, int((expires - now) * 1000))
        n = int(
            await self._script(
                "add_join",
                [self._k("join"), self._k("jt", token_hash)],
                [_num(now), _num(expires), grant, str(max_live), str(ttl_ms)],
            )
        )
        if n:
            raise Conflict(f"{max_live} join tokens are outstanding, the most allowed")

    async def take_join_token(self, token_hash: str, now: float) -> str | None:
        out = await self._script(
            "take_join", [self._k("join"), self._k("jt", token_hash)], [_num(now)]
        )
        return str(out) if out else None

    # ---- meta -----------------------------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        v = await self._io(lambda c: c.hget(self._k("meta"), key))
        return str(v) if v is not None else None

    async def set_meta(self, key: str, value: str | None) -> None:
        if value is None:
            await self._io(lambda c: c.hdel(self._k("meta"), key))
        else:
            await self._io(lambda c: c.hset(self._k("meta"), key, value))
