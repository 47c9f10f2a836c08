"""Identity started before its Redis (a new cluster starts every pod at once): it stays up and
unready, then serves once Redis answers. On real pods it used to exit into a restart.
Wrong credentials cannot heal by waiting: those still fail at once, naming the cause."""

from __future__ import annotations

from pathlib import Path

import pytest
from identitykit import ADMIN, ADMIN_PASSWORD, Identity, identity_process, write_bootstrap
from tests.kit import BrokerProcess, RedisServer, http_get, require_redis, wait_for

pytestmark = pytest.mark.integration


def test_identity_waits_unready_for_a_late_redis_then_serves(
    workdir: Path, broker: BrokerProcess, jwt_dir: Path
) -> None:
    require_redis()
    redis = RedisServer(workdir / "late-redis")  # its port chosen, nothing listening yet
    proc = identity_process(
        workdir,
        broker,
        jwt_dir=jwt_dir,
        data_dir=workdir / "late-data",
        name="identity-late",
        extra=[
            "--store", "redis",
            "--redis-url", redis.url,
            "--bootstrap-file", str(write_bootstrap(workdir / "late-bootstrap.json")),
        ],
    )  # fmt: skip
    proc.start()
    try:
        wait_for(lambda: "identity store not reachable yet" in proc.text(), 20, "the retry warning")
        status, body = http_get(proc.url + "/readyz", timeout=2.0)
        assert proc.alive() and status == 503, (status, body)
        assert "store" in body, body
        redis.start()
        proc.wait_ready()
        idc = Identity(broker)
        try:
            doc = idc.login(ADMIN, ADMIN_PASSWORD, ip_address="10.9.8.7")
            assert doc["success"], doc
        finally:
            idc.close()
        assert "identity store reachable" in proc.text()
    finally:
        code = proc.stop()
        redis.stop()
    assert code == 0, proc.log()


def test_identity_with_wrong_redis_credentials_exits_at_once(
    workdir: Path, broker: BrokerProcess, jwt_dir: Path
) -> None:
    require_redis()
    redis = RedisServer(workdir / "auth-redis", password="the-right-one").start()
    try:
        bad = redis.url.replace("the-right-one", "a-wrong-one")
        proc = identity_process(
            workdir,
            broker,
            jwt_dir=jwt_dir,
            data_dir=workdir / "auth-data",
            name="identity-badauth",
            extra=["--store", "redis", "--redis-url", bad],
        )
        proc.start()
        wait_for(lambda: not proc.alive(), 20, "identity to exit on rejected credentials")
        assert proc.stop() != 0
        assert "rejected the credentials" in proc.text(), proc.log()
        assert "a-wrong-one" not in proc.text(), "the password leaked into the log"
    finally:
        redis.stop()
