"""Fixtures: one broker (CURVE on) and one identity process per test module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from identitykit import Identity, identity_process, write_bootstrap
from tests.kit import BrokerProcess, ServiceProcess, make_keys, start_broker

from plantd.common import contract
from plantd.identity.keys import generate


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("identity")


@pytest.fixture(scope="module")
def broker(workdir: Path) -> Iterator[BrokerProcess]:
    keys = make_keys(workdir / "curve", (contract.IDENTITY, contract.CLIENT))
    b = start_broker(workdir, curve_keys=keys)
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module")
def jwt_dir(workdir: Path) -> Path:
    d = workdir / "jwt"
    generate(d)
    return d


@pytest.fixture(scope="module")
def identity(workdir: Path, broker: BrokerProcess, jwt_dir: Path) -> Iterator[ServiceProcess]:
    boot = write_bootstrap(workdir / "bootstrap.json")
    proc = identity_process(
        workdir,
        broker,
        jwt_dir=jwt_dir,
        data_dir=workdir / "data",
        extra=[
            "--bootstrap-file", str(boot),
            "--login-source-burst", "5",
            "--login-source-rate", "0.2",
            "--backoff-free-failures", "3",
        ],
    )  # fmt: skip
    proc.start().wait_ready()
    try:
        yield proc
    finally:
        code = proc.stop()
        assert code == 0, f"identity exited {code}:\n{proc.log()}"


@pytest.fixture
def idc(broker: BrokerProcess, identity: ServiceProcess) -> Iterator[Identity]:
    c = Identity(broker)
    try:
        yield c
    finally:
        c.close()
