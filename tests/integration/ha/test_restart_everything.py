"""Restart everything at once (docs/ha.md, "What a failure costs"): under a state-write load,
``kill -9`` of the broker, the state service and its Redis (AOF, fsync always) in the same
instant, then all of them started again at once, in no particular order.

Counts: writes acknowledged before and after, writes failed meanwhile (each one in flight at
the kill ends at once in BROKER_LOST, the rest time out or are refused), acknowledged writes
lost (target 0), and the time from the restart to the first acknowledged write (target 10 s).
The same with the SQLite store (one machine: ``plantd up``).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from tests.integration.state.statekit import (
    INSTALL_HINT,
    REDIS_SERVER,
    Broker,
    RedisServer,
    StateProc,
    WriteStream,
    assert_all_present,
    make_keys,
    read_back,
    require,
)
from tests.kit import ServiceProcess

pytestmark = pytest.mark.integration

SCOPE = "everything"
RECOVERY_TARGET_S = 10.0


@pytest.mark.parametrize("store", ["redis", "sqlite"])
async def test_restarting_everything_at_once_loses_no_acknowledged_write(
    store: str, tmp_path: Path
) -> None:
    redis: RedisServer | None = None
    url = ""
    if store == "redis":
        require(REDIS_SERVER is not None, f"redis-server is not installed ({INSTALL_HINT})")
        redis = RedisServer(tmp_path / "redis", appendonly=True, fsync="always")
        redis.start()
        url = redis.url
    keys = make_keys(tmp_path / "keys")
    (tmp_path / "broker").mkdir()
    broker = Broker(tmp_path / "broker", keys).start()
    state = StateProc("state-all", tmp_path, broker, store=store, redis_url=url).start()
    stream = WriteStream(broker.endpoint, keys, SCOPE)
    stream.start()
    try:
        await stream.wait_acked(200)
        # kill -9 of everything, as close to one instant as three signals get.
        for proc in (broker, state.proc):
            proc.kill9()
        if redis is not None:
            redis.kill()
        first_new = stream.next_number  # writes from here on were sent after the kill
        before = len(stream.acked)
        failed_before = sum(stream.errors.values())

        # And everything again at once: the state service may come up before its broker or
        # its Redis, and must find them when they do.
        if redis is not None:
            redis.start()  # same directory and port: replays the AOF
        broker = Broker(tmp_path / "broker", keys, broker.ports)
        ServiceProcess.start(broker)  # spawned, not waited for: all of them at once
        state = StateProc("state-all", tmp_path, broker, store=store, redis_url=url)
        state.start(wait=False)
        restarted_at = time.monotonic()
        await stream.wait_acked(before + 50, within=30)
        first_after = min(t for n, t in stream.acked.items() if n >= first_new)
    finally:
        await stream.stop()
    recovery = first_after - restarted_at
    failed = sum(stream.errors.values()) - failed_before
    print(
        f"[ha] restart everything ({store}): {before} acknowledged before, {failed} failed "
        f"meanwhile {dict(stream.errors)}, first write acknowledged {recovery:.2f}s after the "
        "restart"
    )
    try:
        assert recovery < RECOVERY_TARGET_S
        assert_all_present(read_back(broker, SCOPE, sorted(stream.acked)))
    finally:
        state.proc.stop()
        broker.stop()
        if redis is not None:
            redis.stop()
