"""`plantd keys`: pairs written with safe modes, kept on re-run, secrets never printed."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from clikit import run_cli

from plantd.common.curve import load_keypair

pytestmark = pytest.mark.integration


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_generate_modes_and_layout(env: dict[str, str], tmp_path: Path) -> None:
    d = tmp_path / "keys"
    r = run_cli("plantd", ["keys", "generate", "--dir", str(d)], env)
    assert r.returncode == 0, r.stderr
    assert _mode(d) == 0o700
    for name in ("broker", "echo", "state", "client"):
        assert _mode(d / f"{name}.key_secret") == 0o600
        assert _mode(d / f"{name}.key") == 0o644
        pair = load_keypair(d / f"{name}.key_secret")
        assert pair.secret is not None
        assert load_keypair(d / f"{name}.key").public == pair.public
        assert pair.secret.decode() not in r.stdout + r.stderr


def test_generate_keeps_existing_unless_forced(env: dict[str, str], tmp_path: Path) -> None:
    d = tmp_path / "keys"
    args = ["keys", "generate", "--dir", str(d), "--name", "m1", "--json"]
    first = json.loads(run_cli("plantd", args, env).stdout)
    assert first["keys"] == [{"name": "m1", "created": True}]
    before = load_keypair(d / "m1.key_secret")
    second = json.loads(run_cli("plantd", args, env).stdout)
    assert second["keys"] == [{"name": "m1", "created": False}]
    assert load_keypair(d / "m1.key_secret") == before
    run_cli("plantd", [*args, "--force"], env)
    assert load_keypair(d / "m1.key_secret").public != before.public


def test_generate_rejects_path_names(env: dict[str, str], tmp_path: Path) -> None:
    r = run_cli("plantd", ["keys", "generate", "--dir", str(tmp_path), "--name", "../evil"], env)
    assert r.returncode == 2 and "bad key name" in r.stderr
    assert not (tmp_path.parent / "evil.key_secret").exists()


def test_list_never_prints_secrets(env: dict[str, str], tmp_path: Path) -> None:
    d = tmp_path / "keys"
    run_cli("plantd", ["keys", "generate", "--dir", str(d)], env)
    table = run_cli("plantd", ["keys", "list", "--dir", str(d)], env)
    listed = run_cli("plantd", ["keys", "list", "--dir", str(d), "--json"], env)
    assert table.returncode == 0 and listed.returncode == 0
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    for name in ("broker", "client"):
        pair = load_keypair(d / f"{name}.key_secret")
        assert pair.secret is not None
        assert rows[name]["public"] == pair.public.decode()
        assert rows[name]["secret_mode"] == "0o600"
        assert pair.secret.decode() not in table.stdout + listed.stdout
        assert pair.public.decode() in table.stdout


def test_list_empty_dir(env: dict[str, str], tmp_path: Path) -> None:
    r = run_cli("plantd", ["keys", "list", "--dir", str(tmp_path / "none")], env)
    assert r.returncode == 4 and "plantd keys generate" in r.stderr
