"""The echo module as a real process behind a real broker process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.broker.brokerkit import (
    BrokerPorts,
    ServiceProcess,
    broker_process,
    echo_process,
    http_get,
    make_keys,
    metric_value,
)

from plantd.common import contract
from plantd.mdp import Client, Dialect

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServiceProcess, ServiceProcess, BrokerPorts]]:
    tmp = tmp_path_factory.mktemp("echo")
    ports = BrokerPorts()
    broker = broker_process(tmp, ports).start()
    echo = echo_process(tmp, ports.endpoint).start()
    try:
        broker.wait_ready()
        echo.wait_ready()
        yield broker, echo, ports
    finally:
        echo_code = echo.stop()
        broker.stop()
        assert echo_code == 0, echo.text()


@pytest.mark.parametrize("dialect", [Dialect.MDP02, Dialect.MDP01, Dialect.LEGACY])
def test_round_trip_in_every_dialect(
    stack: tuple[ServiceProcess, ServiceProcess, BrokerPorts], dialect: Dialect
) -> None:
    _, _, ports = stack
    body = json.dumps({"service": "org.plantd.Client", "message": "hello"})
    with Client(ports.endpoint, timeout=10.0, retries=0, dialect=dialect) as c:
        assert c.request(contract.SERVICE_ECHO, "echo", body, b"\x00bin") == [
            body.encode(),
            b"\x00bin",
        ]


def test_echo_of_nothing_is_an_empty_reply(
    stack: tuple[ServiceProcess, ServiceProcess, BrokerPorts],
) -> None:
    _, _, ports = stack
    with Client(ports.endpoint, timeout=10.0, retries=0) as c:
        assert c.request(contract.SERVICE_ECHO, "echo") == []


def test_unknown_operation_is_a_clear_error(
    stack: tuple[ServiceProcess, ServiceProcess, BrokerPorts],
) -> None:
    _, _, ports = stack
    with Client(ports.endpoint, timeout=10.0, retries=0) as c:
        reply = c.request(contract.SERVICE_ECHO, "shout", "a", "b")
    assert len(reply) == 2
    err = json.loads(reply[0])
    assert err["code"] == "bad_request"
    assert "'shout'" in err["error"]


def test_health_and_metrics(stack: tuple[ServiceProcess, ServiceProcess, BrokerPorts]) -> None:
    _, echo, ports = stack
    assert http_get(echo.url + contract.PATH_HEALTHZ)[0] == 200
    before = metric_value(
        http_get(echo.url + contract.PATH_METRICS)[1], "plantd_echo_requests_total"
    )
    with Client(ports.endpoint, timeout=10.0, retries=0) as c:
        c.request(contract.SERVICE_ECHO, "echo", "x")
    after = metric_value(
        http_get(echo.url + contract.PATH_METRICS)[1], "plantd_echo_requests_total"
    )
    assert after == before + 1


def test_echo_without_its_keys_fails_closed(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys", [])  # broker keys only: no echo.key_secret
    echo = echo_process(tmp_path, "tcp://127.0.0.1:1", curve_keys=keys).start()
    assert echo.wait_exit() == 1
    assert "echo.key_secret" in echo.text()
