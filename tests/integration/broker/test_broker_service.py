"""The broker service as a real process: health, metrics, org.plantd.Broker, logging, config."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from tests.integration.broker.brokerkit import (
    HEARTBEAT_MS,
    BrokerPorts,
    ServiceProcess,
    broker_process,
    http_get,
    metric_value,
    wait_for,
)

from plantd.common import contract
from plantd.mdp import BrokerError, Client, Worker

pytestmark = pytest.mark.integration


def _query(endpoint: str, *body: str) -> list[dict[str, Any]]:
    with Client(endpoint, timeout=10.0, retries=0) as c:
        return [json.loads(f) for f in c.request(contract.SERVICE_BROKER, *body)]


def test_health_and_readiness(broker: tuple[ServiceProcess, BrokerPorts]) -> None:
    proc, _ = broker
    code, body = http_get(proc.url + contract.PATH_HEALTHZ)
    assert code == 200
    assert json.loads(body)["status"] == "ok"
    code, body = http_get(proc.url + contract.PATH_READYZ)
    assert code == 200
    assert json.loads(body)["checks"] == {"broker": True}


def test_metrics_follow_requests(broker: tuple[ServiceProcess, BrokerPorts]) -> None:
    proc, ports = broker
    labels = {"service": contract.SERVICE_BROKER, "dialect": "mdp02"}
    _, before = http_get(proc.url + contract.PATH_METRICS)
    n0 = metric_value(before, "plantd_broker_requests_total", labels)
    r0 = metric_value(before, "plantd_broker_replies_total", labels)
    h0 = metric_value(before, "plantd_broker_request_duration_seconds_count")
    for _ in range(3):
        _query(ports.endpoint, "services", "{}")
    _, after = http_get(proc.url + contract.PATH_METRICS)
    assert metric_value(after, "plantd_broker_requests_total", labels) == n0 + 3
    assert metric_value(after, "plantd_broker_replies_total", labels) == r0 + 3
    assert metric_value(after, "plantd_broker_request_duration_seconds_count") >= h0 + 3
    assert metric_value(after, "plantd_broker_workers", {"service": contract.SERVICE_BROKER}) == 1
    for bus in contract.BUS_PORTS:
        assert f'plantd_bus_messages_total{{bus="{bus}"}}' in after


def test_broker_service_reports_real_workers(broker: tuple[ServiceProcess, BrokerPorts]) -> None:
    _, ports = broker
    name = "test.broker.Reported"
    workers = [
        Worker(ports.endpoint, name, lambda frames: frames, heartbeat_ms=HEARTBEAT_MS)
        for _ in range(2)
    ]
    for w in workers:
        w.start()
    try:

        def reported() -> bool:
            reply = _query(ports.endpoint, "service", json.dumps({"service": name}))[0]
            return bool(reply.get(name, {}).get("workers") == 2)

        wait_for(reported, 15, "the broker service to report both workers")
        (reply,) = _query(ports.endpoint, "services", "{}")
        names = {s["name"]: s for s in reply["services"]}
        assert names[name]["workers"] == 2
        assert names[contract.SERVICE_BROKER]["workers"] == 1
    finally:
        for w in workers:
            w.stop()

    def gone() -> bool:
        (reply,) = _query(ports.endpoint, "service", json.dumps({"service": name}))
        return bool(reply.get(name, {}).get("workers", 0) == 0)

    wait_for(gone, 15, "stopped workers to disappear from the broker service")


def test_broker_service_bad_requests(broker: tuple[ServiceProcess, BrokerPorts]) -> None:
    _, ports = broker
    # Several bodies: one reply part each, in order.
    replies = _query(
        ports.endpoint, "service", "{}", "not json", json.dumps({"service": "no.such"})
    )
    assert [r["code"] for r in replies] == ["bad_request", "bad_request", "not_found"]
    assert "service required" in str(replies[0]["error"])
    # Only the type frame: the original never replied; here it is answered.
    (only_type,) = _query(ports.endpoint, "services")
    assert isinstance(only_type["services"], list)
    (unknown,) = _query(ports.endpoint, "reboot", "{}")
    assert unknown["code"] == "bad_request"
    assert "service" in str(unknown["error"])


def test_json_logs(broker: tuple[ServiceProcess, BrokerPorts]) -> None:
    proc, _ = broker
    lines = proc.json_lines()
    assert lines, "the broker wrote no log lines"
    for line in lines:
        assert {"ts", "level", "logger", "msg"} <= line.keys()
    starting = next(line for line in lines if line["msg"] == "starting")
    assert starting["settings"]["endpoint"].startswith("tcp://127.0.0.1:")
    assert any("CURVE IS OFF" in line["msg"] and line["level"] == "warning" for line in lines)


def test_text_logs_and_clean_exit(tmp_path: Path) -> None:
    ports = BrokerPorts()
    proc = broker_process(tmp_path, ports, extra=["--log-format", "text"]).start()
    try:
        proc.wait_ready()
    finally:
        code = proc.stop()
    assert code == 0, proc.text()
    text = proc.text()
    assert " INFO    plantd.broker: starting " in text
    assert "stopped exit_status=0" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])


def test_bad_setting_exits_2_naming_the_key(tmp_path: Path) -> None:
    ports = BrokerPorts()
    proc = broker_process(tmp_path, ports, env={"PLANTD_BROKER_MAX_QUEUE": "lots"}).start()
    assert proc.wait_exit() == 2
    assert "max_queue" in proc.text()
    assert "PLANTD_BROKER_MAX_QUEUE" in proc.text()


def test_taken_port_fails_clearly(
    broker: tuple[ServiceProcess, BrokerPorts], tmp_path: Path
) -> None:
    _, taken = broker
    ports = BrokerPorts()
    ports.mdp = taken.mdp
    proc = broker_process(tmp_path, ports).start()
    assert proc.wait_exit() == 1
    assert f"127.0.0.1:{taken.mdp}" in proc.text()


def test_sigterm_with_requests_in_flight(tmp_path: Path) -> None:
    """Every client gets a reply or an error; the broker exits 0 within its grace period."""
    ports = BrokerPorts()
    proc = broker_process(tmp_path, ports, extra=["--shutdown-grace-ms", "3000"]).start()
    proc.wait_ready()
    release = threading.Event()
    started = threading.Semaphore(0)

    def slow(frames: list[bytes]) -> list[bytes]:
        started.release()
        release.wait(10)
        return [b"done", *frames]

    worker = Worker(ports.endpoint, "test.Slow", slow, heartbeat_ms=HEARTBEAT_MS, credit=2)
    worker.start()
    outcomes: list[str] = []
    lock = threading.Lock()

    def call(service: str) -> None:
        try:
            with Client(ports.endpoint, timeout=20.0, retries=0) as c:
                reply = c.request(service, b"x")
            result = "reply" if reply[0] == b"done" else f"odd {reply!r}"
        except BrokerError as exc:
            result = f"error {exc.code}"
        except Exception as exc:  # a timeout here is the failure this test looks for
            result = f"failed {type(exc).__name__}: {exc}"
        with lock:
            outcomes.append(result)

    try:
        wait_for(
            lambda: (
                _query(ports.endpoint, "service", '{"service": "test.Slow"}')[0]
                .get("test.Slow", {})
                .get("workers")
                == 1
            ),
            15,
            "the slow worker to register",
        )
        # Two requests reach the worker (credit 2); a third waits in the queue; a fourth asks for
        # a service with no worker at all.
        threads = [threading.Thread(target=call, args=("test.Slow",)) for _ in range(3)]
        threads.append(threading.Thread(target=call, args=("test.Nobody",)))
        for t in threads:
            t.start()
        assert started.acquire(timeout=15) and started.acquire(timeout=15)
        proc.signal()
        # While draining, in-flight work may finish: let the worker answer.
        wait_for(lambda: http_get(proc.url + contract.PATH_READYZ)[0] != 200, 10, "not-ready")
        release.set()
        assert proc.wait_exit(30) == 0, proc.text()
        for t in threads:
            t.join(30)
    finally:
        release.set()
        worker.stop()
        proc.stop()
    assert len(outcomes) == 4
    assert not [o for o in outcomes if o.startswith(("failed", "odd"))], outcomes
    assert outcomes.count("reply") >= 2, outcomes  # the two in flight finished
    # The worker-less request was refused (SHUTTING_DOWN); the client sends a refused request
    # again, and that copy may reach the broker as it closes: then the drop is reported
    # (BROKER_LOST) at once. Either way an error, never a wait for the timeout.
    assert {"error SHUTTING_DOWN", "error BROKER_LOST"} & set(outcomes), outcomes


def test_help_lists_every_setting() -> None:
    from click.testing import CliRunner

    from plantd.broker.main import cli
    from plantd.common.config import BrokerSettings

    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in BrokerSettings.model_fields:
        if name in BrokerSettings.cli_hidden:
            continue
        assert "--" + name.replace("_", "-") in result.output, name
        assert BrokerSettings.env_name(name) in result.output.replace("\n", "").replace(" ", "")
    assert "--no-curve" in result.output
    assert "--config" in result.output
