"""grpcurl, built from its Go module, against the gateway of a real `plantd up`: it finds the
services by server reflection alone (no .proto files), describes a method, writes and reads a
state entry with the token `plant auth token` prints, and shows a refused call's error details
(ErrorInfo reason) the way the docs say clients see them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from clikit import Stack, require

from plantd.common import contract

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def grpcurl() -> Path:
    require(
        subprocess.run(["go", "version"], capture_output=True, check=False).returncode == 0,
        "go is missing: grpcurl is built from its Go module",
    )
    built = subprocess.run(
        [ROOT / "hack" / "tools" / "grpcurl.sh"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    return Path(built.stdout.strip())


def test_grpcurl_through_reflection(stack: Stack, grpcurl: Path) -> None:
    target = f"127.0.0.1:{contract.GRPC_PORT + stack.offset}"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(grpcurl), "-plaintext", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    listed = run(target, "list")
    assert listed.returncode == 0, listed.stderr
    services = set(listed.stdout.split())
    assert {
        "plantd.v1.StateService",
        "plantd.v1.BusService",
        "plantd.v1.IdentityService",
        "grpc.health.v1.Health",
    } <= services, services
    described = run(target, "describe", "plantd.v1.StateService.GetEntry")
    assert described.returncode == 0, described.stderr
    assert (
        "rpc GetEntry ( .plantd.v1.GetEntryRequest ) returns ( .plantd.v1.GetEntryResponse )"
        in (described.stdout)
    )

    login = stack.login_admin()
    assert login.returncode == 0, login.stderr
    token = stack.plant("auth", "token").stdout.strip()
    auth = ["-H", f"authorization: Bearer {token}"]
    body = {"scope": "grpcurl", "key": "k", "value": "via grpcurl", "createScope": True}
    put = run(*auth, "-d", json.dumps(body), target, "plantd.v1.StateService/SetEntry")
    assert put.returncode == 0, put.stderr
    version = json.loads(put.stdout)["entry"]["version"]
    got = run(
        *auth, "-d", '{"scope": "grpcurl", "key": "k"}', target, "plantd.v1.StateService/GetEntry"
    )
    assert got.returncode == 0, got.stderr
    entry = json.loads(got.stdout)["entry"]
    assert entry["value"] == "via grpcurl" and entry["version"] == version

    # No token: refused at the gateway; grpcurl prints the status and its ErrorInfo.
    anon = run(
        "-format-error", "-d", '{"scope": "grpcurl", "key": "k"}', target,
        "plantd.v1.StateService/GetEntry",
    )  # fmt: skip
    assert anon.returncode != 0
    error = json.loads(anon.stdout or anon.stderr)
    assert error["code"] == 16, error  # UNAUTHENTICATED
    infos = [d for d in error.get("details", []) if d["@type"].endswith("ErrorInfo")]
    assert infos and infos[0]["domain"] == "plantd.io", error
