"""`plant request --stream` against a real broker and a streaming worker: each part is printed
the moment it arrives, and --json marks the FINAL without holding a part back."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from clikit import HEARTBEAT_MS, clean_env, wait_for

from plantd.mdp import Broker, Client, FinalPart, Worker

pytestmark = pytest.mark.integration

SERVICE = "test.Stream"


@pytest.fixture
def streaming(tmp_path: Path) -> Iterator[tuple[str, threading.Event]]:
    """A broker (no CURVE) and a worker whose stream pauses after its first part until the
    test sets the event."""
    go_on = threading.Event()

    def handler(frames: list[bytes]) -> Iterator[object]:
        yield [b"first", *frames]
        go_on.wait(30)
        yield [b"second"]
        yield FinalPart([b"done"])

    broker = Broker("tcp://127.0.0.1:*", heartbeat_ms=HEARTBEAT_MS).start()
    ep = broker.endpoints[0]
    worker = Worker(ep, SERVICE, handler, heartbeat_ms=HEARTBEAT_MS).start()
    try:
        with Client(ep, timeout=1, retries=0) as c:
            wait_for(lambda: c.mmi("mmi.service", SERVICE) == [b"200"], 10, "the worker")
        yield ep, go_on
    finally:
        go_on.set()
        worker.stop(1.0)
        broker.stop(0.2)


def _lines(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    q: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            q.put(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    return q


@pytest.mark.parametrize("json_output", [True, False], ids=["json", "text"])
def test_stream_parts_printed_as_they_arrive(
    streaming: tuple[str, threading.Event], tmp_path: Path, json_output: bool
) -> None:
    ep, go_on = streaming
    args = ["--no-curve", "--endpoint", ep, "--timeout", "20"]
    args += ["--json"] if json_output else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "plantd.cli.plant", *args, "request", "--stream", SERVICE, "q"],
        env=clean_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = _lines(proc)
        # The worker holds the rest of the stream until we have seen the first part.
        first = lines.get(timeout=30)
        go_on.set()
        assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
        rest = []
        while not lines.empty() or len(rest) < (2 if json_output else 3):
            rest.append(lines.get(timeout=5))
    finally:
        go_on.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    if json_output:
        parts = [json.loads(x) for x in [first, *rest]]
        assert parts == [
            {"final": False, "frames": ["first", "q"]},
            {"final": False, "frames": ["second"]},
            {"final": True, "frames": ["done"]},
        ]
    else:
        assert [first, *rest] == ["first", "q", "second", "done"]
