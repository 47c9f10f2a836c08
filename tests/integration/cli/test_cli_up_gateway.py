"""`plantd up` runs the gRPC gateway: a real grpc client with the token `plant auth login`
stored writes and reads state through it, a call without one is refused, and the stop is clean.

Real processes throughout: `plantd up` in a fresh HOME with a port offset, the real `plant`
CLI logging in as the banner says, the generated plantd.v1 stubs over a real channel.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from clikit import Stack, pid_alive, require
from tests.kit import wait_for

from plantd.common import contract
from plantd.v1 import state_pb2 as pb
from plantd.v1 import state_pb2_grpc

pytestmark = pytest.mark.integration

SCOPE = "demo"


def _token(stack: Stack) -> str:
    """The access token `plant auth token` prints, as the banner's line takes it."""
    r = stack.plant("auth", "token")
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert token.count(".") == 2 and "\n" not in token, token  # one compact JWS, nothing else
    return token


def _curl_as_the_banner_says(s: Stack, banner: str) -> None:
    """The banner's REST lines, run by a shell as a newcomer pastes them: a read of
    demo/key, then a watch (curl -N) that shows a write made while it runs."""
    require(shutil.which("curl") is not None, "curl is missing: apt-get install curl")
    rest = f"http://127.0.0.1:{contract.REST_PORT + s.offset}"
    assert f"REST gateway       {rest}" in banner, banner

    def command(start: str, contains: str = "") -> str:  # a banner line, from `start` on
        for line in banner.splitlines():
            at = line.find(start)
            if at >= 0 and contains in line:
                return line[at:].rstrip(" │")
        raise AssertionError(f"no {start!r} line in the banner:\n{banner}")

    token = command("TOKEN=$(plant ")
    get = command("curl -H", "/entries/key")
    watch = command("curl -N")
    env = {**s.env, "PATH": f"{Path(sys.executable).parent}:{s.env.get('PATH', '')}"}
    put = s.plant("state", "set", "--service", SCOPE, "key", "via-bus")
    assert put.returncode == 0, put.stderr
    got = subprocess.run(["bash", "-c", f"{token} && {get} -sS"], env=env,
                         capture_output=True, text=True, timeout=30)  # fmt: skip
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["entry"]["value"] == "via-bus", got.stdout
    with subprocess.Popen(
        ["bash", "-c", f"{token} && exec {watch} -sS"],
        env=env, stdout=subprocess.PIPE, text=True,
    ) as proc:  # fmt: skip
        try:
            assert proc.stdout is not None
            first = next(line for line in proc.stdout if line.startswith("data: "))
            assert json.loads(first[6:])["created"], first  # the stream's first event
            again = s.plant("state", "set", "--service", SCOPE, "watched", "1")
            assert again.returncode == 0, again.stderr
            for line in proc.stdout:
                if line.startswith("data: ") and "watched" in line:
                    change = json.loads(line[6:])["changes"][0]
                    assert change["entry"]["value"] == "1"
                    break
        finally:
            proc.terminate()


def test_up_serves_state_over_grpc_with_the_login_token(home: Path) -> None:
    require(Path("/proc").is_dir(), "needs Linux /proc to find the stack's children")
    s = Stack(home, "--without", "echo")
    s.start()
    try:
        s.wait_ready()
        children = s.children()
        assert {"broker", "identity", "state", "gateway"} <= set(children), children
        target = f"127.0.0.1:{contract.GRPC_PORT + s.offset}"
        out = s.output()
        assert f"gRPC gateway       {target}" in out, out  # the banner names the address
        assert f"{target} plantd.v1.StateService/GetEntry" in out  # and a grpcurl line

        login = s.login_admin()
        assert login.returncode == 0, login.stderr
        auth = (("authorization", f"Bearer {_token(s)}"),)
        with grpc.insecure_channel(target) as channel:
            stub = state_pb2_grpc.StateServiceStub(channel)
            # No token: refused at the gateway, before the bus.
            with pytest.raises(grpc.RpcError) as anon:
                stub.GetEntry(pb.GetEntryRequest(scope=SCOPE, key="k"), timeout=10)
            assert anon.value.code() is grpc.StatusCode.UNAUTHENTICATED, anon.value

            put = stub.SetEntry(
                pb.SetEntryRequest(scope=SCOPE, key="k", value="via-grpc"),
                metadata=auth,
                timeout=10,
            )
            assert put.entry.value == "via-grpc" and put.entry.version > 0
            got = stub.GetEntry(pb.GetEntryRequest(scope=SCOPE, key="k"), metadata=auth, timeout=10)
            assert got.entry.value == "via-grpc" and got.entry.version == put.entry.version
        # The same entry through the bus: the gateway wrote to the stack's own state service.
        via_bus = s.plant("state", "get", "--service", SCOPE, "k")
        assert via_bus.returncode == 0 and via_bus.stdout.strip() == "via-grpc", via_bus.stderr
        _curl_as_the_banner_says(s, out)

        pids = set(s.children().values()) | s.known_pids
        assert s.stop(signal.SIGINT) == 0, s.output()
        assert s.has_line("plantd up: stopped")
        alive = [p for p in pids if pid_alive(p)]
        assert not alive, f"children left running: {alive}"
        assert not s.has_line("gateway was killed"), s.output()  # it stopped on SIGTERM
    finally:
        s.kill_all()


def test_up_without_gateway_leaves_it_out(home: Path) -> None:
    require(Path("/proc").is_dir(), "needs Linux /proc to find the stack's children")
    s = Stack(home, "--no-curve", "--without", "echo", "--without", "gateway")
    s.start()
    try:
        s.wait_ready()
        wait_for(lambda: "state" in s.children(), 10, "the state child")
        assert "gateway" not in s.children()
        assert "gRPC gateway" not in s.output() and "grpcurl" not in s.output()
        assert s.stop() == 0, s.output()
    finally:
        s.kill_all()
