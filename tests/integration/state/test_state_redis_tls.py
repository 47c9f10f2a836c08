"""The Redis store over TLS with a password, against a real redis-server (TLS build)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from statekit import RedisServer
from tests.kit import make_certs, require_redis

from plantd.state.model import Get, GetResult, Set, SetItem
from plantd.state.redis_store import RedisStore

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-for-tests"


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    require_redis()
    make_certs(tmp_path)
    server = RedisServer(tmp_path / "redis", password=PASSWORD, tls_dir=tmp_path).start()
    try:
        yield server.port, tmp_path
    finally:
        server.stop()


async def test_tls_with_password_file_and_ca(tls_redis: tuple[int, Path]) -> None:
    port, d = tls_redis
    secret = d / "redis-password"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    store = RedisStore(f"rediss://127.0.0.1:{port}/0", password_file=secret, ca_file=d / "ca.crt")
    await store.open()
    try:
        assert store.available, store.down_reason
        [w] = await store.execute([Set("s", (SetItem("k", "over tls"),))])
        assert not isinstance(w, Exception)
        [g] = await store.execute([Get("s", ("k",))])
        assert isinstance(g, GetResult) and g.entries[0] is not None
        assert g.entries[0].value == "over tls"
    finally:
        await store.close()


async def test_tls_refusals_are_reported_not_hidden(tls_redis: tuple[int, Path]) -> None:
    port, d = tls_redis
    wrong = RedisStore(f"rediss://127.0.0.1:{port}/0", password="not-it", ca_file=d / "ca.crt")
    await wrong.open()
    try:
        assert not wrong.available
        assert "credentials" in wrong.down_reason or "AUTH" in wrong.down_reason.upper()
        assert "not-it" not in wrong.down_reason, "a password must never reach messages"
    finally:
        await wrong.close()
    untrusted = RedisStore(f"rediss://:{PASSWORD}@127.0.0.1:{port}/0")  # no CA: must not trust
    await untrusted.open()
    try:
        assert not untrusted.available
        assert PASSWORD not in untrusted.down_reason
    finally:
        await untrusted.close()
