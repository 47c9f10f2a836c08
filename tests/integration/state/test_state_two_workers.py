"""Two state workers on one Redis (horizontal scaling): no lost update, one ordered history."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from pathlib import Path

import pytest
from statekit import PYTHON, Broker, RedisServer, StateProc, base_env, client_curve, stop_process

from plantd.mdp import AsyncClient, Client
from plantd.state.client import AsyncStateClient, StateClient, StateReplyError

pytestmark = pytest.mark.integration

TASKS = 8
INCREMENTS = 25


async def test_two_workers_serve_one_redis_with_cas_and_ordered_watch(
    broker: Broker, redis_server: RedisServer, tmp_path: Path
) -> None:
    prefix = f"two{uuid.uuid4().hex[:6]}:"
    # Low credit so the broker must spread 8 concurrent callers over both workers.
    flags = ["--redis-prefix", prefix, "--credit", "2"]
    workers = [
        StateProc(
            f"state-w{i}", tmp_path, broker, store="redis", redis_url=redis_server.url, extra=flags
        )
        for i in (1, 2)
    ]
    try:
        for w in workers:
            w.start()
        served = await _run(broker, tmp_path, workers)
    finally:
        for w in workers:
            w.proc.stop()
    for name, n in served.items():
        assert n > 0, f"{name} served no writes: the test did not scale out"


async def _run(broker: Broker, tmp_path: Path, workers: list[StateProc]) -> dict[str, float]:
    scope = "counter"
    with Client(broker.endpoint, timeout=5, retries=0, curve=client_curve(broker.keys_dir)) as c:
        start = StateClient(c).set(scope, "n", "0")["revision"]
    total = TASKS * INCREMENTS
    watcher = subprocess.Popen(  # noqa: ASYNC220 - starting a child does not block
        [
            PYTHON,
            "-m",
            "plantd.cli.plant",
            "--endpoint",
            broker.endpoint,
            "--curve-keys",
            str(broker.keys_dir),
            "--json",
            "state",
            "watch",
            "--service",
            scope,
            "--bus-endpoint",
            broker.state_sub,
            "--from-revision",
            str(start),
            "--count",
            str(total),
            "--idle-timeout",
            "30",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**base_env(), "PLANTD_CONFIG": str(tmp_path / "absent.yaml")},
    )
    conflicts = 0
    try:
        async with AsyncClient(
            broker.endpoint, timeout=5, retries=0, curve=client_curve(broker.keys_dir)
        ) as ac:
            sc = AsyncStateClient(ac)

            async def incrementer() -> None:
                nonlocal conflicts
                for _ in range(INCREMENTS):
                    while True:
                        cur = await sc.get(scope, "n")
                        try:
                            await sc.set(
                                scope, "n", str(int(cur["value"]) + 1), if_version=cur["version"]
                            )
                            break
                        except StateReplyError as exc:
                            assert exc.code == "CONFLICT", exc
                            conflicts += 1

            await asyncio.gather(*(incrementer() for _ in range(TASKS)))
            final = await sc.get(scope, "n")
        assert final["value"] == str(total), "compare-and-set lost an update"
        out, err = watcher.communicate(timeout=60)
    finally:
        stop_process(watcher)
    assert conflicts > 0, "8 racing writers should have hit CONFLICT at least once"
    assert watcher.returncode == 0, err.decode()
    events = [json.loads(line) for line in out.decode().splitlines()]
    # Both workers published; the watcher still yields one gap-free, ordered history.
    assert [e["revision"] for e in events] == list(range(start + 1, start + total + 1))
    assert [e["value"] for e in events] == [str(i) for i in range(1, total + 1)]
    assert {e["scope"] for e in events} == {scope}
    return {
        w.proc.name: w.metric("plantd_state_operations_total", 'operation="state-set",result="ok"')
        for w in workers
    }
