"""The one Redis connection recipe (state and identity stores): what the client is made with."""

from __future__ import annotations

from pathlib import Path

import pytest

from plantd.common.redis_conn import RedisSetupError, RedisTarget, client_for, redact_url

pytestmark = pytest.mark.unit


def test_the_password_file_and_ca_reach_the_client_and_redis_py_never_retries(
    tmp_path: Path,
) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    target = RedisTarget(
        "rediss://127.0.0.1:6380/0",
        password="inline",
        password_file=secret,
        ca_file=tmp_path / "ca.crt",
        socket_timeout=0.5,
    )
    kw = client_for(target).connection_pool.connection_kwargs
    assert kw["password"] == "from-file"  # the file wins, stripped
    assert kw["ssl_ca_certs"] == str(tmp_path / "ca.crt")
    assert kw["socket_timeout"] == 0.5 and kw["socket_connect_timeout"] == 1.0
    assert kw["retry"].get_retries() == 0  # a retried write could apply twice


def test_a_ca_file_is_only_for_tls() -> None:
    kw = client_for(RedisTarget("redis://h:1/0", ca_file=Path("ca.crt"))).connection_pool
    assert "ssl_ca_certs" not in kw.connection_kwargs


def test_failures_say_what_and_never_show_the_password(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(RedisSetupError, match=f"cannot read the Redis password file {missing}"):
        client_for(RedisTarget("redis://h:1/0", password_file=missing))
    with pytest.raises(RedisSetupError, match="bad Redis URL") as err:
        client_for(RedisTarget("http://:hunter2@h:1/0"))
    assert "hunter2" not in str(err.value)
    assert "hunter2" not in repr(RedisTarget("redis://:hunter2@h/0", password="hunter2"))


def test_redact_url() -> None:
    assert redact_url("redis://:pw@h:1/0") == "redis://:***@h:1/0"
    assert redact_url("rediss://user:pw@h/2") == "rediss://user:***@h/2"
    assert redact_url("unix:///run/redis.sock") == "unix:///run/redis.sock"
