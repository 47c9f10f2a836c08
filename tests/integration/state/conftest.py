"""Fixtures for the state service: a real redis-server and both stores behind one fixture."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from statekit import (
    INSTALL_HINT,
    REDIS_SERVER,
    TEST_LIMITS,
    Broker,
    RedisServer,
    StateProc,
    client_curve,
    make_keys,
    opened_store,
    require,
)

from plantd.mdp import Client
from plantd.state.store import Store


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session (tests isolate themselves with key prefixes)."""
    require(REDIS_SERVER is not None, f"redis-server is not installed ({INSTALL_HINT})")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}:"


@pytest.fixture(params=["sqlite", "redis"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, redis_prefix: str
) -> AsyncIterator[Store]:
    """Each store kind, opened on fresh data."""
    async with opened_store(request, tmp_path, redis_prefix, TEST_LIMITS) as s:
        yield s


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, keys_dir: Path) -> Iterator[Broker]:
    """A real broker (CURVE on) shared by a test module."""
    b = Broker(tmp_path_factory.mktemp("broker"), keys_dir)
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def state_proc(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, broker: Broker
) -> Iterator[StateProc]:
    """A real state service on each store kind (module-scoped: startup costs ~1 s)."""
    url = ""
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        url = server.url
    proc = StateProc(
        f"state-{request.param}",
        tmp_path_factory.mktemp("state"),
        broker,
        store=request.param,
        redis_url=url,
    ).start()
    try:
        yield proc
    finally:
        proc.proc.stop()


@pytest.fixture
def client(broker: Broker) -> Iterator[Client]:
    c = Client(broker.endpoint, timeout=5.0, retries=0, curve=client_curve(broker.keys_dir))
    try:
        yield c
    finally:
        c.close()
