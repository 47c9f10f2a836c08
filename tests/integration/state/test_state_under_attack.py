"""The state service under attack, with real processes: a real broker, a real ``plantd state``.

Each test reproduces a case of issue 7 that failed before it was fixed:
- one stored 1 MiB value named 200 times in one batch-get took the worker to several GB and
  blocked its loop past the heartbeat expiry; now repeats are de-duplicated and replies are
  budgeted while they are read and built (RSS measured from /proc/PID/status);
- one request with a 5000-digit integer failed every request in its worker batch.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from statekit import Broker, StateProc, client_curve, page_changes, vm_hwm
from tests.kit import wait_for

from plantd.mdp import AsyncClient, Client
from plantd.state.client import AsyncStateClient, StateClient, StateReplyError

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
REPLY_BUDGET = 4 * MIB  # --max-reply-bytes of the service under test
# VmHWM may grow by this much through all the attacks: a few reply budgets (the rows read, the
# formatted reply, its bytes), never the hundreds of MiB an unbounded reply costs.
RSS_BOUND = 48 * MIB


def call(c: Client, op: str, body: dict[str, object]) -> dict[str, object]:
    reply = c.request("org.plantd.State", op, json.dumps(body))
    doc: dict[str, object] = json.loads(reply[0])
    return doc


@pytest.fixture
def state(broker: Broker, tmp_path: Path) -> Iterator[StateProc]:
    proc = StateProc(
        "state-hostile",
        tmp_path,
        broker,
        extra=["--max-reply-bytes", str(REPLY_BUDGET), "--sqlite-sync", "normal"],
    ).start()
    try:
        yield proc
    finally:
        proc.proc.stop()


def test_amplifying_reads_cost_bounded_memory_and_keep_the_worker_serving(
    broker: Broker, state: StateProc
) -> None:
    big = "x" * MIB
    with Client(broker.endpoint, timeout=30, retries=0, curve=client_curve(broker.keys_dir)) as c:
        sc = StateClient(c)
        for i in range(12):  # 12 MiB of values in one scope: three reply budgets
            sc.set("amp", f"big{i}", big)
        sc.set("amp", "small", "ok")
        sc.set("amp", "big0", big)  # history holds big0 twice
        pid = state.proc.pid
        before = vm_hwm(pid)

        # The request: ~1.4 KB naming one 1 MiB key 200 times.
        many = sc.batch_get("amp", ["big0"] * 200)
        assert many["count"] == 1 and len(many["items"]) == 1
        assert many["items"][0]["value"] == big

        # Distinct keys over the budget: refused while read, saying how to page.
        with pytest.raises(StateReplyError) as info:
            sc.batch_get("amp", [f"big{i}" for i in range(12)])
        assert info.value.code == "REPLY_TOO_LARGE" and "fewer keys" in info.value.message
        with pytest.raises(StateReplyError) as info:
            sc.snapshot("amp")
        assert info.value.code == "REPLY_TOO_LARGE" and "list-keys" in info.value.message

        # changes-since pages at the budget: every change arrives, each page under it.
        seen, pages = page_changes(c, "amp", REPLY_BUDGET)
        assert seen == 15 and pages >= 4  # 14 sets + create-scope, 13 MiB of values

        # Every attack again, five times: the peak must not move with repetitions either.
        for _ in range(5):
            assert sc.batch_get("amp", ["big1"] * 1000)["count"] == 1
            with pytest.raises(StateReplyError):
                sc.batch_get("amp", [f"big{i}" for i in range(12)])
        after = vm_hwm(pid)
        print(f"state VmHWM {before / MIB:.0f} -> {after / MIB:.0f} MiB")  # shown with -s
        assert after - before < RSS_BOUND, (
            f"the worker's peak RSS grew by {(after - before) / MIB:.0f} MiB "
            f"(from {before / MIB:.0f} MiB); the bound is {RSS_BOUND / MIB:.0f} MiB"
        )
        # Still serving, still registered, still ready.
        assert sc.get("amp", "small")["value"] == "ok"
    assert state.ready() and state.proc.alive()


async def test_a_poisoned_request_fails_alone_in_its_batch(
    broker: Broker, state: StateProc
) -> None:
    poison = '{"service":"batch","key":"p","value":"v","if_version":' + "9" * 5000 + "}"
    async with AsyncClient(
        broker.endpoint,
        timeout=15,
        retries=0,
        curve=client_curve(broker.keys_dir),
        max_sockets=64,
    ) as ac:
        sc = AsyncStateClient(ac)
        await sc.set("batch", "warm", "up")
        for round_ in range(3):
            writes = [sc.set("batch", f"w{round_}-{i}", str(i)) for i in range(50)]
            bad = ac.request("org.plantd.State", "state-set", poison)
            # All 51 leave at once: the broker hands them to the worker together (credit 200).
            *done, poisoned = await asyncio.gather(*writes, bad, return_exceptions=True)
            failed = [d for d in done if isinstance(d, BaseException)]
            assert not failed, f"round {round_}: {len(failed)} of 50 writers failed: {failed[:3]}"
            doc = json.loads(poisoned[0])  # type: ignore[index]
            assert doc["success"] is False and doc["code"] == "INVALID_REQUEST", doc
            assert "4300 digits" in doc["error"]
        got = await sc.batch_get("batch", [f"w2-{i}" for i in range(50)])
        assert [it["value"] for it in got["items"]] == [str(i) for i in range(50)]
    # Batching happened: some store round trip carried more than one request.
    total = state.metric("plantd_state_batch_requests_sum")
    batches = state.metric("plantd_state_batch_requests_count")
    assert total > batches, f"{total} requests in {batches} batches: none were batched"
    assert state.proc.alive()


def test_batch_set_with_a_key_twice_is_refused(broker: Broker, state: StateProc) -> None:
    with Client(broker.endpoint, timeout=10, retries=0, curve=client_curve(broker.keys_dir)) as c:
        doc = call(
            c,
            "batch-set",
            {
                "service": "dup",
                "items": [
                    {"key": "a", "value": "1", "if_version": 0},
                    {"key": "a", "value": "2", "if_version": 0},
                ],
            },
        )
        assert doc["success"] is False and doc["code"] == "INVALID_REQUEST"
        assert "'a'" in str(doc["error"]) and doc["field"] == "items[1].key"
        found = call(c, "batch-get", {"service": "dup", "keys": ["a"]})
        assert found["success"] is False or not found["data"]["items"][0]["found"]  # type: ignore[index]


def test_wal_and_shm_files_are_private(broker: Broker, state: StateProc) -> None:
    with Client(broker.endpoint, timeout=10, retries=0, curve=client_curve(broker.keys_dir)) as c:
        StateClient(c).set("perm", "k", "v")
    data = state.data_dir
    wait_for(lambda: (data / "state.db-wal").exists(), 10, "the WAL file")
    assert data.stat().st_mode & 0o777 == 0o700
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        mode = (data / name).stat().st_mode & 0o777
        assert mode == 0o600, f"{name} is {oct(mode)}, not 0600"


CHANGES_OK = 'operation="changes-since",result="ok"'
START_S = 30.0  # a CLI process may take seconds to start on the loaded box
HOSTILE_EVENTS = [
    b'{"op":"set","key":"k","value":"forged","version":1,"revision":Infinity,"ts":1}',
    b'{"op":"set","key":"k","value":"forged","version":1,"revision":NaN,"ts":1}',
    b'{"op":"set","key":"k","value":"forged","version":1,"revision":' + b"9" * 5000 + b',"ts":1}',
    b'{"op":"set","key":"k","value":"forged","version":"1","revision":1,"ts":1}',
    b'{"op":"set","key":"k","value":"forged"',
    b"\xff\xfe",
]


def test_plant_state_watch_survives_hostile_events_and_shows_the_next_real_change(
    broker: Broker, state: StateProc, tmp_path: Path
) -> None:
    from statekit import PYTHON, base_env

    from plantd.bus import Publisher
    from plantd.common import contract
    from plantd.common.keys import load_client

    scope = "watched"
    with Client(broker.endpoint, timeout=10, retries=0, curve=client_curve(broker.keys_dir)) as c:
        sc = StateClient(c)
        sc.create_scope(scope)
        start = int(sc.changes_since(scope, 0)["revision"])
        reads = state.metric("plantd_state_operations_total", CHANGES_OK)
        watcher = subprocess.Popen(
            [
                PYTHON, "-m", "plantd.cli.plant",
                "--endpoint", broker.endpoint, "--curve-keys", str(broker.keys_dir),
                "--timeout", "5",
                "state", "watch", "--service", scope, "--bus-endpoint", broker.state_sub,
                "--from-revision", str(start), "--count", "1", "--idle-timeout", "30",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**base_env(), "PLANTD_CONFIG": str(tmp_path / "absent.yaml")},
        )  # fmt: skip
        # Any allowed key can publish: forge events as the state service's key would.
        pub = Publisher(broker.state_pub, curve=load_client(broker.keys_dir, contract.STATE))
        stop = threading.Event()
        rounds = [0]

        def spray() -> None:
            while not stop.is_set():
                for payload in HOSTILE_EVENTS:
                    pub.publish(scope, payload)
                rounds[0] += 1
                stop.wait(0.02)

        sprayer = threading.Thread(target=spray, daemon=True)
        sprayer.start()
        try:
            # The watcher subscribes first, then reads its starting point (changes-since):
            # once that read arrives it is on the bus and taking the spray.
            wait_for(
                lambda: state.metric("plantd_state_operations_total", CHANGES_OK) > reads,
                START_S,
                "the watcher's first changes-since",
            )
            # Ten more rounds after it subscribed: they reach the broker before the real event.
            seen = rounds[0]
            wait_for(lambda: rounds[0] >= seen + 10, 10, "ten more rounds of forged events")
            assert watcher.poll() is None, watcher.stderr.read() if watcher.stderr else ""
            sc.set(scope, "k", "real\x1b]0;pwned\x07")
            out, err = watcher.communicate(timeout=60)
        finally:
            stop.set()
            sprayer.join(5)
            pub.close()
            if watcher.poll() is None:
                watcher.kill()
                watcher.wait(10)
    text, errors = out.decode(), err.decode()
    assert watcher.returncode == 0, errors
    # The real change, with its control characters shown, not sent to the terminal.
    assert text.splitlines() == [f"{start + 1} set k = real\\x1b]0;pwned\\x07"], text
    assert "skipped" in errors and "not valid change events" in errors, errors
