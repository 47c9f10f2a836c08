"""The TypeScript SDK against a live gateway: its example program, compiled from sdk/ts with
the pinned npm packages, logs in to a real `plantd up` stack, sets and gets a state key and
watches a change; the stack's own bus then shows the key. And the checked-in generated code
is up to date and type-checks under `tsc --strict`.

Real processes throughout: `plantd up` in a fresh HOME with a port offset, Node.js running
the example built by `hack/sdk/ts.sh build` over HTTP/2 gRPC, `plant` over the bus.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from clikit import Stack, require

from plantd.common import contract

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "hack" / "sdk" / "ts.sh"
EXAMPLE = ROOT / "sdk" / "ts" / "dist" / "examples" / "quickstart.js"
SCOPE = "sdk-ts"


def _require_node() -> str:
    node = shutil.which("node")
    require(
        node is not None and shutil.which("npm") is not None,
        "node/npm are missing: the TypeScript SDK tests need Node.js",
    )
    assert node is not None
    return node


def _run(*args: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_the_typescript_example_logs_in_sets_gets_and_watches(home: Path, tmp_path: Path) -> None:
    node = _require_node()
    built = _run(SCRIPT, "build")
    assert built.returncode == 0, built.stderr
    s = Stack(home, "--without", "echo")
    s.start()
    try:
        s.wait_ready()
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(home),
            "PLANTD_GATEWAY": f"127.0.0.1:{contract.GRPC_PORT + s.offset}",
            "PLANTD_USERNAME": "admin",
            "PLANTD_PASSWORD_FILE": str(s.state_dir / "admin-credentials"),
            "PLANTD_SCOPE": SCOPE,
        }
        run = subprocess.run(
            [node, EXAMPLE], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert run.returncode == 0, (run.stdout, run.stderr)
        lines = run.stdout.splitlines()
        assert lines[0] == "logged in as admin", lines
        set_ = re.fullmatch(
            r"set ts-quickstart = hello from TypeScript \(version (\d+)\)", lines[1]
        )
        got = re.fullmatch(r"got ts-quickstart = hello from TypeScript \(version (\d+)\)", lines[2])
        watched = re.fullmatch(
            r"watched ts-quickstart = changed by TypeScript \(revision (\d+)\)", lines[3]
        )
        assert set_ and got and watched, lines
        # The get saw the write it followed, and the watch the change after it.
        assert int(set_[1]) == int(got[1]) > 0
        assert int(watched[1]) > int(set_[1])
        # The same key through the bus: the gateway wrote to the stack's own state service.
        login = s.login_admin()
        assert login.returncode == 0, login.stderr
        via_bus = s.plant("state", "get", "--service", SCOPE, "ts-quickstart")
        assert via_bus.returncode == 0, via_bus.stderr
        assert via_bus.stdout.strip() == "changed by TypeScript"

        # A wrong password is a clear error with the gRPC code and the plantd reason.
        bad = tmp_path / "wrong"
        bad.write_text("not-the-password\n")
        bad.chmod(0o600)
        denied = subprocess.run(
            [node, EXAMPLE],
            env={**env, "PLANTD_PASSWORD_FILE": str(bad)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert denied.returncode == 1, (denied.stdout, denied.stderr)
        assert denied.stderr.startswith("error: Unauthenticated"), denied.stderr
        # The reason decoded from google.rpc.ErrorInfo in grpc-status-details-bin.
        assert denied.stderr.rstrip().endswith("(LOGIN_FAILED)"), denied.stderr
    finally:
        s.kill_all()


def test_the_generated_typescript_code_is_up_to_date() -> None:
    _require_node()
    check = _run(SCRIPT, "check")
    assert check.returncode == 0, check.stderr
    assert "generated code is up to date" in check.stderr
    assert "tsc --strict: clean" in check.stderr
