"""plantd.common.service.run_service in a real process: signals, grace, exit codes."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tests.integration.broker.brokerkit import free_port, http_get, wait_for

pytestmark = pytest.mark.integration

SERVICE = r"""
import asyncio, sys
from plantd.common.config import EchoSettings
from plantd.common.service import ServiceError, run_service

mode, port = sys.argv[1], int(sys.argv[2])

async def main(ctx):
    ctx.add_readiness("x", lambda: True)
    if mode == "fail":
        raise RuntimeError("kaboom")
    if mode == "service-error":
        raise ServiceError("keys missing: do the thing")
    await ctx.stopping.wait()
    if mode == "stuck":
        await asyncio.sleep(3600)
    ctx.log.info("cleanup done")

settings = EchoSettings.load(
    flags={"http_port": port, "http_host": "127.0.0.1", "log_format": "json"}, environ={}
)
sys.exit(run_service(settings, main, grace_s=1.0))
"""


def _start(mode: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", SERVICE, mode, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )


def _ready(port: int) -> bool:
    return http_get(f"http://127.0.0.1:{port}/readyz", timeout=1)[0] == 200


def _lines(log: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in log.read_text().splitlines() if x.strip()]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_gracefully(tmp_path: Path, sig: signal.Signals) -> None:
    port, log = free_port(), tmp_path / "svc.log"
    proc = _start("normal", port, log)
    wait_for(lambda: _ready(port), 40, "the service to be ready")
    proc.send_signal(sig)
    assert proc.wait(30) == 0
    msgs = [line["msg"] for line in _lines(log)]
    assert msgs.index("stopping") < msgs.index("cleanup done") < msgs.index("stopped")


def test_stuck_main_is_cancelled_after_grace(tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "svc.log"
    proc = _start("stuck", port, log)
    wait_for(lambda: _ready(port), 40, "the service to be ready")
    proc.send_signal(signal.SIGTERM)
    # Not ready while stopping, but still answering.
    wait_for(lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 503, 5, "not ready")
    assert proc.wait(30) == 1
    assert any(line["msg"] == "did not stop in time: cancelling" for line in _lines(log))


def test_second_signal_cancels(tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "svc.log"
    proc = _start("stuck", port, log)
    wait_for(lambda: _ready(port), 40, "the service to be ready")
    proc.send_signal(signal.SIGTERM)
    wait_for(lambda: not _ready(port), 5, "stopping")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 1
    assert any(line["msg"] == "second signal: cancelling" for line in _lines(log))


def test_failures_exit_1(tmp_path: Path) -> None:
    log = tmp_path / "fail.log"
    assert _start("fail", free_port(), log).wait(40) == 1
    failed = next(line for line in _lines(log) if line["msg"] == "service failed")
    assert "RuntimeError: kaboom" in str(failed["exc"])
    log = tmp_path / "svcerr.log"
    assert _start("service-error", free_port(), log).wait(40) == 1
    failed = next(line for line in _lines(log) if line["msg"] == "service failed")
    assert failed["error"] == "keys missing: do the thing"
    assert "exc" not in failed  # an expected failure: message only, no traceback


def test_taken_http_port_exits_2(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        log = tmp_path / "port.log"
        assert _start("normal", port, log).wait(40) == 2
    assert f"127.0.0.1:{port}" in log.read_text()
