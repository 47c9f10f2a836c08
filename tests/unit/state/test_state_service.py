"""The batch handler, settings and event encoding (pure; the store is a scripted fake)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from plantd.common.config import ConfigError
from plantd.state import events
from plantd.state.auth import RequestContext, denied
from plantd.state.config import StateSettings
from plantd.state.errors import Code, StateError, StoreUnavailable
from plantd.state.limits import DEFAULT_LIMITS
from plantd.state.metrics import StateMetrics
from plantd.state.model import (
    Change,
    Entry,
    ExistsResult,
    Get,
    GetResult,
    Op,
    Result,
    ScopeExists,
    Set,
    SetResult,
    history_compacted,
)
from plantd.state.redis_store import redact_url
from plantd.state.service import StateService
from plantd.state.store import Store

pytestmark = pytest.mark.unit


class FakeStore(Store):
    kind = "fake"

    def __init__(self) -> None:
        super().__init__(DEFAULT_LIMITS)
        self.batches: list[list[Op]] = []
        self.down = False
        self.boom = False

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None: ...

    @property
    def available(self) -> bool:
        return not self.down

    async def sweep_expired(self, max_keys: int = 1000) -> list[Change]:
        return [Change("S", "expire", "t", "", 0, 9, 1)]

    async def execute(self, ops: Sequence[Op]) -> list[Result | StateError]:
        self.batches.append(list(ops))
        if self.down:
            raise StoreUnavailable("redis 127.0.0.1:1: connection refused")
        if self.boom:
            raise ZeroDivisionError("bug")
        out: list[Result | StateError] = []
        for op in ops:
            if isinstance(op, Get):
                out.append(GetResult(tuple(Entry("v", 1) for _ in op.keys)))
            elif isinstance(op, Set):
                ch = Change(op.scope, "set", op.items[0].key, op.items[0].value, 2, 2, 5)
                out.append(SetResult((2,), 2, False, 5, changes=(ch,)))
            elif isinstance(op, ScopeExists):
                out.append(ExistsResult(True))
            else:
                out.append(StateError(Code.INTERNAL, "unexpected"))
        return out


class FakeSink:
    def __init__(self, watched: set[str]) -> None:
        self.watched = watched
        self.sent: list[tuple[bytes, bytes]] = []

    def publish(self, topic: str | bytes, payload: bytes) -> None:
        self.sent.append((topic if isinstance(topic, bytes) else topic.encode(), payload))

    def has_subscriber(self, topic: str | bytes) -> bool:
        t = topic if isinstance(topic, str) else topic.decode()
        return t in self.watched


def frames(op: str, body: Any) -> list[bytes]:
    return [op.encode(), json.dumps(body).encode()]


def docs(replies: list[list[bytes]]) -> list[dict[str, Any]]:
    assert all(len(r) == 1 for r in replies), "one JSON frame per reply"
    return [json.loads(r[0]) for r in replies]


async def test_one_store_call_per_batch_and_bad_requests_skip_the_store() -> None:
    store, sink = FakeStore(), FakeSink({"S"})
    registry = CollectorRegistry()
    svc = StateService(store, sink=sink, metrics=StateMetrics(registry, lambda: True))
    out = docs(
        await svc.handle_batch(
            [
                frames("state-get", {"service": "S", "key": "a"}),
                [b"state-get", b"{broken"],
                frames("state-set", {"service": "S", "key": "k", "value": "v"}),
                frames("state-set", {"service": "Unwatched", "key": "k", "value": "v"}),
                [b"nope"],
            ]
        )
    )
    assert len(store.batches) == 1 and len(store.batches[0]) == 3
    assert [d["success"] for d in out] == [True, False, True, True, False]
    assert out[1]["code"] == Code.INVALID_REQUEST and out[4]["code"] == Code.UNKNOWN_OPERATION
    # Only the watched scope's change is encoded and published.
    assert [t for t, _ in sink.sent] == [b"S"]
    assert json.loads(sink.sent[0][1]) == {
        "op": "set",
        "key": "k",
        "value": "v",
        "version": 2,
        "revision": 2,
        "ts": 5,
    }
    value = registry.get_sample_value
    assert value("plantd_state_operations_total", {"operation": "state-set", "result": "ok"}) == 2
    assert (
        value(
            "plantd_state_operations_total",
            {"operation": "state-get", "result": "INVALID_REQUEST"},
        )
        == 1
    )
    assert (
        value(
            "plantd_state_operations_total", {"operation": "invalid", "result": "UNKNOWN_OPERATION"}
        )
        == 1
    )
    assert value("plantd_state_watch_events_published_total") == 1
    assert value("plantd_state_request_seconds_count") == 5
    assert value("plantd_state_store_up") == 1


async def test_store_outage_fails_fast_but_health_answers() -> None:
    store = FakeStore()
    svc = StateService(store)
    store.down = True
    out = docs(
        await svc.handle_batch(
            [frames("state-get", {"service": "S", "key": "a"}), frames("health", {})]
        )
    )
    assert out[0]["code"] == Code.STORE_UNAVAILABLE and "connection refused" in out[0]["error"]
    assert out[1]["success"] is True and out[1]["data"]["status"] == "unhealthy"
    assert store.batches == [[Get("S", ("a",))]], "health skips a store known to be down"


async def test_store_bug_costs_one_batch_not_the_worker() -> None:
    store = FakeStore()
    svc = StateService(store)
    store.boom = True
    out = docs(await svc.handle_batch([frames("state-get", {"service": "S", "key": "a"})]))
    assert out[0]["code"] == Code.INTERNAL and "ZeroDivisionError" in out[0]["error"]
    store.boom = False
    out = docs(await svc.handle_batch([frames("state-get", {"service": "S", "key": "a"})]))
    assert out[0]["success"] is True


async def test_authorizer_seam_refuses_before_the_store() -> None:
    class ReadOnly:
        def check(self, ctx: RequestContext, permission: str) -> StateError | None:
            return None if permission == "state:data:read" else denied(ctx, permission)

    store = FakeStore()
    svc = StateService(store, authorizer=ReadOnly())
    out = docs(
        await svc.handle_batch(
            [
                frames("state-set", {"service": "S", "key": "k", "value": "v"}),
                frames("state-get", {"service": "S", "key": "k"}),
            ]
        )
    )
    assert out[0]["code"] == Code.PERMISSION_DENIED
    assert "state:data:write on scope 'S'" in out[0]["error"]
    assert out[1]["success"] is True
    assert store.batches == [[Get("S", ("k",))]]


async def test_sweep_publishes_expiries() -> None:
    sink = FakeSink({"S"})
    svc = StateService(FakeStore(), sink=sink)
    assert await svc.sweep_once() == 1
    assert json.loads(sink.sent[0][1])["op"] == "expire"


def test_event_round_trip_and_rejects() -> None:
    ch = Change("org.plantd.Client", "set", "k", "v ✓", 3, 3, 1700000000000)
    topic, payload = events.encode(ch)
    assert events.decode(topic, payload) == ch
    for bad in (b"{}", b"nope", b'{"op":"explode","key":"","value":"","version":0,'
                b'"revision":1,"ts":0}'):  # fmt: skip
        with pytest.raises(ValueError, match="not a state change event"):
            events.decode(b"S", bad)


def test_history_compacted_rules() -> None:
    assert not history_compacted(since=5, current=5, oldest=0)
    assert not history_compacted(since=3, current=9, oldest=4)
    assert history_compacted(since=2, current=9, oldest=4)
    assert history_compacted(since=2, current=9, oldest=0)
    assert history_compacted(since=10, current=9, oldest=1)


def test_settings_env_and_validation() -> None:
    env = {
        "PLANTD_STATE_STORE": "redis",
        "PLANTD_STATE_REDIS_URL": "redis://u:hunter2@redis:6379/0",
        "PLANTD_STATE_REDIS_PASSWORD": "s3cret",
    }
    s = StateSettings.load(environ=env)
    assert isinstance(s, StateSettings)
    assert s.store == "redis" and s.http_port == 8082
    assert s.bus_endpoint == "tcp://127.0.0.1:11000"
    public = json.dumps(s.public_dict())
    assert "hunter2" not in public and "s3cret" not in public
    assert "redis://u:***@redis:6379/0" in public
    with pytest.raises(ConfigError, match="needs redis_url"):
        StateSettings.load(environ={"PLANTD_STATE_STORE": "redis"})
    with pytest.raises(ConfigError, match="redis_url"):
        StateSettings.load(environ={"PLANTD_STATE_REDIS_URL": "http://x"})
    flags = StateSettings.load(flags={"credit": 7}, environ={"PLANTD_STATE_CREDIT": "9"})
    assert isinstance(flags, StateSettings) and flags.credit == 7
    assert "redis_password" in StateSettings.cli_hidden, "never a command-line flag"


def test_redact_url() -> None:
    assert redact_url("redis://:pw@h:1/0") == "redis://:***@h:1/0"
    assert redact_url("rediss://user:pw@h/2") == "rediss://user:***@h/2"
    assert redact_url("redis://h:1/0") == "redis://h:1/0"


async def test_group_commit_merges_batches_that_wait_for_a_busy_store() -> None:
    import asyncio

    from plantd.state.group import GroupCommit

    gate = asyncio.Event()
    calls: list[list[int]] = []

    async def run(items: list[int]) -> list[int]:
        calls.append(items)
        if len(calls) == 1:
            await gate.wait()  # the first call is slow: the next three queue behind it
        if -1 in items:
            raise StoreUnavailable("down")
        return [i * 10 for i in items]

    gc: GroupCommit[int, int] = GroupCommit(run)
    first = asyncio.create_task(gc.submit([1]))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(gc.submit(b)) for b in ([2, 3], [4], [5, 6])]
    await asyncio.sleep(0)
    gate.set()
    assert await first == [10]
    assert [await w for w in waiting] == [[20, 30], [40], [50, 60]]
    assert calls == [[1], [2, 3, 4, 5, 6]], "queued batches must go as one store call"
    with pytest.raises(StoreUnavailable):
        await gc.submit([-1])
    assert await gc.submit([7]) == [70], "a failed call must not wedge the queue"


def test_watch_bus_endpoint_follows_the_broker_endpoint() -> None:
    from plantd.cli.settings import ClientSettings
    from plantd.state.cli import bus_endpoint_for

    def for_endpoint(endpoint: str, given: str | None = None) -> str:
        settings = ClientSettings.__new__(ClientSettings)
        object.__setattr__(settings, "endpoint", endpoint)
        return bus_endpoint_for(settings, given)

    assert for_endpoint("tcp://127.0.0.1:9797") == "tcp://127.0.0.1:11001"
    # `plantd up --port-offset 100` moves every port by 100
    assert for_endpoint("tcp://10.0.0.5:9897") == "tcp://10.0.0.5:11101"
    assert for_endpoint("tcp://h:9797", "tcp://other:1") == "tcp://other:1"
    assert for_endpoint("ipc:///tmp/x") == "tcp://127.0.0.1:11001"


def test_wait_for_replicas_must_end_before_the_redis_read_timeout() -> None:
    url = {"store": "redis", "redis_url": "redis+sentinel://s1,s2/plant"}
    ok = StateSettings.load(flags={**url, "redis_wait_replicas": 1})
    assert (ok.redis_wait_replicas, ok.redis_wait_timeout_ms) == (1, 500)
    with pytest.raises(ConfigError, match=r"redis_wait_timeout_ms \(3000\) must be below"):
        StateSettings.load(flags={**url, "redis_wait_replicas": 1, "redis_wait_timeout_ms": 3000})
    with pytest.raises(ConfigError, match="name the master"):
        StateSettings.load(flags={"store": "redis", "redis_url": "redis+sentinel://s1"})
