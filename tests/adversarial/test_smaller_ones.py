"""Issue 7 case 7: the smaller holes (key and config permissions, symlinks, bad endpoints,
duplicate keys in one batch-set, SQLite side files), each against real processes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from tests.adversarial.advkit import (
    PYTHON,
    Bounds,
    Stack,
    _env,
    generate_keys,
    run_plantd,
    under_attack,
)
from tests.kit.net import free_port

from plantd.state.client import StateReplyError

pytestmark = pytest.mark.adversarial


def _plant(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**_env(), "HOME": str(home), "COLUMNS": "200"}
    return subprocess.run(
        [PYTHON, "-m", "plantd.cli.plant", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def test_world_writable_key_directory_is_refused(tmp_path: Path) -> None:
    """A 0777 key directory (anyone could drop a key into the allow-list) is refused: exit 4,
    the message names the directory and the chmod that fixes it."""
    keys = generate_keys(tmp_path / "keys", ["broker", "client"])
    keys.chmod(0o777)
    endpoint = f"tcp://127.0.0.1:{free_port()}"  # nothing listens: keys are checked first
    done = _plant(
        tmp_path, "--endpoint", endpoint, "--curve-keys", str(keys), "--timeout", "1", "echo", "x"
    )
    print(f"[case 7 keys] exit {done.returncode}: {done.stderr.strip()[:300]}")
    assert done.returncode == 4, done.stderr
    assert str(keys) in done.stderr and "chmod" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_key_files_are_not_written_through_symlinks(tmp_path: Path) -> None:
    """`plantd keys generate --force` must not follow a symlink planted where a key file goes
    (it would overwrite whatever the link points at)."""
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (keys / "x.key_secret").symlink_to(victim)
    (keys / "x.key").symlink_to(victim)
    done = run_plantd(["keys", "generate", "--dir", str(keys), "--name", "x", "--force"])
    print(f"[case 7 symlink] exit {done.returncode}: {done.stderr.strip()[:300]}")
    assert victim.read_text() == "precious\n", "a key was written through the symlink"
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1:notaport", "tcp://[::1"])
def test_malformed_endpoint_is_a_usage_error(tmp_path: Path, endpoint: str) -> None:
    """A malformed endpoint exits 2 naming it (the issue: a raw ZMQError traceback, and
    `tcp://[::1` reported as a timeout)."""
    done = _plant(tmp_path, "--no-curve", "--endpoint", endpoint, "--timeout", "1", "echo", "x")
    print(f"[case 7 endpoint] {endpoint}: exit {done.returncode}: {done.stderr.strip()[:200]}")
    assert done.returncode == 2, done.stderr
    assert endpoint in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr


def test_world_writable_config_file_warns(tmp_path: Path) -> None:
    """A client config.yaml writable by others (it can turn CURVE off) gets a warning that
    names it."""
    assert _plant(tmp_path, "config", "init").returncode == 0
    config = tmp_path / ".config" / "plantd" / "config.yaml"
    assert config.exists(), "plant config init wrote no file where expected"
    config.chmod(0o666)
    done = _plant(tmp_path, "config", "show")
    print(f"[case 7 config] exit {done.returncode}: {done.stderr.strip()[:300]}")
    assert str(config) in done.stderr and "writable" in done.stderr.lower(), done.stderr


def test_batch_set_with_one_key_twice_and_sqlite_side_files(stack: Stack) -> None:
    """batch-set naming one key twice, each `if_version: 0`, is INVALID_REQUEST (the issue:
    both "succeeded"); and the SQLite -wal/-shm files are private (0600) like state.db."""
    state = stack.state_client(timeout=10)
    items = [
        {"key": "dup", "value": "a", "if_version": 0},
        {"key": "dup", "value": "b", "if_version": 0},
    ]
    with under_attack(stack, "case 7 batch-set", Bounds({"state": 100}), ("echo", "state")):
        try:
            data = state.batch_set("dups", items)
            outcome = f"succeeded: {json.dumps(data)[:200]}"
        except StateReplyError as exc:
            outcome = exc.code
    print(f"[case 7 batch-set] {outcome}")
    data_dir = stack.tmp / "state-data"
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in data_dir.iterdir() if p.is_file()}
    print(f"[case 7 sqlite] modes { ({k: oct(v) for k, v in modes.items()}) }")
    assert outcome == "INVALID_REQUEST", outcome
    assert any(n.endswith("-wal") for n in modes), f"no WAL file in {data_dir}: {modes}"
    loose = {n: oct(m) for n, m in modes.items() if m & 0o077}
    assert not loose, f"state files readable or writable by others: {loose}"
    assert os.stat(data_dir).st_mode & 0o077 == 0
