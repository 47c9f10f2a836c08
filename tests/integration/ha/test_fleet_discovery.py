"""WorkerFleet follows a ``dns:`` broker set as brokers come and go (real broker processes on
127.0.0.2 and 127.0.0.3, one port, like the pods behind a headless Service). Only the name
lookup is the test's: it answers what the test says the Service lists now."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.broker.brokerkit import BrokerPorts, BrokerProcess, broker_process
from tests.kit.net import free_port
from tests.kit.timing import HEARTBEAT_MS
from tests.kit.wait import await_for

from plantd.common.discovery import BrokerSet
from plantd.mdp import AsyncClient, AsyncWorker
from plantd.mdp.fleet import WorkerFleet

pytestmark = pytest.mark.integration

SERVICE = "test.fleet"
HOSTS = ("127.0.0.2", "127.0.0.3")


@pytest.fixture
def brokers(tmp_path: Path) -> Iterator[list[BrokerProcess]]:
    port = free_port()
    procs = [broker_process(tmp_path, BrokerPorts(mdp=port, host=h)).start() for h in HOSTS]
    try:
        for proc in procs:
            proc.wait_ready()
        yield procs
    finally:
        for proc in procs:
            proc.stop()


async def registered(endpoint: str) -> bool:
    async with AsyncClient(endpoint, timeout=2.0, retries=0) as c:
        return await c.mmi("mmi.service", SERVICE) == [b"200"]


async def test_a_fleet_follows_the_brokers_a_name_resolves_to(
    brokers: list[BrokerProcess],
) -> None:
    port = int(brokers[0].endpoint.rsplit(":", 1)[1])
    listed: list[str] = [HOSTS[0]]  # what the "headless Service" lists now

    async def resolver(host: str, asked_port: int) -> list[str]:
        assert (host, asked_port) == ("broker-peers.test", port)
        return list(listed)

    credits: dict[str, int] = {}

    def on_broker(endpoint: str, credit: int) -> AsyncWorker:
        credits[endpoint] = credit

        async def handle(frames: list[bytes]) -> list[bytes]:
            return [endpoint.encode(), *frames]

        return AsyncWorker(endpoint, SERVICE, handle, credit=credit, heartbeat_ms=HEARTBEAT_MS)

    brokers_set = BrokerSet(f"dns:tcp://broker-peers.test:{port}", resolver)
    fleet = WorkerFleet(brokers_set, on_broker, credit=4, rediscover_s=0.2, service=SERVICE)
    first, second = (b.endpoint for b in brokers)
    run = asyncio.create_task(fleet.run())
    try:
        await await_for(lambda: registered(first), 20, "registered with the first broker")
        assert not await registered(second)
        assert fleet.connected.is_set() and credits == {first: 4}

        listed.append(HOSTS[1])  # a broker pod became ready
        await await_for(lambda: registered(second), 20, "found the new broker")
        assert credits[second] == 2  # its share of 4 over two brokers
        async with AsyncClient(second, timeout=5.0, retries=0) as c:
            assert await c.request(SERVICE, "hi") == [second.encode(), b"hi"]

        listed.remove(HOSTS[0])  # the first broker's pod went away (it still runs here)

        async def left_first() -> bool:
            return not await registered(first)

        await await_for(left_first, 20, "left the broker the name no longer lists")
        assert await registered(second) and fleet.registered == 1 and fleet.left == 1
    finally:
        await fleet.stop(2.0)
        await asyncio.wait_for(run, 10)
    assert not await registered(second)  # stopping said DISCONNECT to every broker
