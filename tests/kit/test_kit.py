"""The shared kit's own tests: waiting, the skip rule, HTTP, and the two launchers against real
processes (a broker, a redis-server)."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.kit import (
    HEARTBEAT_MS,
    BrokerPorts,
    RedisServer,
    await_for,
    broker_process,
    expiry_s,
    free_port,
    free_ports,
    http_get,
    metric_value,
    require,
    require_redis,
    start_broker,
    wait_for,
)

from plantd.mdp import Client

# ---- waiting -----------------------------------------------------------------------------------


@pytest.mark.unit
def test_wait_for_returns_the_truthy_value() -> None:
    values: Iterator[object] = iter([0, None, "", [], {"ready": True}])
    assert wait_for(lambda: next(values), 5, "a dict", interval=0.001) == {"ready": True}


@pytest.mark.unit
def test_wait_for_names_what_and_the_last_value() -> None:
    with pytest.raises(AssertionError) as info:
        wait_for(lambda: [], 0.05, "the queue to fill", interval=0.01)
    assert "the queue to fill" in str(info.value)
    assert "last value: []" in str(info.value)


@pytest.mark.unit
def test_wait_for_checks_once_more_after_a_slow_first_call() -> None:
    calls: list[float] = []

    def slow_then_true() -> bool:
        calls.append(time.monotonic())
        if len(calls) == 1:
            time.sleep(0.2)  # past the whole timeout: a starved first call
            return False
        return True

    assert wait_for(slow_then_true, 0.1, "the second call") is True
    assert len(calls) == 2


@pytest.mark.unit
def test_wait_for_propagates_errors_unless_told_to_retry() -> None:
    def boom() -> bool:
        raise ConnectionError("not up yet")

    with pytest.raises(ConnectionError):
        wait_for(boom, 1, "never")
    with pytest.raises(AssertionError, match=r"last value: ConnectionError\('not up yet'\)"):
        wait_for(boom, 0.05, "up", interval=0.01, retry_on=(ConnectionError,))


@pytest.mark.unit
def test_await_for_polls_an_async_predicate() -> None:
    seen: list[int] = []

    async def third() -> int:
        seen.append(len(seen))
        return len(seen) if len(seen) >= 3 else 0

    assert asyncio.run(await_for(third, 5, "three calls", interval=0.001)) == 3

    async def never() -> bool:
        return False

    with pytest.raises(AssertionError, match="the impossible"):
        asyncio.run(await_for(never, 0.05, "the impossible"))


@pytest.mark.unit
def test_expiry_covers_liveness_and_a_tick() -> None:
    assert expiry_s() == pytest.approx(4 * HEARTBEAT_MS / 1000)
    assert expiry_s(250) == pytest.approx(1.0)


# ---- the skip rule -----------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize("ci", ["", "0", "false", "no"])
def test_missing_prerequisite_skips_outside_ci(ci: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match="frobnicator"):
        require(False, "frobnicator is not installed")
    require(True, "present: nothing happens")


@pytest.mark.unit
@pytest.mark.parametrize("ci", ["true", "1", "yes"])
def test_missing_prerequisite_fails_under_ci(ci: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="prerequisite missing under CI: frobnicator"):
        require(False, "frobnicator is not installed")


# ---- network -----------------------------------------------------------------------------------


@pytest.fixture
def http_server() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code = 200 if self.path == "/ok" else 404
            body = json.dumps({"path": self.path}).encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.integration
def test_http_get_status_body_and_nothing_listening(http_server: str) -> None:
    assert http_get(http_server + "/ok") == (200, '{"path": "/ok"}')
    assert http_get(http_server + "/nope") == (404, '{"path": "/nope"}')
    status, reason = http_get(f"http://127.0.0.1:{free_port()}/", timeout=1)
    assert status == 0 and reason  # a reason, never an exception


@pytest.mark.unit
def test_free_ports_are_distinct() -> None:
    ports = free_ports(20)
    assert len(set(ports)) == 20


@pytest.mark.unit
def test_metric_value_matches_name_and_labels() -> None:
    text = "\n".join(
        [
            "# TYPE x_total counter",
            'x_total{service="a",code="OK"} 3.0',
            'x_total{service="b",code="OK"} 5.0',
            "x_total_created 1.7e9",
            "y 2",
        ]
    )
    assert metric_value(text, "x_total", {"service": "b"}) == 5.0
    assert metric_value(text, "y") == 2.0
    assert metric_value(text, "x_total", {"service": "c"}) == 0.0
    assert metric_value(text, "x") == 0.0  # a prefix of a name is not the name


# ---- launchers ---------------------------------------------------------------------------------


@pytest.mark.integration
def test_broker_launcher_runs_on_the_shared_heartbeat(tmp_path: Path) -> None:
    broker = start_broker(tmp_path)
    try:
        assert http_get(broker.url + "/readyz")[0] == 200
        with Client(broker.endpoint, timeout=10, retries=0) as c:
            code, about = c.mmi("mmi.broker")
        assert code == b"200"
        assert json.loads(about)["heartbeat_ms"] == HEARTBEAT_MS  # both sides agree
    finally:
        assert broker.stop() == 0, broker.log()
    assert not broker.alive()
    assert broker.stop() == 0  # idempotent


@pytest.mark.integration
def test_broker_launcher_moves_to_fresh_ports_when_one_is_taken(tmp_path: Path) -> None:
    ports = BrokerPorts()
    first = start_broker(tmp_path / "a")
    try:
        # A second broker told to use the first one's MDP port exits; start_ready retries.
        ports.mdp = first.ports.mdp
        second = broker_process(tmp_path / "b", ports)
        second.start_ready()
        try:
            assert second.ports.mdp != first.ports.mdp
            assert second.ready()
        finally:
            second.stop()
    finally:
        first.stop()


@pytest.mark.integration
def test_redis_launcher_answers_and_restarts_on_its_port(tmp_path: Path) -> None:
    require_redis()
    server = RedisServer(tmp_path / "redis").start()
    try:
        assert server.ping()
        assert server.command("SET", "k", "v").startswith("+OK")
        port = server.port
        server.kill()
        assert not server.ping()
        server.start()
        assert server.port == port and server.ping()
    finally:
        server.stop()


@pytest.mark.integration
def test_redis_launcher_with_a_password(tmp_path: Path) -> None:
    require_redis()
    server = RedisServer(tmp_path / "redis", password="pw-for-tests").start()
    try:
        assert server.answering()  # NOAUTH counts as up
        assert not server.ping()
        assert server.url == f"redis://:pw-for-tests@127.0.0.1:{server.port}/0"
    finally:
        server.stop()
