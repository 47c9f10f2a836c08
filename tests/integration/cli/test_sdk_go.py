"""The Go SDK against a live gateway: its example program, built from sdk/go with the pinned
modules, logs in to a real `plantd up` stack, sets and gets a state key and watches a change;
the stack's own bus then shows the key. And the checked-in generated code is up to date.

Real processes throughout: `plantd up` in a fresh HOME with a port offset, the Go binary
built by `hack/sdk/go.sh build`, `plant` over the bus.
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
SCRIPT = ROOT / "hack" / "sdk" / "go.sh"
SCOPE = "sdk-go"


def _require_go() -> None:
    require(shutil.which("go") is not None, "go is missing: the Go SDK tests need Go (golang)")


def _run(*args: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_the_go_example_logs_in_sets_gets_and_watches(home: Path, tmp_path: Path) -> None:
    _require_go()
    binary = tmp_path / "quickstart"
    built = _run(SCRIPT, "build", binary)
    assert built.returncode == 0, built.stderr
    s = Stack(home, "--without", "echo")
    s.start()
    try:
        s.wait_ready()
        denied = check_quickstart(
            s, home, tmp_path, [binary], scope=SCOPE, prefix="go", language="Go"
        )
        assert denied.stderr.startswith("error: Unauthenticated"), denied.stderr
    finally:
        s.kill_all()


def test_the_generated_go_code_is_up_to_date() -> None:
    _require_go()
    check = _run(SCRIPT, "check")
    assert check.returncode == 0, check.stderr
    assert "generated code is up to date" in check.stderr
