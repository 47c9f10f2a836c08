"""Helpers for the state service's integration tests: a state process, CURVE keys, a writer
stream, either store opened, a changes-since walk, a process's peak RSS. The generic helpers
(waiting, HTTP, processes, the broker, redis-server) are the shared kit's (tests/kit),
re-exported here under the names the state tests import."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from tests.kit import (
    HEARTBEAT_MS,
    INSTALL_HINT,
    PYTHON,
    REDIS_SERVER,
    BrokerPorts,
    BrokerProcess,
    RedisServer,
    ServiceProcess,
    await_for,
    base_env,
    free_port,
    http_get,
    in_ci,
    require,
    stop_process,
    wait_for,
)
from tests.kit import (
    make_keys as _make_keys,
)

from plantd.common import contract
from plantd.common.curve import CurveClient
from plantd.mdp import BrokerError, Client
from plantd.state.client import StateClient
from plantd.state.limits import Limits
from plantd.state.redis_store import RedisStore
from plantd.state.sqlite_store import SqliteStore
from plantd.state.store import Store

__all__ = [
    "INSTALL_HINT",
    "PYTHON",
    "REDIS_SERVER",
    "TEST_LIMITS",
    "Broker",
    "RedisServer",
    "StateProc",
    "WriteStream",
    "assert_all_present",
    "await_for",
    "base_env",
    "client_curve",
    "free_port",
    "http_get",
    "in_ci",
    "make_keys",
    "opened_store",
    "page_changes",
    "read_back",
    "require",
    "stop_process",
    "vm_hwm",
    "wait_for",
]

# Small history so the compaction paths are reachable in a test.
TEST_LIMITS = Limits(history_len=50, max_value_bytes=64 * 1024, max_batch_keys=200)


class Broker(BrokerProcess):
    """A real plantd broker on free ports, CURVE on with the keys in ``keys_dir``.

    :meth:`start` returns once it is ready (retried on fresh ports after a port race).
    """

    keys_dir: Path

    def __init__(self, workdir: Path, keys_dir: Path, ports: BrokerPorts | None = None) -> None:
        """``ports``: those of a broker that is gone, to start one in its place."""
        super().__init__(workdir, ports, curve_keys=keys_dir, extra=["--log-format", "text"])

    def start(self) -> Broker:
        self.start_ready()
        return self


class StateProc:
    """A real ``plantd state`` process attached to ``broker``; ``proc`` is its ServiceProcess."""

    def __init__(
        self,
        name: str,
        workdir: Path,
        broker: Broker,
        *,
        store: str = "sqlite",
        redis_url: str = "",
        extra: list[str] | None = None,
    ) -> None:
        self.http_port = free_port()
        self.data_dir = workdir / f"{name}-data"
        args = [
            "--broker-endpoint", broker.endpoint,
            "--bus-endpoint", broker.state_pub,
            "--http-port", str(self.http_port),
            "--http-host", "127.0.0.1",
            "--curve-keys", str(broker.keys_dir),
            "--store", store,
            "--data-dir", str(self.data_dir),
            "--heartbeat-ms", str(HEARTBEAT_MS),  # the broker's: see tests/kit/timing.py
            "--sweep-interval-ms", "100",
            "--log-format", "text",
        ]  # fmt: skip
        if redis_url:
            args += ["--redis-url", redis_url]
        self.proc = ServiceProcess(
            "plantd.state",
            args + (extra or []),
            workdir / f"{name}.log",
            http_port=self.http_port,
            name=name,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def ready(self) -> bool:
        return self.proc.ready()

    def start(self, wait: bool = True) -> StateProc:
        for _ in range(3):
            self.proc.start()
            if not wait or self.proc.start_or_exit():
                return self
            # Probably the HTTP port was taken meanwhile: try another.
            old = self.http_port
            self.http_port = self.proc.http_port = free_port()
            self.proc.args = [str(self.http_port) if a == str(old) else a for a in self.proc.args]
        raise AssertionError(f"{self.proc.name} did not start; log:\n{self.proc.log()}")

    def metric(self, name: str, labels: str = "") -> float:
        """One sample from /metrics (0 if absent), e.g. metric('x_total', 'operation="a"')."""
        status, body = http_get(self.url + "/metrics")
        assert status == 200, body
        want = f"{name}{{{labels}}}" if labels else name
        for line in body.splitlines():
            if line.startswith(want + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


def make_keys(directory: Path) -> Path:
    """CURVE key pairs for broker, state and client (the `plantd keys generate` layout)."""
    return _make_keys(directory, (contract.STATE, contract.CLIENT))


def client_curve(keys_dir: Path) -> CurveClient:
    from plantd.common.keys import load_client

    return load_client(keys_dir, contract.CLIENT)


@asynccontextmanager
async def opened_store(
    request: pytest.FixtureRequest, tmp_path: Path, redis_prefix: str, limits: Limits
) -> AsyncIterator[Store]:
    """The store ``request.param`` names (``sqlite``, or ``redis`` on the session's
    ``redis_server`` under ``redis_prefix``), open on fresh data with ``limits``; closed after."""
    s: Store
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        s = RedisStore(server.url, prefix=redis_prefix, limits=limits)
    else:
        s = SqliteStore(tmp_path / "data", limits=limits)
    await s.open()
    assert s.available, f"{s.describe()} did not open"
    try:
        yield s
    finally:
        await s.close()


def page_changes(c: Client, scope: str, reply_budget: int) -> tuple[int, int]:
    """Walk ``scope``'s changes-since from revision 0, asserting every page fits
    ``reply_budget`` bytes: (changes seen, pages)."""
    since, seen, pages = 0, 0, 0
    while True:
        body = json.dumps({"service": scope, "revision": since})
        raw = c.request(contract.SERVICE_STATE, "changes-since", body)[0]
        assert len(raw) <= reply_budget, f"a changes-since page of {len(raw)} bytes"
        page = json.loads(raw)["data"]
        seen += len(page["changes"])
        pages += 1
        if page["changes"]:
            since = page["changes"][-1]["revision"]
        if not page["more"]:
            return seen, pages


def vm_hwm(pid: int) -> int:
    """The process's peak resident set so far (``VmHWM`` of /proc/PID/status), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"/proc/{pid}/status has no VmHWM")


class WriteStream:
    """Writers keeping ``in_flight`` state-set requests going; records what was acknowledged.

    A write counts as acknowledged only when the service answered ``success: true``.
    """

    def __init__(self, endpoint: str, keys_dir: Path, scope: str, in_flight: int = 16) -> None:
        from plantd.mdp import AsyncClient

        self.client = AsyncClient(
            endpoint, timeout=2.0, retries=0, curve=client_curve(keys_dir), max_sockets=in_flight
        )
        self.scope = scope
        self.in_flight = in_flight
        self.acked: dict[int, float] = {}  # write number -> monotonic time of the ack
        self.errors: dict[str, int] = {}
        self.last_failure = 0.0  # monotonic time of the latest failed write
        self._next = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def next_number(self) -> int:
        """The number the next write will get."""
        return self._next

    @staticmethod
    def key(i: int) -> str:
        return f"w{i:07d}"

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run()) for _ in range(self.in_flight)]

    async def _run(self) -> None:
        while not self._stop.is_set():
            i = self._next
            self._next += 1
            body = json.dumps({"service": self.scope, "key": self.key(i), "value": str(i)})
            try:
                reply = await self.client.request(contract.SERVICE_STATE, "state-set", body)
                doc = json.loads(reply[0])
            except Exception as exc:  # timeouts, broker errors: not acknowledged
                name = exc.code if isinstance(exc, BrokerError) else type(exc).__name__
                self.errors[name] = self.errors.get(name, 0) + 1
                self.last_failure = time.monotonic()
                continue
            if doc.get("success"):
                self.acked[i] = time.monotonic()
            else:
                code = str(doc.get("code"))
                self.errors[code] = self.errors.get(code, 0) + 1
                self.last_failure = time.monotonic()

    async def wait_acked(self, n: int, within: float = 20.0) -> None:
        await await_for(lambda: _true(len(self.acked) >= n), within, f"{n} acknowledged writes")

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self.client.close()


def read_back(broker: Broker, scope: str, numbers: list[int]) -> dict[int, str | None]:
    """Values of the given writes, read in batches of 500 keys.

    A read the broker had handed to the killed worker comes back WORKER_LOST once the broker
    notices (heartbeats); reads are idempotent, so those are retried.
    """
    out: dict[int, str | None] = {}
    with Client(broker.endpoint, timeout=10, retries=0, curve=client_curve(broker.keys_dir)) as c:
        sc = StateClient(c)
        for i in range(0, len(numbers), 500):
            chunk = numbers[i : i + 500]
            keys = [WriteStream.key(n) for n in chunk]
            for attempt in range(5):
                try:
                    items = sc.batch_get(scope, keys)["items"]
                    break
                except BrokerError as exc:
                    if exc.code != "WORKER_LOST" or attempt == 4:
                        raise
            for n, item in zip(chunk, items, strict=True):
                out[n] = item["value"] if item["found"] else None
    return out


def assert_all_present(found: dict[int, str | None]) -> None:
    lost = [n for n, v in found.items() if v != str(n)]
    assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:10]}"


async def _true(value: bool) -> bool:
    return value
