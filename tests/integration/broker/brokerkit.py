"""Helpers for tests that run the broker service (and modules) as real processes.

Everything here lives in the shared kit (tests/kit); this module keeps the names the broker,
bus and echo tests import.
"""

from __future__ import annotations

from tests.kit import (
    HEARTBEAT_MS,
    PYTHON,
    START_TIMEOUT,
    BrokerPorts,
    BrokerProcess,
    ServiceProcess,
    broker_process,
    echo_process,
    free_port,
    free_ports,
    http_get,
    make_keys,
    metric_value,
    wait_for,
)

__all__ = [
    "HEARTBEAT_MS",
    "PYTHON",
    "START_TIMEOUT",
    "BrokerPorts",
    "BrokerProcess",
    "ServiceProcess",
    "broker_process",
    "echo_process",
    "free_port",
    "free_ports",
    "http_get",
    "make_keys",
    "metric_value",
    "wait_for",
]
