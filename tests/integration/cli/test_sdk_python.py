"""The Python SDK (plantd.sdk) against a live gateway: the quick start program logs in to a
real `plantd up` stack, sets and gets a state key and watches a change, and the stack's own
bus then shows the key; the asyncio face carries the token, and its errors name the plantd
code. Real processes throughout: `plantd up` in a fresh HOME with a port offset.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import grpc
import pytest
from clikit import Stack
from sdkkit import check_quickstart

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
        denied = check_quickstart(
            s,
            home,
            tmp_path,
            [sys.executable, EXAMPLE],
            scope=SCOPE,
            prefix="py",
            language="Python",
        )
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
