"""Client config file logic and settings precedence (pure functions, temp files)."""

from __future__ import annotations

import stat
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from plantd.cli import config_file
from plantd.cli.errors import CliError, ExitCode
from plantd.cli.settings import GlobalFlags, resolve

pytestmark = pytest.mark.unit


def test_with_value_keeps_everything_else() -> None:
    doc: dict[str, Any] = {
        "x": 1,
        "profiles": {"a": {"endpoint": "tcp://a:1", "odd": True}, "b": {}},
    }
    new = config_file.with_value(doc, "b", "timeout", "3")
    assert new == {
        "x": 1,
        "profiles": {"a": {"endpoint": "tcp://a:1", "odd": True}, "b": {"timeout": 3.0}},
    }
    assert doc["profiles"]["b"] == {}  # the input is not modified


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("endpoint", "localhost:1", "tcp://"),
        ("endpoint", "tcp://nohost", "no port"),
        ("timeout", "-1", "between"),
        ("curve", "maybe", "true or false"),
        ("secret", "x", "unknown key"),
    ],
)
def test_bad_values(key: str, value: str, message: str) -> None:
    with pytest.raises(config_file.ConfigFileError, match=message):
        config_file.with_value({}, "default", key, value)


def test_save_is_atomic_and_private(tmp_path: Path) -> None:
    path = tmp_path / "d" / "config.yaml"
    config_file.save(path, config_file.default_document())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["config.yaml"]
    assert config_file.load(path) == config_file.default_document()


def test_concurrent_updates_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"

    def set_profile(i: int) -> None:
        config_file.update(
            path, lambda doc: config_file.with_value(doc, f"p{i}", "endpoint", f"tcp://h:{i + 1}")
        )

    threads = [threading.Thread(target=set_profile, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(config_file.profiles(config_file.load(path))) == {f"p{i}" for i in range(16)}


def test_load_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("profiles: [unclosed")
    with pytest.raises(config_file.ConfigFileError, match="not valid YAML"):
        config_file.load(bad)
    bad.write_text("- a list")
    with pytest.raises(config_file.ConfigFileError, match="mapping"):
        config_file.load(bad)
    assert config_file.load(tmp_path / "missing.yaml") == {}


def test_problems() -> None:
    doc = {
        "default_profile": "gone",
        "profiles": {"a": {"timeout": "x"}, "b": "not a mapping"},
        "extra": 1,
    }
    found = config_file.problems(doc, mode=0o644)
    text = "\n".join(found)
    assert "chmod 600" in text and "'extra'" in text and "gone" in text
    assert "timeout" in text and "profile 'b' must be a mapping" in text
    assert config_file.problems(config_file.default_document(), mode=0o600) == []


def test_precedence(tmp_path: Path) -> None:
    doc = {
        "default_profile": "lab",
        "profiles": {"lab": {"endpoint": "tcp://lab:1", "timeout": 9, "curve": False}},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(doc))
    env = {"PLANTD_CONFIG": str(path), "PLANTD_CLIENT_TIMEOUT": "4"}
    s = resolve(GlobalFlags(), env)
    assert (s.profile, s.endpoint, s.timeout, s.curve) == ("lab", "tcp://lab:1", 4.0, False)
    assert s.sources["timeout"] == "env PLANTD_CLIENT_TIMEOUT"
    s = resolve(GlobalFlags(timeout=1.0, curve=True), env)
    assert (s.timeout, s.curve) == (1.0, True)
    s = resolve(GlobalFlags(), {"PLANTD_CONFIG": str(tmp_path / "none.yaml")})
    assert (s.profile, s.endpoint, s.timeout, s.curve) == (
        "default",
        "tcp://127.0.0.1:9797",
        2.5,
        True,
    )


def test_resolve_errors(tmp_path: Path) -> None:
    env = {"PLANTD_CONFIG": str(tmp_path / "none.yaml")}
    with pytest.raises(CliError) as info:
        resolve(GlobalFlags(profile="ghost"), env)
    assert info.value.code == ExitCode.CONFIG and "ghost" in info.value.message
    with pytest.raises(CliError) as info:
        resolve(GlobalFlags(), {**env, "PLANTD_CLIENT_CURVE": "perhaps"})
    assert "PLANTD_CLIENT_CURVE" in info.value.message
