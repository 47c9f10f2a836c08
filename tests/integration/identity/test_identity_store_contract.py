"""One contract for every identity store: the same tests on SQLite and on a real redis-server.

Two store objects on one backend stand for two replicas (two SQLite connections on one file, two
Redis clients on one server): each atomic step of plantd.identity.store.Store must stay atomic
between them (refresh rotation, buckets, backoff, TOTP steps, join tokens, unique names).
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from tests.kit import RedisServer, make_certs, require_redis

from plantd.identity.errors import Code, Conflict, IdentityError, NotFound
from plantd.identity.model import Module, Organization, RefreshRecord, Role, User, new_family
from plantd.identity.redis_store import RedisStore
from plantd.identity.sqlite_store import SqliteStore
from plantd.identity.store import Store
from plantd.identity.throttle import Backoff, Bucket
from plantd.identity.tokens import new_refresh_token, refresh_hash

pytestmark = pytest.mark.integration

KEY_A = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"  # ZeroMQ's documented test keys (Z85)
KEY_B = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"
_seq = itertools.count()

Factory = Callable[[], Store]


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    require_redis()
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "redis"])
def factory(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    """Makes store objects on ONE backend (a fresh SQLite file or a fresh Redis prefix)."""
    if request.param == "sqlite":
        return lambda: SqliteStore(tmp_path / "data")
    server: RedisServer = request.getfixturevalue("redis_server")
    prefix = f"test{next(_seq)}:{{identity}}:"
    return lambda: RedisStore(server.url, prefix=prefix)


@pytest.fixture
async def pair(factory: Factory) -> AsyncIterator[tuple[Store, Store]]:
    a, b = factory(), factory()
    await a.open()
    await b.open()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


@pytest.fixture
def store(pair: tuple[Store, Store]) -> Store:
    return pair[0]


def _user(name: str) -> User:
    return User(0, name, f"{name}@plant.example", password_hash="x", created_at=1.0)


# ---- records ----------------------------------------------------------------------------------


async def test_users_unique_case_insensitive_and_ids_never_reused(store: Store) -> None:
    a = await store.create_user(_user("Alice"))
    assert a.id > 0 and a.roles == [] and a.organizations == []
    with pytest.raises(Conflict, match="username"):
        await store.create_user(User(0, "alice", "other@plant.example"))
    with pytest.raises(Conflict, match="email"):
        await store.create_user(User(0, "alice2", "ALICE@plant.example"))
    assert (await store.get_user(username="ALICE")).id == a.id  # type: ignore[union-attr]
    assert (await store.get_user(email="alice@PLANT.example")).id == a.id  # type: ignore[union-attr]
    assert (await store.find_login("alice@plant.example")).id == a.id  # type: ignore[union-attr]
    assert await store.find_login("nobody") is None
    assert await store.get_user(user_id=999) is None
    assert await store.delete_user(a.id)
    assert not await store.delete_user(a.id)
    assert await store.get_user(user_id=a.id) is None
    assert await store.find_login("alice") is None, "the name index must go with the user"
    b = await store.create_user(_user("alice"))
    assert b.id > a.id, "ids are never reused (a deleted user's not_before must not hit a new one)"


async def test_user_update_moves_unique_names(store: Store) -> None:
    a = await store.create_user(_user("anna"))
    await store.create_user(_user("bert"))
    with pytest.raises(Conflict):
        await store.update_user(a.id, {"username": "BERT"})
    moved = await store.update_user(a.id, {"username": "anna2", "first_name": "A"})
    assert (moved.username, moved.first_name) == ("anna2", "A")
    assert await store.find_login("anna") is None
    assert (await store.find_login("anna2")).first_name == "A"  # type: ignore[union-attr]
    with pytest.raises(NotFound):
        await store.update_user(9999, {"first_name": "x"})
    with pytest.raises(ValueError):
        await store.update_user(a.id, {"id": 5})
    users, total = await store.list_users(0, 1)
    assert total == 2 == await store.count_users() and [u.username for u in users] == ["anna2"]
    users, _ = await store.list_users(1, 10)
    assert [u.username for u in users] == ["bert"]


async def test_roles_orgs_and_assignments(store: Store) -> None:
    u = await store.create_user(_user("carl"))
    r1 = await store.create_role(Role(0, "zeta", permissions=["state:data:read"]))
    r2 = await store.create_role(Role(0, "alpha", permissions=[]))
    with pytest.raises(Conflict):
        await store.create_role(Role(0, "zeta"))
    o = await store.create_org(Organization(0, "Line 1", "line-1"))
    with pytest.raises(Conflict):
        await store.create_org(Organization(0, "Line one", "line-1"))
    assert await store.assign("role", u.id, r1.id)
    assert not await store.assign("role", u.id, r1.id), "already assigned"
    assert await store.assign("role", u.id, r2.id)
    assert await store.assign("org", u.id, o.id)
    with pytest.raises(NotFound, match="user"):
        await store.assign("role", 999, r1.id)
    with pytest.raises(NotFound, match="role"):
        await store.assign("role", u.id, 999)
    assert [r.name for r in await store.user_roles(u.id)] == ["alpha", "zeta"]
    assert (await store.get_user(user_id=u.id)).organizations == ["line-1"]  # type: ignore[union-attr]
    role = await store.update_role(r1.id, {"permissions": []})
    assert role.permissions == [] and (await store.get_role(name="zeta")).permissions == []  # type: ignore[union-attr]
    assert (await store.update_org(o.id, {"name": "L1"})).name == "L1"
    assert await store.unassign("role", u.id, r2.id)
    assert await store.delete_role(r1.id)
    assert await store.user_roles(u.id) == [], "a deleted role is no longer assigned"
    assert await store.delete_org(o.id)
    assert await store.user_orgs(u.id) == []
    roles, total = await store.list_roles(0, 10)
    assert total == 1 and roles[0].name == "alpha"
    assert (await store.list_orgs(0, 10))[1] == 0


# ---- sessions ---------------------------------------------------------------------------------


def _rec(user: str = "1", family: str = "", expires: float = 1e12) -> RefreshRecord:
    return RefreshRecord(
        refresh_hash(new_refresh_token()), family or new_family(), user, ("a", "b"), 1.0, expires
    )


async def test_rotation_outcomes_and_family_revocation(store: Store) -> None:
    first = _rec()
    await store.add_refresh(first)
    assert (await store.rotate_refresh("nope", _rec(), 2.0)).outcome == "unknown"
    second = _rec()
    rot = await store.rotate_refresh(first.hash, second, 2.0)
    assert rot.outcome == "rotated" and rot.record is not None
    assert (rot.record.family, rot.record.user_id, rot.record.audience) == (
        first.family, "1", ("a", "b")
    )  # fmt: skip
    assert (await store.rotate_refresh(first.hash, _rec(), 3.0)).outcome == "reused"
    assert (await store.rotate_refresh(second.hash, _rec(), 3.0)).outcome == "revoked", (
        "reuse of the old token revokes the new one too (the whole family)"
    )
    short = _rec(expires=5.0)
    await store.add_refresh(short)
    assert (await store.rotate_refresh(short.hash, _rec(), 6.0)).outcome == "expired"
    live = [_rec(user="7") for _ in range(3)]
    for r in live:
        await store.add_refresh(r)
    assert await store.revoke_refresh_user("7") == 3
    assert await store.revoke_refresh_user("7") == 0
    assert (await store.rotate_refresh(live[0].hash, _rec(), 2.0)).outcome == "revoked"


async def test_rotation_is_atomic_across_replicas(pair: tuple[Store, Store]) -> None:
    a, b = pair
    for _ in range(10):
        rec = _rec()
        await a.add_refresh(rec)
        results = await asyncio.gather(
            a.rotate_refresh(rec.hash, _rec(), 2.0), b.rotate_refresh(rec.hash, _rec(), 2.0)
        )
        assert sorted(r.outcome for r in results) == ["reused", "rotated"]


async def test_not_before_never_goes_back(store: Store) -> None:
    assert await store.get_not_before("5") == 0.0
    assert await store.bump_not_before("5", 1700000000.123) == 1700000000.123
    assert await store.bump_not_before("5", 1600000000.0) == 1700000000.123
    assert await store.get_not_before("5") == 1700000000.123
    await store.bump_not_before("6", 1700000100.5)
    assert await store.recent_not_before(1700000050) == [("6", 1700000100.5)]


# ---- brute force ------------------------------------------------------------------------------


async def test_buckets_and_failures_are_exact_across_replicas(pair: tuple[Store, Store]) -> None:
    a, b = pair
    bucket = Bucket(capacity=20, rate=0.001)
    results = await asyncio.gather(
        *(s.take_token("src:x", bucket, 100.0) for s in (a, b) for _ in range(25))
    )
    assert sum(ok for ok, _ in results) == 20
    assert all(retry > 0 for ok, retry in results if not ok)
    ok, _ = await a.take_token("src:x", bucket, 100.0 + 1000.0)  # refilled one token
    assert ok
    counts = await asyncio.gather(
        *(s.record_failure("acct:y", 1.0) for s in (a, b) for _ in range(15))
    )
    assert sorted(counts) == list(range(1, 31))
    assert await a.failures("acct:y") == (30, 1.0)


async def test_backoff_counts_in_advance_and_locks(pair: tuple[Store, Store]) -> None:
    a, b = pair
    backoff = Backoff(free_failures=3, base_s=1.0, max_s=300.0, max_failures=5)
    waits = await asyncio.gather(
        *(
            s.begin_attempt("acct:v", backoff, 10.0, critical=False)
            for s in (a, b)
            for _ in range(6)
        )
    )
    assert sorted(waits).count(0.0) == 3, waits  # the free failures, however parallel
    assert all(w == 1.0 for w in waits if w), waits
    assert await a.begin_attempt("acct:v", backoff, 11.0, critical=False) == 0.0
    assert await a.begin_attempt("acct:v", backoff, 13.0, critical=False) == 0.0
    assert await a.failures("acct:v") == (5, 13.0)
    assert await a.begin_attempt("acct:v", backoff, 1e6, critical=False) == float("inf")
    assert await a.begin_attempt("acct:v", backoff, 1e6, critical=True) == 0.0, (
        "operator-critical accounts are slowed, never locked"
    )
    await b.clear_failures("acct:v")
    assert await a.failures("acct:v") == (0, 0.0)


async def test_totp_step_is_accepted_once(pair: tuple[Store, Store]) -> None:
    a, b = pair
    got = await asyncio.gather(*(s.accept_totp_step(3, 1000) for s in (a, b) for _ in range(4)))
    assert sum(got) == 1
    assert not await a.accept_totp_step(3, 999)
    assert await b.accept_totp_step(3, 1001)


async def test_meta(store: Store) -> None:
    assert await store.get_meta("k") is None
    await store.set_meta("k", "v")
    assert await store.get_meta("k") == "v"
    await store.set_meta("k", None)
    assert await store.get_meta("k") is None


# ---- machine identities -----------------------------------------------------------------------


def _module(name: str, key: str) -> Module:
    return Module(
        name, "module", key, services=("org.example.line1.*",),
        publish={"event": ("line1.",)}, permissions=("state:data:read",), enrolled_at=1.5,
    )  # fmt: skip


async def test_modules_unique_by_name_and_key_and_bounded(store: Store) -> None:
    await store.add_module(_module("plc-b", KEY_A), 2)
    with pytest.raises(Conflict, match="name"):
        await store.add_module(_module("plc-b", KEY_B), 2)
    with pytest.raises(Conflict, match="public key"):
        await store.add_module(_module("plc-c", KEY_A), 2)
    await store.add_module(_module("plc-a", KEY_B), 2)
    with pytest.raises(Conflict, match="most"):
        await store.add_module(_module("plc-d", "x" * 40), 2)
    got = await store.get_module("plc-b")
    assert got == _module("plc-b", KEY_A), "stored and read back field for field"
    assert [m.name for m in await store.list_modules()] == ["plc-a", "plc-b"]
    gone = await store.delete_module("plc-b")
    assert gone is not None and gone.public_key == KEY_A
    assert await store.delete_module("plc-b") is None
    await store.add_module(_module("plc-c", KEY_A), 2)  # the key is free again


async def test_join_token_is_redeemed_once_across_replicas(pair: tuple[Store, Store]) -> None:
    a, b = pair
    h = uuid.uuid4().hex
    await a.add_join_token(h, '{"name": "x"}', 100.0, 10.0, 5)
    got = await asyncio.gather(*(s.take_join_token(h, 20.0) for s in (a, b) for _ in range(3)))
    assert [g for g in got if g is not None] == ['{"name": "x"}']
    await a.add_join_token("late", "{}", 100.0, 10.0, 5)
    assert await b.take_join_token("late", 100.0) is None, "an expired token is refused"
    for i in range(5):
        await a.add_join_token(f"t{i}", "{}", 100.0, 10.0, 5)
    with pytest.raises(Conflict):
        await a.add_join_token("t5", "{}", 100.0, 10.0, 5)
    await a.add_join_token("t6", "{}", 300.0, 200.0, 5)  # the expired ones were dropped first


# ---- Redis only -------------------------------------------------------------------------------


async def test_redis_keys_carry_the_prefix_and_buckets_expire(redis_server: RedisServer) -> None:
    prefix = f"iso{next(_seq)}:{{identity}}:"
    store = RedisStore(redis_server.url, prefix=prefix)
    await store.open()
    try:
        await store.create_user(_user("dora"))
        await store.take_token("src:1.2.3.4", Bucket(10, 1.0), 1.0)
        await store.add_refresh(_rec())
        client = store._c()
        keys = [k async for k in client.scan_iter(match="*")]
        mine = [k for k in keys if k.startswith(prefix)]
        assert mine and all(k.startswith(prefix) for k in keys if not k.startswith("test"))
        ttl = await client.pttl(prefix + "bucket:src:1.2.3.4")
        assert 0 < ttl <= 2000, "a bucket lives only until it would be full again"
        assert await client.pttl(next(k for k in mine if ":rt:" in k)) > 0
    finally:
        await store.close()


async def test_redis_password_and_outage_give_store_unavailable(tmp_path: Path) -> None:
    require_redis()
    server = RedisServer(tmp_path / "redis", password="pw-for-tests").start()
    try:
        wrong = RedisStore(f"redis://127.0.0.1:{server.port}/0", password="nope")
        with pytest.raises(IdentityError) as err:
            await wrong.open()
        assert err.value.code == Code.STORE_UNAVAILABLE and "credentials" in err.value.message
        await wrong.close()
        secret = tmp_path / "pw"
        secret.write_text("pw-for-tests\n")
        store = RedisStore(f"redis://127.0.0.1:{server.port}/0", password_file=secret)
        await store.open()
        assert store.available and await store.count_users() == 0
        server.kill()
        with pytest.raises(IdentityError) as down:
            await store.count_users()
        assert down.value.code == Code.STORE_UNAVAILABLE and "pw-for-tests" not in str(down.value)
        assert not store.available
        server.start()
        assert await store.count_users() == 0 and store.available, "the next request reconnects"
        await store.close()
    finally:
        server.stop()


async def test_redis_over_tls_with_password_file_and_ca(tmp_path: Path) -> None:
    """rediss:// + redis_ca_file + redis_password_file, as the state service's settings."""
    require_redis()
    make_certs(tmp_path)
    server = RedisServer(tmp_path / "redis", password="tls-pw", tls_dir=tmp_path).start()
    try:
        secret = tmp_path / "pw"
        secret.write_text("tls-pw\n")
        url = f"rediss://127.0.0.1:{server.port}/0"
        store = RedisStore(url, password_file=secret, ca_file=tmp_path / "ca.crt")
        await store.open()
        try:
            user = await store.create_user(_user("tls"))
            assert (await store.find_login("tls")).id == user.id  # type: ignore[union-attr]
        finally:
            await store.close()
        untrusted = RedisStore(url, password_file=secret)  # no CA: the certificate is unknown
        with pytest.raises(IdentityError) as err:
            await untrusted.open()
        assert err.value.code == Code.STORE_UNAVAILABLE
        await untrusted.close()
    finally:
        server.stop()
