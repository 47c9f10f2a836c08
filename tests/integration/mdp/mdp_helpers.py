"""Helpers and fixtures for the MDP integration tests: an in-process broker on real TCP, and
peer processes (peer.py). Imported by conftest.py and by the test modules."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# tests/ is on pytest's `pythonpath`: the shared helpers import by name.
from tests.conftest import free_port as free_port
from tests.conftest import in_ci as in_ci
from tests.conftest import require as require

from plantd.mdp import Broker, Client

PEER = str(Path(__file__).with_name("peer.py"))
HB_MS = 250  # short heartbeats: liveness 3 -> a dead peer is noticed in ~0.75-1 s, yet a
# loaded CI machine (2 cores, other suites running) does not starve a live worker past expiry


def wait_for(cond: Callable[[], bool], timeout: float, what: str, every: float = 0.05) -> None:
    """Poll ``cond`` until true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def service_up(endpoint: str, service: str, timeout: float = 10.0, **client_kw: object) -> None:
    """Wait until the broker reports at least one worker for ``service`` (mmi.service 200)."""
    with Client(endpoint, timeout=0.5, retries=0, **client_kw) as c:  # type: ignore[arg-type]

        def up() -> bool:
            try:
                return c.mmi("mmi.service", service) == [b"200"]
            except Exception:
                return False

        wait_for(up, timeout, f"a worker for {service!r} at {endpoint}")


class Peers:
    """Starts peer.py processes and always kills them at teardown (by PID)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        p = subprocess.Popen([sys.executable, PEER, *args], env=env)
        self.procs.append(p)
        return p

    def worker(self, endpoint: str, service: str = "echo", *extra: str) -> subprocess.Popen[bytes]:
        return self.start("worker", "--endpoint", endpoint, "--service", service, *extra)

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
        for p in self.procs:
            p.wait(5)


@pytest.fixture
def peers() -> Iterator[Peers]:
    ps = Peers()
    try:
        yield ps
    finally:
        ps.close()


@pytest.fixture
def make_broker() -> Iterator[Callable[..., Broker]]:
    made: list[Broker] = []

    def make(**kw: object) -> Broker:
        kw.setdefault("heartbeat_ms", HB_MS)
        kw.setdefault("request_timeout", 3.0)
        b = Broker("tcp://127.0.0.1:*", **kw).start()  # type: ignore[arg-type]
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop(drain_timeout=0.2)


@pytest.fixture
def broker(make_broker: Callable[..., Broker]) -> Broker:
    return make_broker()
