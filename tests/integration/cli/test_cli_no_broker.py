"""`plant` with nothing listening, missing keys or bad settings: clear errors and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from clikit import run_cli

from plantd.common import contract

pytestmark = pytest.mark.integration


def _dead_endpoint(port: int) -> str:
    return f"tcp://127.0.0.1:{port}"


def test_broker_not_running(env: dict[str, str], port: int) -> None:
    start = time.monotonic()
    r = run_cli("plant", ["--no-curve", "-e", _dead_endpoint(port), "-t", "0.5", "echo", "x"], env)
    elapsed = time.monotonic() - start
    assert r.returncode == 3, r.stdout + r.stderr
    assert f"no reply from {_dead_endpoint(port)} within 0.5s" in r.stderr
    assert "plantd up" in r.stderr  # says what to do
    assert "Traceback" not in r.stderr
    # 0.5 s request + at most 1 s diagnosis + interpreter start-up.
    assert elapsed < 8, elapsed


def test_broker_not_running_json(env: dict[str, str], port: int) -> None:
    r = run_cli(
        "plant", ["--json", "--no-curve", "-e", _dead_endpoint(port), "-t", "0.3", "services"], env
    )
    assert r.returncode == 3
    err = json.loads(r.stderr)
    assert err["exit_code"] == 3 and err["endpoint"] == _dead_endpoint(port)
    assert r.stdout == ""


def test_missing_keys_say_how_to_create_them(env: dict[str, str], home: Path) -> None:
    r = run_cli("plant", ["echo", "x"], env)  # CURVE on by default; HOME has no keys
    assert r.returncode == 4, r.stderr
    keys = home / ".local" / "state" / "plantd" / "keys"
    assert str(keys / "client.key_secret") in r.stderr
    assert "plantd up" in r.stderr and "plantd keys generate" in r.stderr


def test_endpoint_from_env_is_validated(env: dict[str, str]) -> None:
    bad = {**env, "PLANTD_CLIENT_ENDPOINT": "localhost:9797"}
    r = run_cli("plant", ["--no-curve", "echo", "x"], bad)
    assert r.returncode == 4
    assert "PLANTD_CLIENT_ENDPOINT" in r.stderr and "tcp://" in r.stderr


def test_unknown_profile(env: dict[str, str]) -> None:
    r = run_cli("plant", ["--profile", "nope", "echo", "x"], env)
    assert r.returncode == 4
    assert "'nope'" in r.stderr and "plant config profiles create nope" in r.stderr


def test_usage_error_exit_2(env: dict[str, str]) -> None:
    r = run_cli("plant", ["echo"], env)  # MSG is required
    assert r.returncode == 2
    assert "Missing argument" in r.stderr


def test_component_missing_is_reported(env: dict[str, str]) -> None:
    # An installation without one component (a slim image, a broken install): the real
    # `plantd` with that module hidden says so and exits 5.
    hide = (
        "import sys; sys.modules['plantd.gateway.main'] = None; "
        "from plantd.cli.plantd import main; sys.argv = ['plantd', 'gateway']; main()"
    )
    r = subprocess.run(
        [sys.executable, "-c", hide], env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 5, r.stderr
    assert f"component {contract.GATEWAY!r} is not available" in r.stderr


def test_identity_refuses_to_start_without_a_signing_key(env: dict[str, str]) -> None:
    r = run_cli("plantd", [contract.IDENTITY, "--no-curve", "--http-port", "0"], env)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "refuses to start without a signing key" in out and "keygen" in out
    assert "Traceback" not in out


def test_version(env: dict[str, str]) -> None:
    for prog in ("plant", "plantd"):
        r = run_cli(prog, ["version"], env)
        assert r.returncode == 0 and r.stdout.startswith("plantd ")
    doc = json.loads(run_cli("plant", ["--json", "version"], env).stdout)
    assert {"plantd", "pyzmq", "libzmq"} <= set(doc)
