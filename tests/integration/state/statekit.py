"""Helpers for the state service's integration tests: a real redis-server, deadline polling."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

# tests/ is on pytest's `pythonpath`: the shared helpers import by name.
from tests.conftest import free_port as free_port
from tests.conftest import in_ci as in_ci
from tests.conftest import require as require

from plantd.common import contract
from plantd.common.curve import CurveClient
from plantd.state.limits import Limits

T = TypeVar("T")


REDIS_SERVER = shutil.which("redis-server")
INSTALL_HINT = "apt-get install -y redis-server"


def wait_for(cond: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> None:
    """Poll ``cond`` until true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


async def await_for(
    cond: Callable[[], Awaitable[bool]],
    timeout: float,  # noqa: ASYNC109 - a deadline for polling, not a cancel scope
    what: str,
    interval: float = 0.02,
) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


# Small history so the compaction paths are reachable in a test.
TEST_LIMITS = Limits(history_len=50, max_value_bytes=64 * 1024, max_batch_keys=200)


class RedisServer:
    """A redis-server process of our own: free port, temporary directory, stopped by PID."""

    def __init__(self, workdir: Path, *, appendonly: bool = False, fsync: str = "everysec") -> None:
        assert REDIS_SERVER is not None
        self.workdir = workdir
        self.port = free_port()
        self.appendonly = appendonly
        self.fsync = fsync
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        args = [
            str(REDIS_SERVER),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.workdir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.fsync,
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(self.workdir / "redis.log"),
        ]  # fmt: skip
        first_start = self.proc is None and not (self.workdir / "redis.log").exists()
        for _ in range(3):
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                if self.ping():
                    return
                time.sleep(0.05)
            if self.proc.poll() is None or not first_start:
                break
            # It exited at once: another process took the free port between our probe and
            # its bind. A first start may move to a new port; a restart must keep its own.
            self.port = free_port()
            args[args.index("--port") + 1] = str(self.port)
        log = (self.workdir / "redis.log").read_text(errors="replace")[-2000:]
        self.stop(signal.SIGKILL)
        raise AssertionError(
            f"redis-server on port {self.port} did not answer PING within {timeout}s; log:\n{log}"
        )

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def command(self, *args: str) -> str:
        """One command via redis-cli-free inline protocol (tests only need simple ones)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            parts = [f"${len(a.encode())}\r\n{a}\r\n" for a in args]
            s.sendall(f"*{len(args)}\r\n{''.join(parts)}".encode())
            return s.recv(65536).decode(errors="replace")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, wait, then SIGKILL: never leave a child behind."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout)


# ---- plantd processes ---------------------------------------------------------------------------

PYTHON = sys.executable


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    """(status, body) of a GET; (0, reason) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - test-local URL
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


class Proc:
    """A plantd process of ours: output to a log file, stopped by PID."""

    def __init__(self, name: str, argv: list[str], logdir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.argv = argv
        self.log_path = logdir / f"{name}.log"
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        finally:
            log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        stop_process(self.proc, timeout)
        code = self.proc.returncode
        self.proc = None
        return code

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLANTD_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Broker:
    """A real plantd broker on free ports, CURVE on, keys in ``keys_dir``."""

    def __init__(self, workdir: Path, keys_dir: Path) -> None:
        self.workdir = workdir
        self.keys_dir = keys_dir
        self._pick_ports()
        self.proc = Proc("broker", [], workdir, base_env())

    def _pick_ports(self) -> None:
        self.port = free_port()
        self.http_port = free_port()
        self.buses = {name: (free_port(), free_port()) for name in ("state", "event", "metric")}

    def _argv(self) -> list[str]:
        buses = ",".join(f"{n}={a}:{b}" for n, (a, b) in self.buses.items())
        return [
            PYTHON, "-m", "plantd.broker",
            "--endpoint", f"tcp://127.0.0.1:{self.port}",
            "--bus-bind", "127.0.0.1",
            "--buses", buses,
            "--http-port", str(self.http_port),
            "--http-host", "127.0.0.1",
            "--curve-keys", str(self.keys_dir),
            "--log-format", "text",
            # Dead workers (kill -9 tests) expire in 1.5 s instead of 7.5 s.
            "--heartbeat-ms", "500",
        ]  # fmt: skip

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def state_pub(self) -> str:
        return f"tcp://127.0.0.1:{self.buses['state'][0]}"

    @property
    def state_sub(self) -> str:
        return f"tcp://127.0.0.1:{self.buses['state'][1]}"

    def start(self) -> Broker:
        def ready() -> bool:
            return http_get(f"http://127.0.0.1:{self.http_port}/readyz")[0] == 200

        # free_port() can race with other processes on a shared box: retry on new ports.
        for _ in range(3):
            self.proc.argv = self._argv()
            self.proc.start()
            if start_or_exit(self.proc, ready, 20):
                return self
            self._pick_ports()
        raise AssertionError(f"the broker did not start; log:\n{self.proc.log()}")


def start_or_exit(proc: Proc, ready: Callable[[], bool], timeout: float) -> bool:
    """True once ``ready``; False if the process exited first (e.g. its port was taken)."""
    deadline = time.monotonic() + timeout
    while not ready():
        if not proc.alive():
            proc.stop()
            return False
        if time.monotonic() > deadline:
            raise AssertionError(f"{proc.name} not ready after {timeout}s; log:\n{proc.log()}")
        time.sleep(0.02)
    return True


class StateProc:
    """A real ``plantd state`` process attached to ``broker``."""

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
        argv = [
            PYTHON, "-m", "plantd.state",
            "--broker-endpoint", broker.endpoint,
            "--bus-endpoint", broker.state_pub,
            "--http-port", str(self.http_port),
            "--http-host", "127.0.0.1",
            "--curve-keys", str(broker.keys_dir),
            "--store", store,
            "--data-dir", str(self.data_dir),
            "--heartbeat-ms", "500",
            "--sweep-interval-ms", "100",
            "--log-format", "text",
        ]  # fmt: skip
        if redis_url:
            argv += ["--redis-url", redis_url]
        self.proc = Proc(name, argv + (extra or []), workdir, base_env())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def ready(self) -> bool:
        return http_get(self.url + "/readyz")[0] == 200

    def start(self, wait: bool = True) -> StateProc:
        for _ in range(3):
            self.proc.start()
            if not wait or start_or_exit(self.proc, self.ready, 20):
                return self
            # Probably the HTTP port was taken meanwhile: try another.
            old = self.http_port
            self.http_port = free_port()
            self.proc.argv = [str(self.http_port) if a == str(old) else a for a in self.proc.argv]
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
    from plantd.cli import keys

    keys.generate(directory, (contract.BROKER, contract.STATE, contract.CLIENT))
    return directory


def client_curve(keys_dir: Path) -> CurveClient:
    from plantd.common.keys import load_client

    return load_client(keys_dir, contract.CLIENT)


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
        self._next = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @staticmethod
    def key(i: int) -> str:
        return f"w{i:07d}"

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run()) for _ in range(self.in_flight)]

    async def _run(self) -> None:
        import json

        while not self._stop.is_set():
            i = self._next
            self._next += 1
            body = json.dumps({"service": self.scope, "key": self.key(i), "value": str(i)})
            try:
                reply = await self.client.request(contract.SERVICE_STATE, "state-set", body)
                doc = json.loads(reply[0])
            except Exception as exc:  # timeouts, broker errors: not acknowledged
                name = type(exc).__name__
                self.errors[name] = self.errors.get(name, 0) + 1
                continue
            if doc.get("success"):
                self.acked[i] = time.monotonic()
            else:
                code = str(doc.get("code"))
                self.errors[code] = self.errors.get(code, 0) + 1

    async def wait_acked(self, n: int, within: float = 20.0) -> None:
        await await_for(lambda: _true(len(self.acked) >= n), within, f"{n} acknowledged writes")

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self.client.close()


async def _true(value: bool) -> bool:
    return value
