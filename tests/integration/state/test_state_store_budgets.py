"""The embedded store's read budgets, file modes, and one batch with a poisoned request.

Real SQLite files in a temporary directory (no mocks); the state service's batch handler is
driven directly, so "the same batch" is certain rather than likely.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from plantd.state.errors import Code, StateError
from plantd.state.limits import Limits
from plantd.state.model import ChangeLog, ChangesSince, Get, GetResult, Set, SetItem, Snapshot
from plantd.state.service import StateService
from plantd.state.sqlite_store import SqliteStore

pytestmark = pytest.mark.integration

VALUE = 100_000  # characters per stored value
LIMITS = Limits(max_value_bytes=VALUE, max_reply_bytes=250_000, max_batch_reply_bytes=500_000)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "data", limits=LIMITS)
    await s.open()
    await s.execute([Set("S", tuple(SetItem(k, k * VALUE) for k in "abc"))])
    try:
        yield s
    finally:
        await s.close()


async def test_a_read_over_the_reply_budget_is_refused_as_it_is_read(store: SqliteStore) -> None:
    (res,) = await store.execute([Get("S", ("a", "b", "c"))])  # 300 KB > 250 KB
    assert isinstance(res, StateError) and res.code == Code.REPLY_TOO_LARGE
    assert "max_reply_bytes" in res.message and "fewer keys" in res.message
    (snap,) = await store.execute([Snapshot("S")])
    assert isinstance(snap, StateError) and snap.code == Code.REPLY_TOO_LARGE
    assert "list-keys" in snap.message


async def test_the_reads_of_one_batch_share_a_budget(store: SqliteStore) -> None:
    two = Get("S", ("a", "b"))  # 200 KB each: two fit in the batch's 500 KB, not three
    out = await store.execute([two, two, two, two, Get("S", ("c",))])
    assert [type(r).__name__ for r in out[:2]] == ["GetResult", "GetResult"]
    for r in out[2:]:  # a single-key get too: 100 KB + its key no longer fit
        assert isinstance(r, StateError) and r.code == Code.REPLY_TOO_LARGE
        assert "max_batch_reply_bytes" in r.message and "retry" in r.message
    again = await store.execute([two])  # the next batch has its own budget
    assert isinstance(again[0], GetResult)


async def test_changes_since_pages_at_the_budget(store: SqliteStore) -> None:
    since, seen, pages = 0, [], 0
    while True:
        (log,) = await store.execute([ChangesSince("S", since)])
        assert isinstance(log, ChangeLog)
        assert sum(len(c.value) for c in log.changes_since) <= LIMITS.max_reply_bytes
        seen += [c.key for c in log.changes_since if c.op == "set"]
        pages += 1
        if log.changes_since:
            since = log.changes_since[-1].revision
        if not log.more:
            break
    assert seen == ["a", "b", "c"] and pages >= 2


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("umask_022")
async def test_database_wal_and_shm_are_0600_and_the_new_directory_0700(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "new" / "data")
    await s.open()
    try:
        await s.execute([Set("S", (SetItem("k", "v"),))])
        data = tmp_path / "new" / "data"
        assert data.stat().st_mode & 0o777 == 0o700
        for name in ("state.db", "state.db-wal", "state.db-shm"):
            mode = (data / name).stat().st_mode & 0o777
            assert mode == 0o600, f"{name} is {oct(mode)}"
    finally:
        await s.close()


@pytest.mark.usefixtures("umask_022")
async def test_an_existing_world_readable_database_is_tightened(tmp_path: Path) -> None:
    data = tmp_path / "old"
    s = SqliteStore(data)
    await s.open()
    await s.execute([Set("S", (SetItem("k", "v"),))])
    await s.close()
    (data / "state.db").chmod(0o644)
    for side in ("state.db-wal", "state.db-shm"):
        (data / side).touch(0o644)
        (data / side).chmod(0o644)
    again = SqliteStore(data)
    await again.open()
    try:
        await again.execute([Set("S", (SetItem("k", "w"),))])
        for name in ("state.db", "state.db-wal", "state.db-shm"):
            mode = (data / name).stat().st_mode & 0o777
            assert mode == 0o600, f"{name} is {oct(mode)}"
        (res,) = await again.execute([Get("S", ("k",))])
        assert isinstance(res, GetResult) and res.entries[0] is not None
        assert res.entries[0].value == "w"
    finally:
        await again.close()


async def test_one_poisoned_request_fails_alone_in_a_batch_of_fifty_writers(
    tmp_path: Path,
) -> None:
    s = SqliteStore(tmp_path / "data")
    await s.open()
    try:
        service = StateService(s)
        batch = [
            [b"state-set", json.dumps({"service": "S", "key": f"w{i}", "value": str(i)}).encode()]
            for i in range(50)
        ]
        poison = b'{"service":"S","key":"p","value":"v","if_version":' + b"9" * 5000 + b"}"
        batch.insert(25, [b"state-set", poison])
        replies = [json.loads(r[0]) for r in await service.handle_batch(batch)]
        bad = replies.pop(25)
        assert bad["success"] is False and bad["code"] == Code.INVALID_REQUEST
        assert [r["success"] for r in replies] == [True] * 50
        (res,) = await s.execute([Get("S", tuple(f"w{i}" for i in range(50)))])
        assert isinstance(res, GetResult)
        assert [e.value if e else None for e in res.entries] == [str(i) for i in range(50)]
    finally:
        await s.close()
