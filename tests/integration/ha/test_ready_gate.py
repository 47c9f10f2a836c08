"""A broker started with ``--ready-services`` is unready until those services have a worker
on it (so a rolling update does not send clients to a broker no worker has found yet), and
ready anyway once ``--ready-services-wait-ms`` has passed. Real processes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from tests.integration.broker.brokerkit import broker_process, echo_process
from tests.kit.net import http_get
from tests.kit.wait import wait_for

from plantd.common import contract

pytestmark = pytest.mark.integration


def readyz(url: str) -> tuple[int, dict[str, object]]:
    """(status, body) of /readyz; (0, {}) while nothing answers yet."""
    status, body = http_get(url + "/readyz")
    return status, json.loads(body) if status else {}


def test_the_broker_turns_ready_once_the_named_service_has_a_worker(tmp_path: Path) -> None:
    broker = broker_process(
        tmp_path,
        extra=["--ready-services", contract.SERVICE_ECHO, "--ready-services-wait-ms", "600000"],
    )
    broker.start()
    echo = None
    try:
        # Up (it answers) but not ready: no echo worker yet.
        wait_for(lambda: readyz(broker.url)[0] != 0, 20, "the broker's /readyz answering")
        status, body = readyz(broker.url)
        assert status == 503 and body["checks"] == {"broker": True, "workers": False}, body
        echo = echo_process(tmp_path, broker.endpoint).start()
        started = time.monotonic()
        wait_for(lambda: readyz(broker.url)[0] == 200, 20, "ready once echo registered")
        print(f"[ha] broker ready {time.monotonic() - started:.2f}s after the worker started")
        # It stays ready when the worker goes (readiness must not flap).
        echo.stop()
        echo = None
        assert readyz(broker.url)[0] == 200
        assert "every service in ready_services has a worker here" in broker.log()
    finally:
        if echo is not None:
            echo.stop()
        broker.stop()


def test_a_service_that_never_comes_delays_readiness_only_for_the_wait(tmp_path: Path) -> None:
    broker = broker_process(
        tmp_path, extra=["--ready-services", "never.comes", "--ready-services-wait-ms", "1500"]
    )
    started = time.monotonic()
    broker.start()
    try:
        wait_for(lambda: readyz(broker.url)[0] == 200, 20, "ready after the wait")
        assert time.monotonic() - started >= 1.5
        assert "ready without workers for never.comes after 1500 ms" in broker.log()
    finally:
        broker.stop()
