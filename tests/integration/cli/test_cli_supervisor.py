"""The supervisor with real child processes: log forwarding, crash restarts, SIGKILL escalation."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

import pytest
from clikit import pid_alive
from tests.kit import await_for

from plantd.cli.supervisor import Backoff, ChildSpec, Supervisor

pytestmark = pytest.mark.integration

STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('up', flush=True); time.sleep(60)"
)
CRASHER = "print('crashing', flush=True); raise SystemExit(7)"


class Collect:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self.messages: list[str] = []

    def child_line(self, name: str, line: str) -> None:
        self.lines.append((name, line))

    def info(self, message: str) -> None:
        self.messages.append(message)

    def warn(self, message: str) -> None:
        self.messages.append(message)


async def _until(cond: Callable[[], bool], within: float) -> None:
    async def check() -> bool:
        return cond()

    await await_for(check, within, "the supervisor's output")


async def test_restart_then_sigkill_escalation() -> None:
    rep = Collect()
    sup = Supervisor(
        [
            ChildSpec("stubborn", [sys.executable, "-c", STUBBORN], {}),
            ChildSpec("crasher", [sys.executable, "-c", CRASHER], {}, tier=1),
        ],
        rep,
        stop_timeout=0.5,
        backoff=lambda: Backoff(initial=0.05, maximum=0.2),
    )
    run = asyncio.create_task(sup.run())
    await _until(lambda: ("stubborn", "up") in rep.lines, 15)
    # The crasher exits 7 every time; it is restarted with growing delays and reported.
    await _until(lambda: sum(m.startswith("restarting crasher") for m in rep.messages) >= 3, 20)
    assert "crasher exited with code 7" in rep.messages
    assert rep.lines.count(("crasher", "crashing")) >= 3
    stubborn = sup._children[0].proc
    assert stubborn is not None
    sup.request_stop()
    code = await asyncio.wait_for(run, timeout=15)
    assert code == 0
    assert any("stubborn did not stop within" in m for m in rep.messages), rep.messages
    assert stubborn.returncode == -9 and not pid_alive(stubborn.pid)
