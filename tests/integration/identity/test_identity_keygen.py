"""``python -m plantd.identity.keygen``: the way to create the signing key identity needs."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from plantd.identity.main import load_keys
from plantd.identity.settings import IdentitySettings

pytestmark = pytest.mark.integration


def test_keygen_command_writes_a_private_key_once(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "plantd.identity.keygen", str(tmp_path / "jwt")]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert first.returncode == 0, first.stderr
    path = Path(first.stdout.strip())
    assert path.name.startswith("active.") and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    s = IdentitySettings.load(environ={}, flags={"jwt_keys_dir": tmp_path / "jwt"})
    assert load_keys(s).active.alg == "ES256"
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert again.returncode == 4 and "already has an active key" in again.stderr
    nxt = subprocess.run(
        [*cmd, "--state", "next", "--alg", "EdDSA"], capture_output=True, text=True, timeout=60
    )
    assert nxt.returncode == 0 and Path(nxt.stdout.strip()).name.startswith("next.")
