"""A request in flight at a broker that dies (docs/ha.md, "A broker dies mid-request"): real
broker processes on CURVE, a worker that holds the request, ``kill -9`` of the broker.

The client hears ``BROKER_LOST`` as soon as the connection drops, not after its 10 s timeout;
an idempotent request is sent again on a new connection, which here reaches the broker started
again on the same port (as the broker Service reaches another pod on Kubernetes).
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.kit.broker import BrokerProcess, broker_process, make_keys
from tests.kit.timing import HEARTBEAT_MS
from tests.kit.wait import wait_for

from plantd.common import contract
from plantd.common.keys import load_client
from plantd.mdp import AsyncClient, Client, Worker
from plantd.mdp.errors import BrokerError, ErrorCode

pytestmark = pytest.mark.integration

SERVICE = "test.held"
TIMEOUT = 10.0  # the clients' timeout: BROKER_LOST must come long before it
PROMPT = 2.0  # seconds from the kill to the error, at most


class Held:
    """A worker whose first request waits until released (the rest are answered at once)."""

    def __init__(self, endpoint: str, keys: Path) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.calls = 0
        self.worker = Worker(
            endpoint,
            SERVICE,
            self._handle,
            curve=load_client(keys, contract.STATE),
            heartbeat_ms=HEARTBEAT_MS,
        ).start()

    def _handle(self, frames: list[bytes]) -> list[bytes]:
        self.calls += 1
        if self.calls == 1:
            self.started.set()
            self.release.wait(TIMEOUT)
        return [b"done", *frames]

    def stop(self) -> None:
        self.release.set()
        self.worker.stop()


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    return make_keys(tmp_path / "keys", (contract.STATE, contract.CLIENT))


def served(broker: BrokerProcess, keys: Path) -> bool:
    with Client(broker.endpoint, curve=load_client(keys, contract.CLIENT), timeout=2.0) as c:
        return c.mmi("mmi.service", SERVICE) == [b"200"]


@pytest.fixture
def plant(tmp_path: Path, keys: Path) -> Iterator[tuple[BrokerProcess, Held]]:
    broker = broker_process(tmp_path, curve_keys=keys).start_ready()
    held = Held(broker.endpoint, keys)
    try:
        wait_for(lambda: served(broker, keys), 20, "the held worker registered")
        yield broker, held
    finally:
        held.stop()
        broker.stop()


def kill_when_held(broker: BrokerProcess, held: Held) -> Callable[[], float]:
    """Kill -9 the broker once the worker holds the request; returns when it did."""
    killed_at: list[float] = []

    def run() -> None:
        assert held.started.wait(TIMEOUT), "the request never reached the worker"
        broker.signal(signal.SIGKILL)
        killed_at.append(time.monotonic())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def when() -> float:
        thread.join(TIMEOUT)
        return killed_at[0]

    return when


def test_the_blocking_client_hears_broker_lost_at_once(
    plant: tuple[BrokerProcess, Held], keys: Path
) -> None:
    broker, held = plant
    killed = kill_when_held(broker, held)
    with Client(broker.endpoint, curve=load_client(keys, contract.CLIENT), timeout=TIMEOUT) as c:
        with pytest.raises(BrokerError) as lost:
            c.request(SERVICE, "x")  # not idempotent: never sent again
        after = time.monotonic() - killed()
    print(f"[ha] blocking client: BROKER_LOST {after:.2f}s after kill -9 of its broker")
    assert lost.value.code == ErrorCode.BROKER_LOST
    assert "may have run" in lost.value.message
    assert after < PROMPT


def test_the_async_client_hears_broker_lost_at_once(
    plant: tuple[BrokerProcess, Held], keys: Path
) -> None:
    broker, held = plant
    killed = kill_when_held(broker, held)

    async def call() -> BrokerError:
        curve = load_client(keys, contract.CLIENT)
        async with AsyncClient(broker.endpoint, curve=curve, timeout=TIMEOUT) as c:
            try:
                await c.request(SERVICE, "x")
            except BrokerError as exc:
                return exc
            raise AssertionError("the request was answered by a killed broker")

    lost = asyncio.run(call())
    after = time.monotonic() - killed()
    print(f"[ha] async client: BROKER_LOST {after:.2f}s after kill -9 of its broker")
    assert lost.code == ErrorCode.BROKER_LOST
    assert after < PROMPT


def test_an_idempotent_request_is_sent_again_on_a_new_connection(
    plant: tuple[BrokerProcess, Held], keys: Path, tmp_path: Path
) -> None:
    broker, held = plant

    def kill_and_restart() -> None:
        assert held.started.wait(TIMEOUT), "the request never reached the worker"
        broker.signal(signal.SIGKILL)
        broker.wait_exit(10)
        held.release.set()  # its reply goes nowhere; the worker reconnects to the new broker
        again = broker_process(tmp_path, broker.ports, curve_keys=keys)
        again.start().wait_ready()
        plant_brokers.append(again)

    plant_brokers: list[BrokerProcess] = []
    thread = threading.Thread(target=kill_and_restart, daemon=True)
    thread.start()
    started = time.monotonic()
    try:
        with Client(
            broker.endpoint, curve=load_client(keys, contract.CLIENT), timeout=TIMEOUT, retries=1
        ) as c:
            reply = c.request(SERVICE, "x", idempotent=True)
        took = time.monotonic() - started
        thread.join(TIMEOUT)
        print(f"[ha] idempotent request answered by the restarted broker in {took:.2f}s")
        assert reply == [b"done", b"x"]
        assert held.calls == 2  # run again, by the worker that re-registered
        assert took < TIMEOUT
    finally:
        for again in plant_brokers:
            again.stop()


def test_with_two_brokers_up_a_drop_of_the_other_neither_fails_nor_spins(
    tmp_path: Path, keys: Path
) -> None:
    """The request's socket has both brokers connected, so a drop cannot be attributed: the
    request waits for its reply (the other broker's death is not its failure), and the monitor
    event it could not use must not make the client's poll spin."""
    brokers = [broker_process(tmp_path, curve_keys=keys).start_ready() for _ in range(2)]
    helds = [Held(b.endpoint, keys) for b in brokers]
    try:
        for b in brokers:
            wait_for(lambda b=b: served(b, keys), 20, f"the held worker at {b.endpoint}")
        result: list[list[bytes]] = []
        curve = load_client(keys, contract.CLIENT)
        endpoints = ",".join(b.endpoint for b in brokers)

        def call() -> None:
            with Client(endpoints, curve=curve, timeout=TIMEOUT, retries=0) as c:
                started = time.thread_time()
                result.append(c.request(SERVICE, "x"))
                result.append([str(time.thread_time() - started).encode()])

        thread = threading.Thread(target=call, daemon=True)
        thread.start()
        wait_for(lambda: any(h.started.is_set() for h in helds), 10, "the request held")
        holder = next(i for i, h in enumerate(helds) if h.started.is_set())
        brokers[1 - holder].signal(signal.SIGKILL)  # the broker that does not hold it
        time.sleep(1.5)  # the time the request stays held after the drop, not a wait for a result
        helds[holder].release.set()
        thread.join(TIMEOUT)
        assert result and result[0] == [b"done", b"x"], result
        cpu = float(result[1][0])
        print(f"[ha] two brokers, the other killed: answered; client CPU {cpu:.3f}s while held")
        assert cpu < 0.3, f"the client used {cpu:.2f}s of CPU waiting: its poll spun"
    finally:
        for h in helds:
            h.stop()
        for b in brokers:
            b.stop()
