"""The quick start contract every SDK's example program keeps (sdk/*/quickstart*), checked
once for all of them against a live `plantd up`.

The program reads PLANTD_GATEWAY, PLANTD_USERNAME, PLANTD_PASSWORD_FILE and PLANTD_SCOPE;
logs in; sets ``<prefix>-quickstart`` to "hello from <Language>", gets it, watches it change
to "changed by <Language>"; prints one line for each. The stack's own bus must then show the
key. A wrong password must end it with exit status 1 and a one-line error.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

from clikit import Stack

from plantd.common import contract


def check_quickstart(
    s: Stack,
    home: Path,
    tmp_path: Path,
    command: Sequence[str | Path],
    *,
    scope: str,
    prefix: str,
    language: str,
) -> subprocess.CompletedProcess[str]:
    """Runs the example against ``s`` and checks its lines and the key over the bus; then runs
    it with a wrong password and returns that run (exit status 1 checked) for the SDK's own
    error format."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "PLANTD_GATEWAY": f"127.0.0.1:{contract.GRPC_PORT + s.offset}",
        "PLANTD_USERNAME": "admin",
        "PLANTD_PASSWORD_FILE": str(s.state_dir / "admin-credentials"),
        "PLANTD_SCOPE": scope,
    }
    argv = [str(part) for part in command]
    run = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, (run.stdout, run.stderr)
    lines = run.stdout.splitlines()
    assert lines[0] == "logged in as admin", lines
    key = f"{prefix}-quickstart"
    set_ = re.fullmatch(rf"set {key} = hello from {language} \(version (\d+)\)", lines[1])
    got = re.fullmatch(rf"got {key} = hello from {language} \(version (\d+)\)", lines[2])
    watched = re.fullmatch(rf"watched {key} = changed by {language} \(revision (\d+)\)", lines[3])
    assert set_ and got and watched, lines
    # The get saw the write it followed, and the watch the change after it.
    assert int(set_[1]) == int(got[1]) > 0
    assert int(watched[1]) > int(set_[1])
    # The same key through the bus: the gateway wrote to the stack's own state service.
    login = s.login_admin()
    assert login.returncode == 0, login.stderr
    via_bus = s.plant("state", "get", "--service", scope, key)
    assert via_bus.returncode == 0, via_bus.stderr
    assert via_bus.stdout.strip() == f"changed by {language}"

    bad = tmp_path / "wrong-password"
    bad.write_text("not-the-password\n")
    bad.chmod(0o600)
    denied = subprocess.run(
        argv,
        env={**env, "PLANTD_PASSWORD_FILE": str(bad)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert denied.returncode == 1, (denied.stdout, denied.stderr)
    return denied
