"""The TypeScript SDK against a live gateway: its example program, compiled from sdk/ts with
the pinned npm packages, logs in to a real `plantd up` stack, sets and gets a state key and
watches a change; the stack's own bus then shows the key. And the checked-in generated code
is up to date and type-checks under `tsc --strict`.

Real processes throughout: `plantd up` in a fresh HOME with a port offset, Node.js running
the example built by `hack/sdk/ts.sh build` over HTTP/2 gRPC, `plant` over the bus.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from clikit import Stack, require
from sdkkit import check_quickstart

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
        denied = check_quickstart(
            s, home, tmp_path, [node, EXAMPLE], scope=SCOPE, prefix="ts", language="TypeScript"
        )
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
