"""`plant config`: profiles, precedence, and edits that never clobber the rest of the file."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import yaml
from clikit import run_in_process as run_cli

pytestmark = pytest.mark.integration


def _cfg(home: Path) -> Path:
    return home / ".config" / "plantd" / "config.yaml"


def test_init_writes_0600_and_keeps_existing(env: dict[str, str], home: Path) -> None:
    r = run_cli("plant", ["config", "init"], env)
    assert r.returncode == 0, r.stderr
    path = _cfg(home)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    doc = yaml.safe_load(path.read_text())
    assert doc["profiles"]["default"]["endpoint"] == "tcp://127.0.0.1:9797"
    run_cli("plant", ["config", "set", "timeout", "7"], env)
    again = run_cli("plant", ["config", "init"], env)
    assert again.returncode == 0 and "left unchanged" in again.stdout
    assert yaml.safe_load(path.read_text())["profiles"]["default"]["timeout"] == 7.0


def test_set_does_not_clobber(env: dict[str, str], home: Path) -> None:
    path = _cfg(home)
    path.parent.mkdir(parents=True)
    original = {
        "default_profile": "default",
        "profiles": {
            "default": {"endpoint": "tcp://10.0.0.1:9797", "curve_keys": "/srv/keys"},
            "lab": {"endpoint": "tcp://lab:9797", "timeout": 9.0},
        },
        "future_key": {"kept": True},  # written by a newer plant: must survive
    }
    path.write_text(yaml.safe_dump(original))
    r = run_cli("plant", ["config", "set", "--profile", "lab", "timeout", "1.5"], env)
    assert r.returncode == 0, r.stderr
    assert "profiles.lab.timeout" in r.stdout
    doc = yaml.safe_load(path.read_text())
    expected = json.loads(json.dumps(original))
    expected["profiles"]["lab"]["timeout"] = 1.5
    assert doc == expected
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # No temp files left next to it.
    assert sorted(p.name for p in path.parent.iterdir() if not p.name.endswith(".lock")) == [
        "config.yaml"
    ]


def test_set_rejects_bad_values_and_keys_without_touching_file(
    env: dict[str, str], home: Path
) -> None:
    run_cli("plant", ["config", "init"], env)
    before = _cfg(home).read_bytes()
    bad_value = run_cli("plant", ["config", "set", "endpoint", "localhost"], env)
    assert bad_value.returncode == 4 and "endpoint" in bad_value.stderr
    bad_key = run_cli("plant", ["config", "set", "password", "hunter2"], env)
    assert bad_key.returncode == 4 and "unknown key 'password'" in bad_key.stderr
    assert _cfg(home).read_bytes() == before


def test_profiles_and_precedence(env: dict[str, str], home: Path) -> None:
    assert run_cli("plant", ["config", "init"], env).returncode == 0
    created = run_cli("plant", ["config", "profiles", "create", "lab", "tcp://lab:1234"], env)
    assert created.returncode == 0, created.stderr
    listed = json.loads(run_cli("plant", ["--json", "config", "profiles", "list"], env).stdout)
    assert set(listed["profiles"]) == {"default", "lab"} and listed["default"] == "default"

    def show(*args: str, extra: dict[str, str] | None = None) -> dict[str, object]:
        r = run_cli("plant", ["--json", *args, "config", "show"], {**env, **(extra or {})})
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)  # type: ignore[no-any-return]

    lab = show("--profile", "lab")
    assert lab["settings"]["endpoint"] == "tcp://lab:1234"  # type: ignore[index]
    assert "profile 'lab'" in lab["sources"]["endpoint"]  # type: ignore[index]
    env_wins = show("--profile", "lab", extra={"PLANTD_CLIENT_ENDPOINT": "tcp://env:1"})
    assert env_wins["settings"]["endpoint"] == "tcp://env:1"  # type: ignore[index]
    flag_wins = show(
        "--profile", "lab", "-e", "tcp://flag:2", extra={"PLANTD_CLIENT_ENDPOINT": "tcp://env:1"}
    )
    assert flag_wins["settings"]["endpoint"] == "tcp://flag:2"  # type: ignore[index]
    assert flag_wins["sources"]["endpoint"] == "flag"  # type: ignore[index]

    assert run_cli("plant", ["config", "profiles", "use", "lab"], env).returncode == 0
    assert show()["profile"] == "lab"
    assert run_cli("plant", ["config", "profiles", "delete", "lab"], env).returncode == 0
    assert show()["profile"] == "default"


def test_validate(env: dict[str, str], home: Path) -> None:
    missing = run_cli("plant", ["config", "validate"], env)
    assert missing.returncode == 0 and "does not exist" in missing.stdout
    run_cli("plant", ["config", "init"], env)
    assert run_cli("plant", ["config", "validate"], env).returncode == 0
    path = _cfg(home)
    doc = yaml.safe_load(path.read_text())
    doc["profiles"]["default"]["timeout"] = "soon"
    doc["default_profile"] = "ghost"
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o644)
    r = run_cli("plant", ["config", "validate"], env)
    assert r.returncode == 4
    assert "timeout" in r.stderr and "ghost" in r.stderr and "chmod 600" in r.stderr


def test_plantd_config_env_var(env: dict[str, str], tmp_path: Path) -> None:
    custom = tmp_path / "elsewhere.yaml"
    r = run_cli(
        "plant", ["config", "set", "endpoint", "tcp://x:1"], {**env, "PLANTD_CONFIG": str(custom)}
    )
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(custom.read_text())["profiles"]["default"]["endpoint"] == "tcp://x:1"
