"""Durability and outages with real processes: kill -9 the service, kill -9 Redis, stop Redis.

Every write the service acknowledged must be there afterwards (per the store's documented
guarantee, docs/state.md); while Redis is down requests fail fast with STORE_UNAVAILABLE and
the service recovers by itself.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from statekit import (
    INSTALL_HINT,
    REDIS_SERVER,
    Broker,
    RedisServer,
    StateProc,
    WriteStream,
    assert_all_present,
    await_for,
    client_curve,
    http_get,
    read_back,
    require,
    wait_for,
)

from plantd.mdp import Client
from plantd.state.client import StateClient

pytestmark = pytest.mark.integration


async def _has(stream: WriteStream, code: str) -> bool:
    return stream.errors.get(code, 0) > 0


@pytest.fixture
def fresh_redis(tmp_path: Path) -> Iterator[RedisServer]:
    require(REDIS_SERVER is not None, f"redis-server is not installed ({INSTALL_HINT})")
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("kind", ["sqlite", "sqlite-normal", "redis"])
async def test_kill9_of_the_service_loses_no_acknowledged_write(
    kind: str, broker: Broker, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """sqlite-normal: ``--sqlite-sync normal`` skips the fsync per batch, but a committed
    transaction is in the WAL file (the OS page cache) before the ack, so a process crash
    loses nothing; only an OS crash or power loss may (docs/state.md)."""
    url = ""
    prefix = f"k9{uuid.uuid4().hex[:6]}:"
    if kind == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        url = server.url
    flags = ["--redis-prefix", prefix]
    if kind == "sqlite-normal":
        kind = "sqlite"
        flags += ["--sqlite-sync", "normal"]
    state = StateProc("state-k9", tmp_path, broker, store=kind, redis_url=url, extra=flags)
    state.start()
    scope = "durability"
    stream = WriteStream(broker.endpoint, broker.keys_dir, scope)
    stream.start()
    try:
        await stream.wait_acked(300)
        state.proc.kill9()  # mid-stream: requests are in flight right now
    finally:
        await stream.stop()
    acked = sorted(stream.acked)
    assert len(acked) >= 300
    again = StateProc("state-k9", tmp_path, broker, store=kind, redis_url=url, extra=flags)
    again.start()
    try:
        assert_all_present(read_back(broker, scope, acked))
    finally:
        again.proc.stop()


@pytest.mark.parametrize("fsync", ["always", "everysec"])
async def test_redis_kill9_with_aof_keeps_acknowledged_writes(
    fsync: str, broker: Broker, tmp_path: Path
) -> None:
    """always: every acknowledged write survives; everysec: all but the last ~2 s (Redis docs)."""
    require(REDIS_SERVER is not None, f"redis-server is not installed ({INSTALL_HINT})")
    server = RedisServer(tmp_path / "redis", appendonly=True, fsync=fsync)
    server.start()
    state = StateProc("state-aof", tmp_path, broker, store="redis", redis_url=server.url)
    try:
        state.start()
        stream = WriteStream(broker.endpoint, broker.keys_dir, "aof")
        stream.start()
        try:
            await stream.wait_acked(300)
            if fsync == "everysec":
                # Writes older than the loss window must survive: let the stream outlive it.
                first = min(stream.acked.values())
                await_deadline = first + 2.5
                while time.monotonic() < await_deadline:
                    await stream.wait_acked(len(stream.acked) + 1)
            server.kill()
            killed_at = time.monotonic()
            # The stream runs on into the outage: those writes are refused, not acknowledged.
            await await_for(
                lambda: _has(stream, "STORE_UNAVAILABLE"), 10, "STORE_UNAVAILABLE replies"
            )
        finally:
            await stream.stop()
        server.start()  # same directory and port: replays the AOF
        wait_for(state.ready, 15, "the state service to reconnect to Redis")
        if fsync == "always":
            must = sorted(stream.acked)
        else:
            must = sorted(n for n, t in stream.acked.items() if t < killed_at - 2.0)
        assert len(must) >= 100
        assert_all_present(read_back(broker, "aof", must))
    finally:
        state.proc.stop()
        server.stop()


async def test_redis_outage_fails_fast_then_recovers(
    broker: Broker, fresh_redis: RedisServer, tmp_path: Path
) -> None:
    state = StateProc(
        "state-outage", tmp_path, broker, store="redis", redis_url=fresh_redis.url
    ).start()
    try:
        with Client(
            broker.endpoint, timeout=5, retries=0, curve=client_curve(broker.keys_dir)
        ) as c:
            sc = StateClient(c)
            sc.set("o", "k", "before")
            fresh_redis.stop()
            codes = []
            for i in range(20):
                t0 = time.monotonic()
                reply = json.loads(
                    c.request(
                        "org.plantd.State",
                        "state-set",
                        json.dumps({"service": "o", "key": f"x{i}", "value": "v"}),
                    )[0]
                )
                assert time.monotonic() - t0 < 2.5, "a request hung on the dead store"
                codes.append(reply.get("code"))
            assert codes == ["STORE_UNAVAILABLE"] * 20, codes
            status, body = http_get(state.url + "/readyz")
            assert status == 503 and json.loads(body)["checks"]["store"] is False
            health = sc.health()
            assert health["status"] == "unhealthy" and health["store_available"] is False
            assert state.metric("plantd_state_store_up") == 0.0
            assert state.metric("plantd_state_store_errors_total") >= 1
            fresh_redis.start()
            wait_for(state.ready, 15, "the state service to reconnect to Redis")
            assert sc.set("o", "k", "after")["value"] == "after"
            assert sc.get("o", "k")["value"] == "after"
            assert state.proc.alive()
    finally:
        state.proc.stop()
