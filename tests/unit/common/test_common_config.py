"""Settings: precedence flag > env > file > default, and errors that say what to fix."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import Field

from plantd.common import contract
from plantd.common.config import (
    BrokerSettings,
    ConfigError,
    EchoSettings,
    ServiceSettings,
    check_endpoint,
    parse_buses,
)

pytestmark = pytest.mark.unit


def test_defaults_come_from_the_contract() -> None:
    s = BrokerSettings.load(environ={})
    assert s.endpoint == contract.DEFAULT_BROKER_BIND
    assert s.http_port == contract.HTTP_PORTS[contract.BROKER]
    assert s.buses == contract.BUS_PORTS
    assert s.heartbeat_ms == contract.HEARTBEAT_MS
    assert s.heartbeat_liveness == contract.HEARTBEAT_LIVENESS
    assert s.curve is True
    assert s.curve_keys == Path(contract.DEFAULT_CURVE_KEYS_DIR).expanduser()
    assert (s.log_level, s.log_format) == (contract.DEFAULT_LOG_LEVEL, contract.DEFAULT_LOG_FORMAT)
    e = EchoSettings.load(environ={})
    assert e.http_port == contract.HTTP_PORTS[contract.ECHO]
    assert e.broker_endpoint == contract.DEFAULT_BROKER_CONNECT
    assert e.service == contract.SERVICE_ECHO


def test_contract_keys_are_fields() -> None:
    for key in (
        contract.KEY_ENDPOINT,
        contract.KEY_HTTP_PORT,
        contract.KEY_CURVE,
        contract.KEY_CURVE_KEYS,
        contract.KEY_LOG_LEVEL,
        contract.KEY_LOG_FORMAT,
        contract.KEY_HEARTBEAT_MS,
        contract.KEY_BUS_BIND,
        contract.KEY_HEARTBEAT_LIVENESS,
        contract.KEY_HTTP_HOST,
    ):
        assert key in BrokerSettings.model_fields, key
    assert contract.KEY_BROKER_ENDPOINT in EchoSettings.model_fields


def test_env_names_follow_the_contract() -> None:
    assert BrokerSettings.env_name("http_port") == contract.env_key("broker", "http_port")
    assert EchoSettings.env_prefix() == "PLANTD_ECHO_"


@pytest.mark.parametrize(
    ("flag", "env", "file", "expected"),
    [
        (None, None, None, 8081),
        (None, None, 7003, 7003),
        (None, "7002", 7003, 7002),
        (7001, "7002", 7003, 7001),
        (7001, None, None, 7001),
    ],
)
def test_precedence(
    tmp_path: Path, flag: int | None, env: str | None, file: int | None, expected: int
) -> None:
    config = None
    if file is not None:
        config = tmp_path / "plantd.yaml"
        config.write_text(f"http_port: {file}\n")
    environ = {"PLANTD_BROKER_HTTP_PORT": env} if env is not None else {}
    flags = {"http_port": flag} if flag is not None else {}
    s = BrokerSettings.load(config_file=config, flags=flags, environ=environ)
    assert s.http_port == expected


def test_yaml_sections_and_keys(tmp_path: Path) -> None:
    config = tmp_path / "stack.yaml"
    config.write_text(
        "log_format: text\n"
        "http-port: 7000\n"  # dashes are accepted
        "broker:\n  log_level: WARNING\n  buses: {state: [1, 2]}\n"
        "state:\n  store: redis\n"  # another component's section is ignored
        "echo:\n  service: other\n"
    )
    b = BrokerSettings.load(config_file=config, environ={})
    assert (b.log_format, b.http_port, b.log_level) == ("text", 7000, "warning")
    assert b.buses == {"state": (1, 2)}
    e = EchoSettings.load(config_file=config, environ={})
    assert e.service == "other"


def test_config_file_from_env(tmp_path: Path) -> None:
    config = tmp_path / "b.yaml"
    config.write_text("max_queue: 5\n")
    s = BrokerSettings.load(environ={"PLANTD_BROKER_CONFIG": str(config)})
    assert s.max_queue == 5


def test_empty_yaml_is_fine(tmp_path: Path) -> None:
    config = tmp_path / "empty.yaml"
    config.write_text("# nothing\n")
    assert BrokerSettings.load(config_file=config, environ={}).max_queue == 10_000


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("htp_port: 1\n", "unknown setting(s) htp_port"),
        ("- a\n- b\n", "must hold a mapping"),
        ("a: [\n", "not valid YAML"),
        ("broker: 3\n", "section 'broker' must be a mapping"),
    ],
)
def test_bad_yaml_is_explained(tmp_path: Path, text: str, fragment: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        BrokerSettings.load(config_file=config, environ={})


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        BrokerSettings.load(config_file=tmp_path / "nope.yaml", environ={})


def test_errors_name_key_source_and_rule(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        BrokerSettings.load(environ={"PLANTD_BROKER_HTTP_PORT": "eighty"})
    msg = str(info.value)
    assert "http_port='eighty'" in msg
    assert "env PLANTD_BROKER_HTTP_PORT" in msg
    assert "integer" in msg
    with pytest.raises(ConfigError) as info:
        BrokerSettings.load(flags={"log_format": "xml"}, environ={})
    assert "flag --log-format" in str(info.value)
    assert "'json' or 'text'" in str(info.value)
    config = tmp_path / "c.yaml"
    config.write_text("heartbeat_ms: 1\n")
    with pytest.raises(ConfigError) as info:
        BrokerSettings.load(config_file=config, environ={})
    assert f"config file {config}" in str(info.value)
    assert "greater than or equal to 50" in str(info.value)


def test_unknown_flag_key_is_rejected() -> None:
    with pytest.raises(ConfigError, match="unknown setting"):
        BrokerSettings.load(flags={"nope": 1}, environ={})


def test_case_and_bool_parsing() -> None:
    s = BrokerSettings.load(
        environ={"PLANTD_BROKER_CURVE": "false", "PLANTD_BROKER_LOG_LEVEL": "DEBUG"}
    )
    assert s.curve is False
    assert s.log_level == "debug"
    with pytest.raises(ConfigError, match="curve"):
        BrokerSettings.load(environ={"PLANTD_BROKER_CURVE": "maybe"})


def test_empty_env_values_are_ignored() -> None:
    assert BrokerSettings.load(environ={"PLANTD_BROKER_HTTP_PORT": ""}).http_port == 8081


def test_buses_forms() -> None:
    assert parse_buses("state=1:2, event = 3:4") == {"state": (1, 2), "event": (3, 4)}
    assert parse_buses('{"metric": [5, 6]}') == {"metric": (5, 6)}
    s = BrokerSettings.load(environ={"PLANTD_BROKER_BUSES": "state=11000:11001"})
    assert s.buses == {"state": (11000, 11001)}
    for bad, fragment in [
        ("state=1", "NAME=PUBPORT:SUBPORT"),
        ("state=1:1", "already used"),
        ("State=1:2", "lower-case"),
        ("state=1:70000", "outside 1-65535"),
    ]:
        with pytest.raises(ConfigError, match=fragment):
            BrokerSettings.load(flags={"buses": bad}, environ={})


def test_frame_limit_within_message_limit() -> None:
    with pytest.raises(ConfigError, match="max_frame_bytes"):
        BrokerSettings.load(flags={"max_frame_bytes": 2048, "max_message_bytes": 1024}, environ={})


def test_endpoints() -> None:
    assert check_endpoint("tcp://*:9797", bind=True)
    assert check_endpoint("ipc:///tmp/x", bind=False)
    assert check_endpoint("tcp://[::1]:1", bind=False)
    with pytest.raises(ValueError, match="is for binding"):
        check_endpoint("tcp://*:9797", bind=False)
    with pytest.raises(ValueError, match="no transport"):
        check_endpoint("localhost:9797", bind=True)
    with pytest.raises(ValueError, match="not a number in 1-65535"):
        check_endpoint("tcp://a:0", bind=True)
    with pytest.raises(ValueError, match="lacks its closing"):  # libzmq accepts it, then hangs
        check_endpoint("tcp://[::1:9797", bind=True)
    with pytest.raises(ConfigError, match="broker_endpoint"):
        EchoSettings.load(environ={"PLANTD_ECHO_BROKER_ENDPOINT": "tcp://*:1"})


def test_unknown_env_is_reported() -> None:
    env = {
        "PLANTD_BROKER_HTTPPORT": "1",
        "PLANTD_BROKER_HTTP_PORT": "1",
        "PLANTD_BROKER_CONFIG": "x",
        "PLANTD_STATE_WHATEVER": "1",
    }
    assert BrokerSettings.unknown_env(env) == ["PLANTD_BROKER_HTTPPORT"]


def test_a_new_component_subclass() -> None:
    """The recipe in the module docstring works as written."""

    class StateLike(ServiceSettings):
        component: ClassVar[str] = "statelike"
        http_port: int = Field(8082, ge=0, le=65535, description="port")
        store: str = Field("sqlite", description="store kind")

    s = StateLike.load(environ={"PLANTD_STATELIKE_STORE": "redis"}, flags={"log_level": "error"})
    assert (s.store, s.http_port, s.log_level) == ("redis", 8082, "error")
    assert s.broker_endpoint == contract.DEFAULT_BROKER_CONNECT


def test_load_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLANTD_ECHO_SERVICE", "from.env")
    assert EchoSettings.load().service == "from.env"


def test_public_dict_hides_secrets() -> None:
    class WithSecrets(ServiceSettings):
        component: ClassVar[str] = "withsecrets"
        redis_password: str = Field("", description="password")
        redis_url: str = Field("", description="url")

    s = WithSecrets.load(
        environ={
            "PLANTD_WITHSECRETS_REDIS_PASSWORD": "hunter2",
            "PLANTD_WITHSECRETS_REDIS_URL": "rediss://user:pw@db:6379/0",
        }
    )
    public = s.public_dict()
    assert public["redis_password"] == "[redacted]"
    assert public["redis_url"] == "rediss://[redacted]@db:6379/0"
    assert "hunter2" not in repr(public) and "pw@" not in repr(public)
    assert s.redis_password == "hunter2"  # only the log copy is redacted


def test_public_dict_shows_numbers_with_secret_like_names() -> None:
    # A policy number is not a credential: identity logged password_min_length as "[redacted]".
    class WithPolicy(ServiceSettings):
        component: ClassVar[str] = "withpolicy"
        password_min_length: int = Field(15, description="shortest password")
        join_token_ttl_s: float = Field(3600.0, description="join token lifetime")
        token_file: str = Field("", description="where a secret lives: shown")
        api_token: str = Field("", description="a secret: hidden")

    env = {"PLANTD_WITHPOLICY_TOKEN_FILE": "/run/t", "PLANTD_WITHPOLICY_API_TOKEN": "s3cr3t"}
    public = WithPolicy.load(environ=env).public_dict()
    assert public["password_min_length"] == 15 and public["join_token_ttl_s"] == 3600.0
    assert public["token_file"] == "/run/t" and public["api_token"] == "[redacted]"
