"""plantd.common.http.HealthServer on real sockets (thread mode and asyncio mode)."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter
from tests.integration.broker.brokerkit import http_get

from plantd.common.http import HealthServer

pytestmark = pytest.mark.integration


def test_probes_and_metrics_in_a_thread() -> None:
    registry = CollectorRegistry()
    Counter("plantd_test_things", "things", registry=registry).inc(3)
    server = HealthServer(0, "127.0.0.1", registry=registry, component="test", check_timeout=0.3)
    state = {"ready": False}
    server.add_readiness("flag", lambda: state["ready"])
    server.start_in_thread()
    try:
        code, body = http_get(server.url + "/readyz")
        assert code == 503
        assert json.loads(body)["checks"] == {"flag": False}
        state["ready"] = True
        assert http_get(server.url + "/readyz")[0] == 200

        async def slow() -> bool:
            await asyncio.sleep(5)
            return True

        def broken() -> bool:
            raise RuntimeError("disk on fire")

        server.add_readiness("slow", slow)
        server.add_liveness("broken", broken)
        code, body = http_get(server.url + "/readyz")
        assert code == 503 and "timed out" in json.loads(body)["checks"]["slow"]
        code, body = http_get(server.url + "/healthz")
        assert code == 503
        assert "disk on fire" in json.loads(body)["checks"]["broken"]

        code, text = http_get(server.url + "/metrics")
        assert code == 200
        assert "plantd_test_things_total 3.0" in text
        req = urllib.request.Request(  # noqa: S310 - local test URL
            server.url + "/metrics", headers={"Accept": "application/openmetrics-text"}
        )
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - local test URL
            assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
            assert resp.read().decode().rstrip().endswith("# EOF")
        server.set_stopping()
        code, body = http_get(server.url + "/readyz")
        assert code == 503 and json.loads(body)["checks"]["shutting_down"] is False
    finally:
        server.stop_thread()
    with socket.socket() as s:  # the listener is gone (TIME_WAIT leftovers are fine)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", server.port))
        s.listen()


def test_taken_port_is_named() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        server = HealthServer(port, "127.0.0.1")
        with pytest.raises(OSError, match=f"127.0.0.1:{port}"):
            server.start_in_thread()


async def test_in_a_running_loop() -> None:
    server = HealthServer(0, "127.0.0.1", registry=CollectorRegistry())

    async def ready() -> bool:
        return True

    server.add_readiness("async", ready)
    await server.start()
    try:
        code, body = await asyncio.to_thread(http_get, server.url + "/readyz")
        assert code == 200 and json.loads(body)["checks"] == {"async": True}
    finally:
        await server.stop()
    assert (await asyncio.to_thread(http_get, server.url + "/healthz"))[0] == 0
