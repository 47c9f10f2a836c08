"""The store contract: the same behaviour from the SQLite and the Redis store.

Every test runs against both (the ``store`` fixture), the Redis one on a real redis-server.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from statekit import TEST_LIMITS, RedisServer

from plantd.state.errors import Code, StateError
from plantd.state.model import (
    ChangeLog,
    ChangesSince,
    CreateScope,
    Delete,
    DeleteItem,
    DeleteResult,
    DeleteScope,
    ExistsResult,
    Get,
    GetResult,
    KeyList,
    ListKeys,
    ListScopes,
    Op,
    ScopeExists,
    ScopeList,
    ScopeResult,
    Set,
    SetItem,
    SetResult,
    Snapshot,
    SnapshotResult,
)
from plantd.state.redis_store import RedisStore
from plantd.state.sqlite_store import SqliteStore
from plantd.state.store import Store

pytestmark = pytest.mark.integration


async def one(store: Store, op: Op) -> Any:
    [res] = await store.execute([op])
    return res


async def ok(store: Store, op: Op) -> Any:
    res = await one(store, op)
    assert not isinstance(res, StateError), f"{op} failed: {res}"
    return res


async def err(store: Store, op: Op, code: str) -> StateError:
    res = await one(store, op)
    assert isinstance(res, StateError), f"{op} should fail with {code}, got {res}"
    assert res.code == code, res
    return res


def sset(scope: str, key: str, value: str, **kw: Any) -> Set:
    create = kw.pop("create", True)
    return Set(scope, (SetItem(key, value, **kw),), create=create)


async def test_scope_lifecycle(store: Store) -> None:
    r1: ScopeResult = await ok(store, CreateScope("org.plantd.Client"))
    assert r1.revision == 1
    assert [c.op for c in r1.changes] == ["create-scope"]
    await err(store, CreateScope("org.plantd.Client"), Code.SCOPE_EXISTS)
    scopes: ScopeList = await ok(store, ListScopes())
    assert scopes.scopes == ("org.plantd.Client",)
    exists: ExistsResult = await ok(store, ScopeExists("org.plantd.Client"))
    assert exists.exists
    r2: ScopeResult = await ok(store, DeleteScope("org.plantd.Client"))
    assert r2.revision == 2
    await err(store, DeleteScope("org.plantd.Client"), Code.SCOPE_NOT_FOUND)
    assert (await ok(store, ListScopes())).scopes == ()
    assert not (await ok(store, ScopeExists("org.plantd.Client"))).exists


async def test_set_creates_missing_scope_and_get_reads_it(store: Store) -> None:
    r: SetResult = await ok(store, sset("s", "k", "v1"))
    assert r.created_scope
    # create-scope took revision 1, the write revision 2
    assert r.versions == (2,) and r.revision == 2
    assert [(c.op, c.key, c.value, c.version, c.revision) for c in r.changes] == [
        ("create-scope", "", "", 0, 1),
        ("set", "k", "v1", 2, 2),
    ]
    g: GetResult = await ok(store, Get("s", ("k",)))
    assert g.entries[0] is not None
    assert (g.entries[0].value, g.entries[0].version, g.entries[0].expires_at) == ("v1", 2, None)
    r2: SetResult = await ok(store, sset("s", "k", "v2"))
    assert not r2.created_scope and r2.versions == (3,)
    g2: GetResult = await ok(store, Get("s", ("k", "absent")))
    assert g2.entries[0] is not None and g2.entries[0].value == "v2"
    assert g2.entries[1] is None


async def test_missing_scope_errors_and_create_false(store: Store) -> None:
    await err(store, Get("nope", ("k",)), Code.SCOPE_NOT_FOUND)
    await err(store, Delete("nope", (DeleteItem("k"),)), Code.SCOPE_NOT_FOUND)
    await err(store, ListKeys("nope"), Code.SCOPE_NOT_FOUND)
    await err(store, Snapshot("nope"), Code.SCOPE_NOT_FOUND)
    await err(store, sset("nope", "k", "v", create=False), Code.SCOPE_NOT_FOUND)
    assert (await ok(store, ListScopes())).scopes == (), "create=false must not create"


async def test_compare_and_set(store: Store) -> None:
    first: SetResult = await ok(store, sset("s", "k", "a", if_version=0))
    v = first.versions[0]
    e = await err(store, sset("s", "k", "b", if_version=0), Code.CONFLICT)
    assert e.details == {"conflicts": [{"key": "k", "expected": 0, "actual": v}]}
    await err(store, sset("s", "k", "b", if_version=v + 100), Code.CONFLICT)
    second: SetResult = await ok(store, sset("s", "k", "b", if_version=v))
    assert second.versions[0] > v
    g: GetResult = await ok(store, Get("s", ("k",)))
    assert g.entries[0] is not None and g.entries[0].value == "b"
    # CAS on a scope that does not exist yet: only "must be absent" can hold.
    await ok(store, sset("fresh", "k", "x", if_version=0))
    await err(store, sset("fresh2", "k", "x", if_version=3), Code.CONFLICT)
    assert "fresh2" not in (await ok(store, ListScopes())).scopes


async def test_batch_set_is_all_or_nothing(store: Store) -> None:
    await ok(store, sset("s", "a", "1"))
    before: GetResult = await ok(store, Get("s", ("a", "b", "c")))
    bad = Set("s", (SetItem("b", "2"), SetItem("a", "x", if_version=999), SetItem("c", "3")))
    e = await err(store, bad, Code.CONFLICT)
    assert e.details is not None and e.details["conflicts"][0]["key"] == "a"
    after: GetResult = await ok(store, Get("s", ("a", "b", "c")))
    assert after == before, "a lost CAS must write nothing"
    good: SetResult = await ok(
        store, Set("s", tuple(SetItem(f"k{i}", f"v{i}") for i in range(100)))
    )
    assert list(good.versions) == list(range(good.versions[0], good.versions[0] + 100))
    got: GetResult = await ok(store, Get("s", tuple(f"k{i}" for i in (99, 0, 50))))
    assert [e.value if e else None for e in got.entries] == ["v99", "v0", "v50"]


async def test_duplicate_keys_in_one_batch_last_wins(store: Store) -> None:
    r: SetResult = await ok(store, Set("s", (SetItem("k", "first"), SetItem("k", "second"))))
    g: GetResult = await ok(store, Get("s", ("k", "k")))
    assert [e.value if e else None for e in g.entries] == ["second", "second"]
    assert g.entries[0] is not None and g.entries[0].version == r.versions[1]


async def test_delete(store: Store) -> None:
    s: SetResult = await ok(store, Set("s", (SetItem("a", "1"), SetItem("b", "2"))))
    d: DeleteResult = await ok(store, Delete("s", (DeleteItem("a"), DeleteItem("zz"))))
    assert d.found == (True, False)
    assert d.revision == s.revision + 1
    assert [(c.op, c.key, c.version, c.revision) for c in d.changes] == [
        ("delete", "a", 0, s.revision + 1)
    ]
    again: DeleteResult = await ok(store, Delete("s", (DeleteItem("a"),)))
    assert again.found == (False,) and again.changes == () and again.revision == d.revision
    g: GetResult = await ok(store, Get("s", ("a", "b")))
    assert g.entries[0] is None and g.entries[1] is not None
    b_version = g.entries[1].version
    await err(store, Delete("s", (DeleteItem("b", if_version=b_version + 1),)), Code.CONFLICT)
    d2: DeleteResult = await ok(store, Delete("s", (DeleteItem("b", if_version=b_version),)))
    assert d2.found == (True,)


async def test_versions_never_repeat_after_delete_and_recreate(store: Store) -> None:
    a: SetResult = await ok(store, sset("s", "k", "1"))
    await ok(store, Delete("s", (DeleteItem("k"),)))
    b: SetResult = await ok(store, sset("s", "k", "1"))
    assert b.versions[0] > a.versions[0]
    await ok(store, DeleteScope("s"))
    c: SetResult = await ok(store, sset("s", "k", "1"))
    assert c.created_scope
    assert c.versions[0] > b.versions[0], "a re-created scope must not reuse revisions"
    g: GetResult = await ok(store, Get("s", ("k",)))
    assert g.entries[0] is not None and g.entries[0].value == "1"


async def test_delete_scope_removes_its_keys(store: Store) -> None:
    await ok(store, Set("s", (SetItem("a", "1"), SetItem("t", "2", ttl_ms=60_000))))
    await ok(store, DeleteScope("s"))
    await ok(store, CreateScope("s"))
    keys: KeyList = await ok(store, ListKeys("s"))
    assert keys.keys == ()
    g: GetResult = await ok(store, Get("s", ("a", "t")))
    assert g.entries == (None, None)


async def test_ttl_expiry_and_sweep(store: Store) -> None:
    await ok(
        store,
        Set("s", (SetItem("short", "x", ttl_ms=200), SetItem("long", "y", ttl_ms=60_000))),
    )
    g: GetResult = await ok(store, Get("s", ("short", "long")))
    assert g.entries[0] is not None and g.entries[0].expires_at is not None
    assert g.entries[0].expires_at > time.time() * 1000 - 5_000
    deadline = time.monotonic() + 5
    while True:
        g = await ok(store, Get("s", ("short",)))
        if g.entries[0] is None:
            break
        assert time.monotonic() < deadline, "key with ttl_ms=200 still readable after 5 s"
        await asyncio.sleep(0.05)
    # Expired keys are invisible everywhere, even before the sweeper ran.
    keys: KeyList = await ok(store, ListKeys("s"))
    assert keys.keys == ("long",)
    snap: SnapshotResult = await ok(store, Snapshot("s"))
    assert [k for k, _ in snap.items] == ["long"]
    swept = await store.sweep_expired()
    assert [(c.scope, c.op, c.key) for c in swept] == [("s", "expire", "short")]
    assert await store.sweep_expired() == []
    log: ChangeLog = await ok(store, ChangesSince("s", 0))
    assert log.changes_since[-1].op == "expire" and log.changes_since[-1].key == "short"
    assert log.changes_since[-1].revision == swept[0].revision == log.revision


async def test_set_without_ttl_clears_ttl(store: Store) -> None:
    await ok(store, sset("s", "k", "x", ttl_ms=150))
    await ok(store, sset("s", "k", "y"))
    await asyncio.sleep(0.3)
    g: GetResult = await ok(store, Get("s", ("k",)))
    assert g.entries[0] is not None and g.entries[0].value == "y"
    assert g.entries[0].expires_at is None
    assert await store.sweep_expired() == []


async def test_cas_sees_expired_key_as_absent(store: Store) -> None:
    await ok(store, sset("s", "lock", "owner-a", ttl_ms=100))
    await err(store, sset("s", "lock", "owner-b", if_version=0), Code.CONFLICT)
    await asyncio.sleep(0.25)
    await ok(store, sset("s", "lock", "owner-b", if_version=0, ttl_ms=60_000))


async def test_list_keys_sorted_prefix_and_paging(store: Store) -> None:
    keys = ["b/2", "a/1", "b/1", "c", "b/3", "é"]
    await ok(store, Set("s", tuple(SetItem(k, "v") for k in keys)))
    assert (await ok(store, ListKeys("s"))).keys == tuple(sorted(keys))
    assert (await ok(store, ListKeys("s", prefix="b/"))).keys == ("b/1", "b/2", "b/3")
    p1: KeyList = await ok(store, ListKeys("s", prefix="b/", limit=2))
    assert p1.keys == ("b/1", "b/2") and p1.next_cursor == "b/2"
    p2: KeyList = await ok(store, ListKeys("s", prefix="b/", limit=2, cursor=p1.next_cursor))
    assert p2.keys == ("b/3",) and p2.next_cursor == ""
    full: KeyList = await ok(store, ListKeys("s", limit=6))
    assert full.next_cursor == "", "an exactly full page has no next page"


async def test_snapshot_matches_revision(store: Store) -> None:
    w: SetResult = await ok(store, Set("s", (SetItem("a", "1"), SetItem("b", "2"))))
    snap: SnapshotResult = await ok(store, Snapshot("s"))
    assert snap.revision == w.revision
    assert [(k, e.value, e.version) for k, e in snap.items] == [
        ("a", "1", w.versions[0]),
        ("b", "2", w.versions[1]),
    ]
    assert not snap.truncated
    assert (await ok(store, Snapshot("s", limit=1))).truncated


async def test_changes_since_replays_history_in_order(store: Store) -> None:
    await ok(store, CreateScope("s"))
    await ok(store, sset("s", "a", "1"))
    await ok(store, Set("s", (SetItem("b", "2"), SetItem("a", "3"))))
    await ok(store, Delete("s", (DeleteItem("b"),)))
    log: ChangeLog = await ok(store, ChangesSince("s", 0))
    assert not log.compacted and not log.more
    assert log.revision == 5
    assert [(c.op, c.key, c.value, c.version, c.revision) for c in log.changes_since] == [
        ("create-scope", "", "", 0, 1),
        ("set", "a", "1", 2, 2),
        ("set", "b", "2", 3, 3),
        ("set", "a", "3", 4, 4),
        ("delete", "b", "", 0, 5),
    ]
    assert all(c.ts > 0 for c in log.changes_since)
    tail: ChangeLog = await ok(store, ChangesSince("s", 3))
    assert [c.revision for c in tail.changes_since] == [4, 5]
    none: ChangeLog = await ok(store, ChangesSince("s", 5))
    assert none.changes_since == () and not none.compacted
    page: ChangeLog = await ok(store, ChangesSince("s", 0, limit=2))
    assert [c.revision for c in page.changes_since] == [1, 2] and page.more


async def test_changes_since_reports_compaction(store: Store) -> None:
    n = TEST_LIMITS.history_len * 3
    for i in range(0, n, 50):
        await ok(store, Set("s", tuple(SetItem(f"k{j}", str(j)) for j in range(i, i + 50))))
    log: ChangeLog = await ok(store, ChangesSince("s", 0))
    assert log.compacted and log.changes_since == ()
    assert log.revision == n + 1
    assert 1 < log.oldest <= n + 1 - TEST_LIMITS.history_len + 1
    recent: ChangeLog = await ok(store, ChangesSince("s", n - 5))
    assert not recent.compacted
    assert [c.revision for c in recent.changes_since] == list(range(n - 4, n + 2))
    # A watcher from the future (the store was reset under it) must re-sync too.
    future: ChangeLog = await ok(store, ChangesSince("s", n + 100))
    assert future.compacted
    # A scope nobody has written is simply empty, not an error (watch before create).
    empty: ChangeLog = await ok(store, ChangesSince("never", 0))
    assert (empty.revision, empty.changes_since, empty.compacted) == (0, (), False)


async def test_ops_in_one_batch_are_independent(store: Store) -> None:
    results = await store.execute(
        [
            sset("s", "k", "1"),
            Get("missing", ("k",)),
            sset("s", "k", "2", if_version=12345),
            Get("s", ("k",)),
            CreateScope("s"),
            ListScopes(),
        ]
    )
    assert isinstance(results[0], SetResult)
    assert isinstance(results[1], StateError) and results[1].code == Code.SCOPE_NOT_FOUND
    assert isinstance(results[2], StateError) and results[2].code == Code.CONFLICT
    assert isinstance(results[3], GetResult)
    assert results[3].entries[0] is not None and results[3].entries[0].value == "1"
    assert isinstance(results[4], StateError) and results[4].code == Code.SCOPE_EXISTS
    assert isinstance(results[5], ScopeList) and results[5].scopes == ("s",)


async def test_unicode_and_empty_values_round_trip(store: Store) -> None:
    items = (
        SetItem("ключ", "значение ✓"),
        SetItem("empty", ""),
        SetItem("json", '{"a": [1, 2, "\\u0000"]}'),
        SetItem("big", "x" * 60_000),
    )
    await ok(store, Set("scope with spaces/and:colons", items))
    g: GetResult = await ok(store, Get("scope with spaces/and:colons", tuple(i.key for i in items)))
    assert [e.value if e else None for e in g.entries] == [i.value for i in items]


async def test_data_survives_reopen(store: Store, tmp_path: Path, redis_prefix: str) -> None:
    await ok(store, Set("s", (SetItem("a", "1"), SetItem("b", "2", ttl_ms=60_000))))
    await store.close()
    again: Store
    if isinstance(store, RedisStore):
        again = RedisStore(store.url, prefix=redis_prefix, limits=TEST_LIMITS)
    else:
        again = SqliteStore(tmp_path / "data", limits=TEST_LIMITS)
    await again.open()
    try:
        g: GetResult = await ok(again, Get("s", ("a", "b")))
        assert [e.value if e else None for e in g.entries] == ["1", "2"]
        assert g.entries[1] is not None and g.entries[1].expires_at is not None
        log: ChangeLog = await ok(again, ChangesSince("s", 0))
        assert log.revision == 3 and len(log.changes_since) == 3
    finally:
        await again.close()


async def test_redis_prefixes_isolate_clusters(redis_server: RedisServer) -> None:
    a = RedisStore(redis_server.url, prefix="clusterA:")
    b = RedisStore(redis_server.url, prefix="clusterB:")
    await a.open()
    await b.open()
    try:
        await ok(a, sset("shared-name", "k", "from-a"))
        await err(b, Get("shared-name", ("k",)), Code.SCOPE_NOT_FOUND)
        await ok(b, sset("shared-name", "k", "from-b"))
        ga: GetResult = await ok(a, Get("shared-name", ("k",)))
        assert ga.entries[0] is not None and ga.entries[0].value == "from-a"
        # The data is one plain hash per scope, readable with redis-cli.
        assert "from-a" in redis_server.command("HGET", "clusterA:s:shared-name:d", "k")
    finally:
        await ok(a, DeleteScope("shared-name"))
        await ok(b, DeleteScope("shared-name"))
        await a.close()
        await b.close()


async def test_sqlite_file_is_private(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "d")
    await s.open()
    try:
        assert (s.path.stat().st_mode & 0o777) == 0o600
        assert (s.path.parent.stat().st_mode & 0o777) == 0o700
    finally:
        await s.close()


async def test_changes_since_pages_inside_one_batch_write(store: Store) -> None:
    await ok(store, Set("s", tuple(SetItem(f"k{i}", str(i)) for i in range(10))))  # revs 2..11
    mid: ChangeLog = await ok(store, ChangesSince("s", 5, limit=3))
    assert [(c.revision, c.key) for c in mid.changes_since] == [(6, "k4"), (7, "k5"), (8, "k6")]
    assert mid.more
    end: ChangeLog = await ok(store, ChangesSince("s", 8, limit=3))
    assert [c.revision for c in end.changes_since] == [9, 10, 11] and not end.more
    await ok(store, Delete("s", (DeleteItem("k1"), DeleteItem("k2"))))
    tail: ChangeLog = await ok(store, ChangesSince("s", 11))
    assert [(c.op, c.key, c.revision) for c in tail.changes_since] == [
        ("delete", "k1", 12),
        ("delete", "k2", 13),
    ]


async def test_redis_store_survives_a_flushed_script_cache(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """After a Redis restart the script cache is empty: NOSCRIPT must reload, not fail."""
    s = RedisStore(redis_server.url, prefix=redis_prefix)
    await s.open()
    try:
        await ok(s, Set("s", (SetItem("k", "1", ttl_ms=100),)))
        assert "OK" in redis_server.command("SCRIPT", "FLUSH")
        g: GetResult = await ok(s, Get("s", ("k",)))
        assert g.entries[0] is not None and g.entries[0].value == "1"
        assert "OK" in redis_server.command("SCRIPT", "FLUSH")
        deadline = time.monotonic() + 5
        swept: list[Any] = []
        while not swept:
            assert time.monotonic() < deadline, "the sweeper never recovered from NOSCRIPT"
            swept = await s.sweep_expired()
            await asyncio.sleep(0.05)
        assert [c.key for c in swept] == ["k"]
    finally:
        await s.close()
