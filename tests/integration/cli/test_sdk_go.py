"""The Go SDK against a live gateway: its example program, built from sdk/go with the pinned
modules, logs in to a real `plantd up` stack, sets and gets a state key and watches a change;
the stack's own bus then shows the key. And the checked-in generated code is up to date.

Real processes throughout: `plantd up` in a fresh HOME with a port offset, the Go binary
built by `hack/sdk/go.sh build`, `plant` over the bus.
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
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(home),
            "PLANTD_GATEWAY": f"127.0.0.1:{contract.GRPC_PORT + s.offset}",
            "PLANTD_USERNAME": "admin",
            "PLANTD_PASSWORD_FILE": str(s.state_dir / "admin-credentials"),
            "PLANTD_SCOPE": SCOPE,
        }
        run = subprocess.run(
            [binary], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert run.returncode == 0, (run.stdout, run.stderr)
        lines = run.stdout.splitlines()
        assert lines[0] == "logged in as admin", lines
        set_ = re.fullmatch(r"set go-quickstart = hello from Go \(version (\d+)\)", lines[1])
        got = re.fullmatch(r"got go-quickstart = hello from Go \(version (\d+)\)", lines[2])
        watched = re.fullmatch(
            r"watched go-quickstart = changed by Go \(revision (\d+)\)", lines[3]
        )
        assert set_ and got and watched, lines
        # The get saw the write it followed, and the watch the change after it.
        assert int(set_[1]) == int(got[1]) > 0
        assert int(watched[1]) > int(set_[1])
        # The same key through the bus: the gateway wrote to the stack's own state service.
        login = s.login_admin()
        assert login.returncode == 0, login.stderr
        via_bus = s.plant("state", "get", "--service", SCOPE, "go-quickstart")
        assert via_bus.returncode == 0, via_bus.stderr
        assert via_bus.stdout.strip() == "changed by Go"

        # A wrong password is a clear error with the gRPC code, and a non-zero exit.
        bad = tmp_path / "wrong"
        bad.write_text("not-the-password\n")
        bad.chmod(0o600)
        denied = subprocess.run(
            [binary],
            env={**env, "PLANTD_PASSWORD_FILE": str(bad)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert denied.returncode == 1, (denied.stdout, denied.stderr)
        assert denied.stderr.startswith("error: Unauthenticated"), denied.stderr
    finally:
        s.kill_all()


def test_the_generated_go_code_is_up_to_date() -> None:
    _require_go()
    check = _run(SCRIPT, "check")
    assert check.returncode == 0, check.stderr
    assert "generated code is up to date" in check.stderr
