"""The state store's reconnect loop outlives whatever a connect attempt raises (no Redis here:
the connect step is replaced; tests/integration/state/test_state_durability.py runs the real
outage against a real redis-server)."""

from __future__ import annotations

import asyncio

import pytest

from plantd.state.errors import StoreUnavailable
from plantd.state.redis_store import RedisStore


def closed_port_store() -> RedisStore:
    # Port 1 on loopback: nothing listens, so a real connect would be refused at once.
    return RedisStore("redis://127.0.0.1:1/0", max_backoff=0.01)


async def until(condition: object, seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_an_unexpected_error_while_reconnecting_does_not_end_the_loop() -> None:
    store = closed_port_store()
    await store.open()  # refused: down, and reconnecting in the background
    assert not store.available
    attempts = 0

    async def flaky_connect() -> None:
        nonlocal attempts
        attempts += 1
        if attempts <= 3:  # what redis-py issue 4287 leaks, then a bug of ours
            raise [TypeError, AttributeError, RuntimeError][attempts - 1]("transport gone")
        store._available = True

    store._connect = flaky_connect  # type: ignore[method-assign]
    try:
        await until(lambda: store.available)
        assert attempts == 4
    finally:
        await store.close()


async def test_a_batch_on_a_down_store_restarts_a_reconnect_loop_that_ended() -> None:
    store = closed_port_store()
    await store.open()
    loop_task = store._reconnector
    assert loop_task is not None
    loop_task.cancel()  # however it ended, nothing would bring the store back
    with pytest.raises(asyncio.CancelledError):
        await loop_task

    async def connect_ok() -> None:
        store._available = True

    store._connect = connect_ok  # type: ignore[method-assign]
    try:
        with pytest.raises(StoreUnavailable):
            await store.execute([])
        await until(lambda: store.available)
        assert store._reconnector is not loop_task
    finally:
        await store.close()


async def test_a_closed_store_starts_no_reconnect_loop() -> None:
    store = closed_port_store()
    await store.open()
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.execute([])
    assert store._reconnector is None
