"""Fixtures for the broker service tests: a broker process on free ports."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Make `tests.*` importable under plain `pytest` too (the repo root is not on sys.path there).
_ROOT = str(Path(__file__).resolve().parents[3])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.integration.broker.brokerkit import (  # noqa: E402
    BrokerPorts,
    ServiceProcess,
    broker_process,
)


@pytest.fixture(scope="module")
def broker(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServiceProcess, BrokerPorts]]:
    """One broker (CURVE off) shared by a module's read-mostly tests."""
    ports = BrokerPorts()
    proc = broker_process(tmp_path_factory.mktemp("broker"), ports).start()
    try:
        proc.wait_ready()
        yield proc, ports
    finally:
        proc.stop()
