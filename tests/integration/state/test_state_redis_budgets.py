"""The read budget inside the store, for both stores, and what Redis sends when it refuses.

The embedded store stops reading at the reply budget; the Redis store's batch script now counts
sizes (HSTRLEN, only when the worst case would not fit) before it returns values, and pages
changes-since at the same budget. Proved on a real redis-server (the byte counters in ``INFO``
show that refused values never leave Redis, and that a small batch-get never probes) and with
a real ``plantd state --store redis`` process (its peak RSS, ``VmHWM``).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from statekit import (
    Broker,
    RedisServer,
    StateProc,
    client_curve,
    opened_store,
    page_changes,
    vm_hwm,
)

from plantd.mdp import AsyncClient, Client
from plantd.state.client import AsyncStateClient, StateClient, StateReplyError
from plantd.state.errors import Code, StateError
from plantd.state.limits import Limits
from plantd.state.model import (
    ChangeLog,
    ChangesSince,
    Get,
    GetResult,
    Set,
    SetItem,
    Snapshot,
    SnapshotResult,
)
from plantd.state.redis_store import RedisStore
from plantd.state.store import Store

pytestmark = pytest.mark.integration

VALUE = 100_000  # characters per stored value
LIMITS = Limits(max_value_bytes=VALUE, max_reply_bytes=250_000, max_batch_reply_bytes=500_000)
MIB = 1024 * 1024


@pytest.fixture(params=["sqlite", "redis"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, redis_prefix: str
) -> AsyncIterator[Store]:
    """Each store with the small budgets above and keys a, b, c of 100 KB each in scope S."""
    async with opened_store(request, tmp_path, redis_prefix, LIMITS) as s:
        await s.execute([Set("S", tuple(SetItem(k, k * VALUE) for k in "abc"))])
        yield s


def refused(res: object, *words: str) -> None:
    assert isinstance(res, StateError), f"expected REPLY_TOO_LARGE, got {res!r:.200}"
    assert res.code == Code.REPLY_TOO_LARGE, res
    for w in words:
        assert w in res.message, res.message


# ---- the contract: the same budgets from both stores -------------------------------------------


async def test_a_read_over_the_reply_budget_is_refused(store: Store) -> None:
    (res,) = await store.execute([Get("S", ("a", "b", "c"))])  # 300 KB > 250 KB
    refused(res, "max_reply_bytes", "fewer keys")
    (snap,) = await store.execute([Snapshot("S")])
    refused(snap, "max_reply_bytes", "list-keys")
    (two,) = await store.execute([Get("S", ("c", "a"))])
    assert isinstance(two, GetResult)
    assert [e.value[0] if e else None for e in two.entries] == ["c", "a"]
    # A page that fits is returned, truncated, in key order.
    (page,) = await store.execute([Snapshot("S", limit=2)])
    assert isinstance(page, SnapshotResult) and page.truncated
    assert [(k, e.value == k * VALUE) for k, e in page.items] == [("a", True), ("b", True)]


async def test_the_reads_of_one_batch_share_a_budget(store: Store) -> None:
    two = Get("S", ("a", "b"))  # 200 KB each: two fit in the batch's 500 KB, not three
    out = await store.execute([two, two, two, two])
    assert [type(r).__name__ for r in out[:2]] == ["GetResult", "GetResult"]
    for r in out[2:]:
        refused(r, "max_batch_reply_bytes", "retry")
    again = await store.execute([two])  # the next batch has its own budget
    assert isinstance(again[0], GetResult)
    # A refused read spends nothing: the two around it still fit.
    out = await store.execute([two, Get("S", ("a", "b", "c")), two])
    assert [type(r).__name__ for r in out] == ["GetResult", "StateError", "GetResult"]


async def test_single_key_gets_share_the_batch_budget(store: Store) -> None:
    # A worker batch of `credit` state-gets is as big as one batch-get of them all.
    out = await store.execute([Get("S", ("a",))] * 6)  # 100 KB each, 500 KB for the batch
    assert [type(r).__name__ for r in out[:4]] == ["GetResult"] * 4
    for r in out[4:]:
        refused(r, "max_batch_reply_bytes", "state-get")


async def test_changes_since_pages_at_the_budget(store: Store) -> None:
    since, seen, pages = 0, [], 0
    while True:
        (log,) = await store.execute([ChangesSince("S", since)])
        assert isinstance(log, ChangeLog)
        assert sum(len(c.key) + len(c.value) for c in log.changes_since) <= LIMITS.max_reply_bytes
        seen += [(c.key, c.revision) for c in log.changes_since if c.op == "set"]
        pages += 1
        if log.changes_since:
            since = log.changes_since[-1].revision
        if not log.more:
            break
    # One batch-set wrote all three (one history entry in Redis): cut between its changes.
    assert seen == [("a", 2), ("b", 3), ("c", 4)] and pages >= 2


async def test_changes_since_gets_what_the_batch_left(store: Store) -> None:
    # Two 200 KB reads leave 100 KB of the batch's 500 KB: one 100 KB change, then "more".
    two = Get("S", ("a", "b"))
    *_, log = await store.execute([two, two, ChangesSince("S", 1)])
    assert isinstance(log, ChangeLog) and log.more
    assert [c.key for c in log.changes_since] == ["a"]
    (rest,) = await store.execute([ChangesSince("S", log.changes_since[-1].revision)])
    assert isinstance(rest, ChangeLog)
    assert [c.key for c in rest.changes_since] == ["b", "c"] and not rest.more


async def test_one_change_larger_than_the_budget_still_pages_on(
    store: Store,
) -> None:
    big = "z" * (LIMITS.max_reply_bytes + 10)  # stored directly: the store does not check
    await store.execute([Set("S", (SetItem("big", big), SetItem("after", "1")))])
    (log,) = await store.execute([ChangesSince("S", 4)])
    assert isinstance(log, ChangeLog) and log.more
    assert [c.key for c in log.changes_since] == ["big"]
    (rest,) = await store.execute([ChangesSince("S", 5)])
    assert isinstance(rest, ChangeLog) and [c.key for c in rest.changes_since] == ["after"]


async def test_snapshot_page_skips_expired_keys_and_stays_in_key_order(store: Store) -> None:
    keys = ["m", "é", "B", "a/2", "a/1", "z", "_"]
    await store.execute([Set("T", tuple(SetItem(k, "v") for k in keys))])
    await store.execute([Set("T", (SetItem("A", "gone", ttl_ms=1),))])
    await asyncio.sleep(0.05)
    (full,) = await store.execute([Snapshot("T")])
    assert isinstance(full, SnapshotResult) and not full.truncated
    assert [k for k, _ in full.items] == sorted(keys)
    (page,) = await store.execute([Snapshot("T", limit=3)])
    assert isinstance(page, SnapshotResult) and page.truncated
    assert [k for k, _ in page.items] == sorted(keys)[:3]


# ---- Redis: the values stay in Redis ----------------------------------------------------------


def _info(server: RedisServer, section: str, field: str) -> int:
    text = server.command("INFO", section)
    m = re.search(rf"^{re.escape(field)}[:=](\d+)", text, re.M)
    if m is None:
        m = re.search(rf"^{re.escape(field)}:calls=(\d+)", text, re.M)
    return int(m.group(1)) if m else 0


async def test_redis_refuses_without_sending_the_values(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    s = RedisStore(redis_server.url, prefix=redis_prefix, limits=LIMITS)
    await s.open()
    try:
        await s.execute([Set("S", tuple(SetItem(f"k{i}", "x" * VALUE) for i in range(30)))])
        sent = _info(redis_server, "stats", "total_net_output_bytes")
        out = await s.execute([Get("S", tuple(f"k{i}" for i in range(30))), Snapshot("S")])
        for r in out:
            refused(r)
        # 3 MB would have crossed before; now two short error tuples (and the INFO replies).
        grew = _info(redis_server, "stats", "total_net_output_bytes") - sent
        assert grew < 20_000, f"redis sent {grew} bytes for two refused reads"
    finally:
        await s.close()


async def test_redis_small_batch_get_does_not_probe_sizes(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    s = RedisStore(redis_server.url, prefix=redis_prefix)  # default limits: 10 x 1 MiB fits
    await s.open()
    try:
        await s.execute([Set("S", tuple(SetItem(f"k{i}", "v" * 64) for i in range(10)))])
        probes = _info(redis_server, "commandstats", "cmdstat_hstrlen")
        (res,) = await s.execute([Get("S", tuple(f"k{i}" for i in range(10)))])
        assert isinstance(res, GetResult) and all(res.entries)
        assert _info(redis_server, "commandstats", "cmdstat_hstrlen") == probes
        # Past the worst case it probes, and stops at the first key over the budget.
        tight = RedisStore(
            redis_server.url,
            prefix=redis_prefix,
            limits=Limits(max_value_bytes=MIB, max_reply_bytes=2 * MIB),
        )
        await tight.open()
        try:
            (res,) = await tight.execute([Get("S", tuple(f"k{i}" for i in range(10)))])
            assert isinstance(res, GetResult) and all(res.entries)
        finally:
            await tight.close()
        assert _info(redis_server, "commandstats", "cmdstat_hstrlen") == probes + 10
    finally:
        await s.close()


# ---- a real `plantd state --store redis` under the amplifying reads ---------------------------

REPLY_BUDGET = 4 * MIB
BATCH_BUDGET = 8 * MIB
# VmHWM may grow by this much through all the attacks: a few reply budgets (measured +25 MiB)
# plus the render thread's own malloc arena (+4..16 MiB: +29..41 MiB measured), never the 64 MiB
# of values (twice over: the RESP bytes and the decoded strings, +126 MiB measured before the
# budget) an unbounded read pulled.
RSS_BOUND = 64 * MIB


@pytest.fixture
def redis_state(broker: Broker, redis_server: RedisServer, tmp_path: Path) -> Iterator[StateProc]:
    extra = [
        "--redis-prefix", f"b{uuid.uuid4().hex[:8]}:",
        "--max-reply-bytes", str(REPLY_BUDGET),
        "--max-batch-reply-bytes", str(BATCH_BUDGET),
    ]  # fmt: skip
    proc = StateProc(
        "state-redis-budget",
        tmp_path,
        broker,
        store="redis",
        redis_url=redis_server.url,
        extra=extra,
    ).start()
    try:
        yield proc
    finally:
        proc.proc.stop()


async def _get_retrying(sc: AsyncStateClient, keys: list[str]) -> int:
    """batch-get, retried while a busy worker batch had no budget left; the retries taken."""
    for attempt in range(200):
        try:
            await sc.batch_get("amp", keys)
            return attempt
        except StateReplyError as exc:
            if exc.code != "REPLY_TOO_LARGE" or "retry shortly" not in exc.message:
                raise
            await asyncio.sleep(0.01)
    raise AssertionError(f"batch-get of {keys} never found room in a worker batch")


def test_redis_worker_memory_is_bounded_under_amplifying_reads(
    broker: Broker, redis_state: StateProc
) -> None:
    big = "x" * MIB
    keys = [f"big{i}" for i in range(64)]
    with Client(broker.endpoint, timeout=30, retries=0, curve=client_curve(broker.keys_dir)) as c:
        sc = StateClient(c)
        for k in keys:  # 64 MiB in Redis: sixteen reply budgets
            sc.set("amp", k, big)
        sc.set("amp", "small", "ok")
        before = vm_hwm(redis_state.proc.pid)

        for _ in range(3):  # the peak must not move with repetitions
            with pytest.raises(StateReplyError) as info:
                sc.batch_get("amp", keys)
            assert info.value.code == "REPLY_TOO_LARGE" and "fewer keys" in info.value.message
            with pytest.raises(StateReplyError) as info:
                sc.snapshot("amp")
            assert info.value.code == "REPLY_TOO_LARGE" and "list-keys" in info.value.message
        assert sc.batch_get("amp", ["big0"] * 1000)["count"] == 1

        # changes-since pages at the budget: every change arrives, each page under it.
        seen, pages = page_changes(c, "amp", REPLY_BUDGET)
        assert seen == 66 and pages >= 16  # create-scope + 65 sets

    async def concurrent() -> int:
        # 21 reads of 3 MiB at once (each under the reply budget): a store call may carry
        # only BATCH_BUDGET of them; the rest are told to retry, and all get their reply.
        async with AsyncClient(
            broker.endpoint,
            timeout=30,
            retries=0,
            curve=client_curve(broker.keys_dir),
            max_sockets=24,
        ) as ac:
            sc = AsyncStateClient(ac)
            retries = await asyncio.gather(
                *[_get_retrying(sc, keys[i : i + 3]) for i in range(0, 63, 3)]
            )
            return sum(retries)

    retried = asyncio.run(concurrent())
    after = vm_hwm(redis_state.proc.pid)
    print(f"redis state VmHWM {before / MIB:.0f} -> {after / MIB:.0f} MiB, {retried} retries")
    assert after - before < RSS_BOUND, (
        f"the worker's peak RSS grew by {(after - before) / MIB:.0f} MiB "
        f"(from {before / MIB:.0f} MiB); the bound is {RSS_BOUND / MIB:.0f} MiB"
    )
    with Client(broker.endpoint, timeout=10, retries=0, curve=client_curve(broker.keys_dir)) as c:
        assert StateClient(c).get("amp", "small")["value"] == "ok"
    assert redis_state.ready() and redis_state.proc.alive()
