"""The Python SDK (plantd.sdk) against a live gateway: the quick start program logs in to a
real `plantd up` stack, sets and gets a state key and watches a change, and the stack's own
bus then shows the key; the asyncio face carries the token, and its errors name the plantd
code. Real processes throughout: `plantd up` in a fresh HOME with a port offset.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from clikit import Stack

from plantd.common import contract
from plantd.sdk import AsyncClient, describe, reason
from plantd.v1 import state_pb2

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "sdk" / "python" / "quickstart.py"
SCOPE = "sdk-py"


def _password(s: Stack) -> str:
    return (s.state_dir / "admin-credentials").read_text().split("\n", 1)[0]


def test_the_python_sdk_logs_in_sets_gets_and_watches(home: Path, tmp_path: Path) -> None:
    s = Stack(home, "--without", "echo")
    s.start()
    try:
        s.wait_ready()
        address = f"127.0.0.1:{contract.GRPC_PORT + s.offset}"
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(home),
            "PLANTD_GATEWAY": address,
            "PLANTD_USERNAME": "admin",
            "PLANTD_PASSWORD_FILE": str(s.state_dir / "admin-credentials"),
            "PLANTD_SCOPE": SCOPE,
        }
        run = subprocess.run(
            [sys.executable, EXAMPLE], env=env, capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 0, (run.stdout, run.stderr)
        lines = run.stdout.splitlines()
        assert lines[0] == "logged in as admin", lines
        set_ = re.fullmatch(r"set py-quickstart = hello from Python \(version (\d+)\)", lines[1])
        got = re.fullmatch(r"got py-quickstart = hello from Python \(version (\d+)\)", lines[2])
        watched = re.fullmatch(
            r"watched py-quickstart = changed by Python \(revision (\d+)\)", lines[3]
        )
        assert set_ and got and watched, lines
        assert int(set_[1]) == int(got[1]) > 0
        assert int(watched[1]) > int(set_[1])
        login = s.login_admin()
        assert login.returncode == 0, login.stderr
        via_bus = s.plant("state", "get", "--service", SCOPE, "py-quickstart")
        assert via_bus.returncode == 0, via_bus.stderr
        assert via_bus.stdout.strip() == "changed by Python"

        # A wrong password: a one-line error with the gRPC code and the plantd reason.
        bad = tmp_path / "wrong"
        bad.write_text("not-the-password\n")
        bad.chmod(0o600)
        denied = subprocess.run(
            [sys.executable, EXAMPLE],
            env={**env, "PLANTD_PASSWORD_FILE": str(bad)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert denied.returncode == 1, (denied.stdout, denied.stderr)
        assert denied.stderr.strip() == "error: UNAUTHENTICATED invalid credentials (LOGIN_FAILED)"

        asyncio.run(_the_asyncio_face(address, _password(s)))
    finally:
        s.kill_all()


async def _the_asyncio_face(address: str, password: str) -> None:
    """No token is refused; the login's token is sent from then on; errors name the code."""
    async with AsyncClient(address) as client:
        request = state_pb2.GetEntryRequest(scope=SCOPE, key="py-quickstart")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.state.GetEntry(request, timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert reason(refused.value) != "", describe(refused.value)
        await client.login("admin", password)
        entry = await client.state.GetEntry(request, timeout=10)
        assert entry.entry.value == "changed by Python"
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await client.state.GetEntry(
                state_pb2.GetEntryRequest(scope=SCOPE, key="no-such-key"), timeout=10
            )
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert describe(missing.value) == (
            f"NOT_FOUND key 'no-such-key' does not exist in scope '{SCOPE}' (KEY_NOT_FOUND)"
        )
        assert reason(missing.value) == "KEY_NOT_FOUND"
