"""Fixtures: one broker (CURVE on) and one identity process per test module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from identitykit import Identity, bootstrapped_identity, curve_broker
from tests.kit import BrokerProcess, ServiceProcess

from plantd.identity.keys import generate


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("identity")


@pytest.fixture(scope="module")
def broker(workdir: Path) -> Iterator[BrokerProcess]:
    with curve_broker(workdir) as b:
        yield b


@pytest.fixture(scope="module")
def jwt_dir(workdir: Path) -> Path:
    d = workdir / "jwt"
    generate(d)
    return d


@pytest.fixture(scope="module")
def identity(workdir: Path, broker: BrokerProcess, jwt_dir: Path) -> Iterator[ServiceProcess]:
    tight = [
        "--login-source-burst", "5",
        "--login-source-rate", "0.2",
        "--backoff-free-failures", "3",
    ]  # fmt: skip
    with bootstrapped_identity(workdir, broker, jwt_dir=jwt_dir, extra=tight) as proc:
        yield proc


@pytest.fixture
def idc(broker: BrokerProcess, identity: ServiceProcess) -> Iterator[Identity]:
    c = Identity(broker)
    try:
        yield c
    finally:
        c.close()
