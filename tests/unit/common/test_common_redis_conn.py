"""The one Redis connection recipe (state and identity stores): what the client is made with."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from redis.asyncio.sentinel import SentinelConnectionPool

from plantd.common.redis_conn import RedisSetupError, RedisTarget, client_for
from plantd.common.redis_url import DEFAULT_SENTINEL_PORT, parse_sentinel_url, redact_url

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


def test_a_sentinel_url_names_the_sentinels_the_master_and_the_database() -> None:
    got = parse_sentinel_url("redis+sentinel://:pw@s1:26380,s2,10.0.0.3:1/plant/2")
    assert got.sentinels == (("s1", 26380), ("s2", DEFAULT_SENTINEL_PORT), ("10.0.0.3", 1))
    assert (got.master, got.db, got.tls, got.username, got.password) == (
        "plant",
        2,
        False,
        None,
        "pw",
    )
    tls = parse_sentinel_url("rediss+sentinel://app:p@ss@s1/m")
    assert (tls.tls, tls.username, tls.password, tls.db) == (True, "app", "p@ss", 0)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://s1:26379", "name the master"),
        ("redis+sentinel://s1:26379/", "name the master"),
        ("redis+sentinel://s1:port/m", "bad Sentinel address 's1:port'"),
        ("redis+sentinel://s1:70000/m", "bad Sentinel address"),
        ("redis+sentinel://s1,,s2/m", "bad Sentinel address ''"),
        ("redis+sentinel://s1/m/x", "bad database number 'x'"),
        ("redis://s1/m", "a Sentinel URL starts with"),
        ("redis+sentinel://s1/m?sentinel_auth=maybe", "unknown URL option 'sentinel_auth=maybe'"),
        ("redis+sentinel://s1/m?db=1", "unknown URL option 'db=1'"),
    ],
)
def test_a_bad_sentinel_url_says_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        parse_sentinel_url(url)


def test_a_sentinel_client_asks_the_sentinels_with_the_same_credentials_and_no_retries(
    tmp_path: Path,
) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    target = RedisTarget(
        "rediss+sentinel://s1:1,s2:2/plant/3",
        password_file=secret,
        ca_file=tmp_path / "ca.crt",
        socket_timeout=0.5,
    )
    pool = client_for(target).connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "plant"
    kw = pool.connection_kwargs
    assert (kw["password"], kw["db"], kw["ssl_ca_certs"]) == ("s3cret", 3, str(tmp_path / "ca.crt"))
    assert kw["retry"].get_retries() == 0
    sentinels = pool.sentinel_manager.sentinels
    assert [
        (s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
        for s in sentinels
    ] == [("s1", 1), ("s2", 2)]
    for s in sentinels:
        skw = s.connection_pool.connection_kwargs
        assert skw["password"] == "s3cret" and skw["socket_timeout"] == 0.5
        assert skw["ssl_ca_certs"] == str(tmp_path / "ca.crt")
    open_sentinels = client_for(RedisTarget("redis+sentinel://:pw@s1/m?sentinel_auth=no"))
    pool = open_sentinels.connection_pool
    assert pool.connection_kwargs["password"] == "pw"  # the data nodes still get it
    assert pool.sentinel_manager.sentinels[0].connection_pool.connection_kwargs["password"] is None
    with pytest.raises(RedisSetupError, match="name the master") as err:
        client_for(RedisTarget("redis+sentinel://:hunter2@s1/"))
    assert "hunter2" not in str(err.value)


def test_redact_a_sentinel_url() -> None:
    assert redact_url("redis+sentinel://:pw@s1,s2:1/m") == "redis+sentinel://:***@s1,s2:1/m"
    assert redact_url("rediss+sentinel://u:p@w@s1/m") == "rediss+sentinel://u:***@s1/m"
    assert redact_url("redis+sentinel://s1/m") == "redis+sentinel://s1/m"
