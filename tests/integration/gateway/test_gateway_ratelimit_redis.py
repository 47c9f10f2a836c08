"""Rate limits shared through a real redis-server: two limiters (two gateway replicas) on one
Redis give a caller one budget between them, refill on Redis's clock, leave only expiring
keys behind, and fall back to each replica's own buckets while Redis is down; and two real
``plantd gateway`` processes with ``--rate-limit-redis-url`` refuse a caller's calls across
both once their shared burst is spent."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis
from tests.integration.gateway.gatewaykit import gateway_args
from tests.integration.gateway.test_gateway_e2e import mint
from tests.integration.state.statekit import Broker, StateProc
from tests.kit import ServiceProcess, await_for, free_port, http_get, make_keys, metric_value
from tests.kit.redis import RedisServer, require_redis

from plantd.common import contract
from plantd.common.redis_conn import RedisTarget, client_for
from plantd.gateway.calls import RouteClass
from plantd.gateway.ratelimit import LocalLimiter, Policies, Policy
from plantd.gateway.ratelimit_redis import TAKE_ALL, RedisLimiter
from plantd.v1 import state_pb2 as pb
from plantd.v1 import state_pb2_grpc

pytestmark = pytest.mark.integration

ROUTES = (RouteClass.READ, RouteClass.WRITE, RouteClass.CALL, RouteClass.STREAM)


def policies(rate: float, burst: float) -> Policies:
    return Policies(
        subject={r: Policy(rate, burst) for r in ROUTES},
        source={r: Policy(rate * 4, burst * 4) for r in ROUTES},
        login=Policy(1.0, 3),
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    require_redis()
    s = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
async def client(server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    c = client_for(RedisTarget(server.url, socket_timeout=0.5, connect_timeout=0.5))
    await c.flushdb()
    try:
        yield c
    finally:
        await c.aclose()


def replica(client: aioredis.Redis, pol: Policies, **kw: float) -> RedisLimiter:
    return RedisLimiter(client.register_script(TAKE_ALL), pol, LocalLimiter(pol), prefix="t:", **kw)


async def test_two_replicas_share_one_budget(client: aioredis.Redis) -> None:
    pol = policies(rate=0.5, burst=5)
    a, b = replica(client, pol), replica(client, pol)
    answers = [
        await (a if i % 2 else b).check("alice", "10.0.0.1", RouteClass.READ) for i in range(10)
    ]
    # Alone, each replica would allow 5 (10 in all): shared, the subject gets its burst once.
    assert [d.allowed for d in answers] == [True] * 5 + [False] * 5
    refused = answers[-1]
    assert refused.limit == "sub" and 1.0 < refused.retry_after_s <= 2.0
    # Another subject from the same address has its own bucket (the source's is 4x).
    assert (await a.check("bob", "10.0.0.1", RouteClass.READ)).allowed
    # Buckets expire once they would be full again: Redis keeps only recent callers.
    keys = sorted(await client.keys("t:*"))
    assert keys == [
        "t:{rl}:source:read:10.0.0.1",
        "t:{rl}:sub:read:alice",
        "t:{rl}:sub:read:bob",
    ]
    ttl = await client.pttl("t:{rl}:sub:read:alice")
    assert 0 < ttl <= 5 / 0.5 * 1000 + 1000


async def test_a_refused_call_takes_nothing_and_tokens_come_back(client: aioredis.Redis) -> None:
    pol = policies(rate=20.0, burst=2)
    a = replica(client, pol)
    assert all([(await a.check("carol", "10.0.0.2", RouteClass.WRITE)).allowed for _ in range(2)])
    no = await a.check("carol", "10.0.0.2", RouteClass.WRITE)
    assert not no.allowed and no.retry_after_s <= 0.06
    source = await client.hget("t:{rl}:source:write:10.0.0.2", "tokens")
    assert source is not None and float(source) == pytest.approx(6.0, abs=0.1)  # 8 - 2, not 8 - 3

    async def allowed() -> bool:
        return (await a.check("carol", "10.0.0.2", RouteClass.WRITE)).allowed

    await await_for(allowed, 2.0, "a token back after 1/rate s")


async def test_logins_are_limited_per_source_across_replicas(client: aioredis.Redis) -> None:
    pol = policies(rate=1.0, burst=1)
    a, b = replica(client, pol), replica(client, pol)
    got = [await (a, b)[i % 2].check(None, "2001:db8::1", RouteClass.LOGIN) for i in range(3)]
    got.append(await b.check(None, "2001:db8::ffff", RouteClass.LOGIN))  # the same /64
    assert [d.allowed for d in got] == [True, True, True, False]
    assert got[-1].limit == "source"


async def test_while_redis_is_down_each_replica_limits_alone(tmp_path: Path) -> None:
    require_redis()
    server = RedisServer(tmp_path / "redis").start()
    c = client_for(RedisTarget(server.url, socket_timeout=0.2, connect_timeout=0.2))
    try:
        pol = policies(rate=0.1, burst=3)
        a = replica(c, pol, timeout_s=0.2, retry_s=0.5)
        assert (await a.check("dave", "10.0.0.3", RouteClass.CALL)).allowed  # via Redis
        assert a.fallbacks._value.get() == 0
        server.stop()
        t0 = time.monotonic()
        local = [await a.check("dave", "10.0.0.3", RouteClass.CALL) for _ in range(4)]
        # One timeout, then this replica's own buckets (full: 3 allowed), not an outage.
        assert time.monotonic() - t0 < 1.0
        assert [d.allowed for d in local] == [True, True, True, False]
        assert a.fallbacks._value.get() == 4
        server.start()
        await await_for(lambda: _via_redis(a), 10.0, "Redis decides again once it is back")
    finally:
        await c.aclose()
        server.stop()


async def _via_redis(limiter: RedisLimiter) -> bool:
    before = limiter.fallbacks._value.get()
    await limiter.check("erin", "10.0.0.4", RouteClass.READ)
    return limiter.fallbacks._value.get() == before


# ---- two real gateway processes sharing one redis-server ----


def _gateway(
    work: Path, name: str, broker: Broker, keys: Path, jwks: Path, redis_url: str
) -> tuple[ServiceProcess, int]:
    grpc_port, http_port = free_port(), free_port()
    proc = ServiceProcess(
        "plantd.gateway",
        gateway_args(
            broker.endpoint, keys, grpc_port, http_port, jwks,
            "--rate-limit-read-per-s", "2",
            "--rate-limit-burst-s", "1",
            "--rate-limit-redis-url", redis_url,
            "--state-sub-endpoint", broker.state_sub,
            "--log-format", "text",
        ),
        work / f"{name}.log",
        http_port=http_port,
        name=name,
    )  # fmt: skip
    return proc.start().wait_ready(), grpc_port


async def test_two_gateways_give_a_caller_one_budget(
    server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    work = tmp_path_factory.mktemp("shared-limits")
    keys = make_keys(work / "curve", (contract.STATE, contract.CLIENT, contract.GATEWAY))
    (work / "broker").mkdir()
    broker = Broker(work / "broker", keys).start()
    jwks, tokens = mint(work / "jwt")
    state = StateProc(
        "state-shared", work, broker, extra=["--auth", "identity", "--jwks-file", str(jwks)]
    ).start()
    gateways = [_gateway(work, f"gw-{i}", broker, keys, jwks, server.url) for i in range(2)]
    try:
        reader = (("authorization", f"Bearer {tokens['reader']}"),)
        request = pb.GetEntryRequest(scope="plant1", key="absent")
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _, port in gateways]
        stubs = [state_pb2_grpc.StateServiceStub(c) for c in channels]  # type: ignore[misc]
        codes: list[grpc.StatusCode] = []
        for i in range(8):  # alternating: each gateway alone would let its own burst of 2 by
            try:
                await stubs[i % 2].GetEntry(request, metadata=reader, timeout=5)
                codes.append(grpc.StatusCode.OK)
            except grpc.aio.AioRpcError as err:
                codes.append(err.code())
        through = codes.count(grpc.StatusCode.NOT_FOUND)  # reached the state service
        # Burst 2 shared, plus at most one token refilled at 2/s while the calls ran.
        assert 2 <= through <= 3, codes
        assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 8 - through, codes
        for proc, _ in gateways:
            _, text = http_get(proc.url + "/metrics")
            assert metric_value(text, "plantd_gateway_rate_limit_fallbacks_total") == 0
        for c in channels:
            await c.close()
    finally:
        for proc, _ in gateways:
            proc.stop()
        state.proc.stop()
        broker.stop()
