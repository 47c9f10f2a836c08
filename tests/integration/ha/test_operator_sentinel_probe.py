"""The operator's Sentinel probe (plantd_operator.sentinel) against real Sentinels: a
primary, two replicas and three Sentinels as processes; kill -9 the primary and the probe
reports the failover, then the new primary."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from tests.kit import RedisSentinels, RedisServer, await_for, free_port, wait_for

from plantd_operator import status
from plantd_operator.sentinel import SentinelView, probe

pytestmark = pytest.mark.integration
PASSWORD = "probe-test-pw"


def _in_sync(server: RedisServer) -> int:
    with redis.Redis(port=server.port, password=server.password, socket_timeout=2) as r:
        info = r.info("replication")
    return sum(1 for k, v in info.items() if k.startswith("slave") and v.get("state") == "online")


@pytest.fixture
def plant(tmp_path: Path) -> Iterator[tuple[RedisServer, list[RedisServer], RedisSentinels]]:
    primary = RedisServer(tmp_path / "primary", password=PASSWORD).start()
    replicas = [
        RedisServer(tmp_path / f"replica-{i}", password=PASSWORD, replica_of=primary)
        for i in range(2)
    ]
    sentinels = RedisSentinels(tmp_path / "sentinels", primary)
    try:
        for r in replicas:
            r.start()
        wait_for(lambda: _in_sync(primary) == 2, 15, "both replicas in sync")
        sentinels.start()
        yield primary, replicas, sentinels
    finally:
        sentinels.stop()
        for server in (primary, *replicas):
            server.stop()


def hosts(sentinels: RedisSentinels) -> list[str]:
    return [f"127.0.0.1:{p}" for p in sentinels.ports]


async def test_the_probe_reports_primary_replicas_and_a_failover(
    plant: tuple[RedisServer, list[RedisServer], RedisSentinels],
) -> None:
    primary, replicas, sentinels = plant
    # The Sentinels of tests.kit take no password (the data nodes do).
    first = await await_for(
        lambda: _settled(hosts(sentinels), sentinels.master), 20, "all Sentinels and replicas seen"
    )
    assert first is not None and first.primary_port == primary.port
    assert (first.replicas, first.replicas_in_sync, first.quorum) == (2, 2, 2)
    before = status.store_status(first, {}, "t0")

    primary.kill()
    killed = time.monotonic()

    async def moved() -> SentinelView | None:
        view = await probe(hosts(sentinels), sentinels.master, None)
        ports = {r.port for r in replicas}
        return view if view.primary_port in ports and not view.failing_over else None

    after = await await_for(moved, 20, "the probe naming a promoted replica", interval=0.2)
    assert after is not None
    print(f"\n[probe] new primary seen {time.monotonic() - killed:.1f}s after kill -9")
    # The same host (127.0.0.1) here: status tells primaries apart by host, as pods are.
    assert status.store_status(after, before, "t1")["primary"] == "127.0.0.1"


async def _settled(addresses: list[str], master: str) -> SentinelView | None:
    view = await probe(addresses, master, None)
    return view if view.sentinels == 3 and view.replicas_in_sync == 2 else None


async def test_nobody_answering_is_an_error_that_names_each_sentinel() -> None:
    dead = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    start = time.monotonic()
    view = await probe(dead, "plantd", None, io_timeout=0.5)
    assert view.error is not None
    assert all(a.split(":")[1] in view.error for a in dead), view.error
    assert view.primary is None
    assert time.monotonic() - start < 3
