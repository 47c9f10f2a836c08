"""Helpers and fixtures for the MDP integration tests: an in-process broker on real TCP, and
peer processes (peer.py). Imported by conftest.py and by the test modules."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# The shared kit (tests/kit); re-exported under the names the MDP tests import.
from tests.kit import HEARTBEAT_MS, expiry_s
from tests.kit import await_for as await_for
from tests.kit import free_port as free_port
from tests.kit import in_ci as in_ci
from tests.kit import require as require
from tests.kit import wait_for as wait_for

from plantd.mdp import Broker, Client

PEER = str(Path(__file__).with_name("peer.py"))
# The heartbeat of every broker and every peer here: both sides must agree (tests/kit/timing.py).
HB_MS = HEARTBEAT_MS
EXPIRY_S = expiry_s(HB_MS)  # a silent peer is surely expired after this long


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

    def start(self, role: str, *args: str) -> subprocess.Popen[bytes]:
        """``peer.py ROLE --hb HB_MS ARGS``: the shared heartbeat unless ARGS give another."""
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        p = subprocess.Popen([sys.executable, PEER, role, "--hb", str(HB_MS), *args], env=env)
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
