"""`plant` settings: malformed endpoints (exit 2), the dialect setting, and a config file that
group or others can write (warned about; refused when it is what turns CURVE off)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from plantd.cli.errors import CliError, ExitCode
from plantd.cli.settings import GlobalFlags, resolve

pytestmark = pytest.mark.unit


def _file(tmp_path: Path, mode: int, **profile: object) -> dict[str, str]:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"profiles": {"default": profile}}))
    path.chmod(mode)
    return {"PLANTD_CONFIG": str(path)}


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1:notaport", "tcp://[::1", "tcp://h:99999"])
def test_malformed_endpoint_is_refused_by_source(tmp_path: Path, endpoint: str) -> None:
    """On the command line: usage (exit 2); from env or the config file: configuration (4)."""
    env = {"PLANTD_CONFIG": str(tmp_path / "none.yaml")}
    sources = [
        (GlobalFlags(endpoint=endpoint), env, ExitCode.USAGE),
        (GlobalFlags(), {**env, "PLANTD_CLIENT_ENDPOINT": endpoint}, ExitCode.CONFIG),
        (GlobalFlags(), _file(tmp_path, 0o600, endpoint=endpoint), ExitCode.CONFIG),
    ]
    for flags, environ, code in sources:
        with pytest.raises(CliError) as info:
            resolve(flags, environ)
        assert info.value.code == code
        assert endpoint in info.value.message


def test_dialect_precedence_and_validation(tmp_path: Path) -> None:
    env = _file(tmp_path, 0o600, dialect="mdp01")
    assert resolve(GlobalFlags(), {"PLANTD_CONFIG": str(tmp_path / "x.yaml")}).dialect == "mdp02"
    assert resolve(GlobalFlags(), env).dialect == "mdp01"
    assert resolve(GlobalFlags(), {**env, "PLANTD_CLIENT_DIALECT": "LEGACY"}).dialect == "legacy"
    s = resolve(GlobalFlags(dialect="mdp02"), {**env, "PLANTD_CLIENT_DIALECT": "legacy"})
    assert (s.dialect, s.sources["dialect"]) == ("mdp02", "flag")
    with pytest.raises(CliError) as info:
        resolve(GlobalFlags(), {**env, "PLANTD_CLIENT_DIALECT": "mdp03"})
    assert info.value.code == ExitCode.CONFIG and "PLANTD_CLIENT_DIALECT" in info.value.message


@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666])
def test_a_writable_config_file_gets_a_warning(
    tmp_path: Path, mode: int, capsys: pytest.CaptureFixture[str]
) -> None:
    env = _file(tmp_path, mode, endpoint="tcp://10.0.0.1:9797")
    assert resolve(GlobalFlags(), env).endpoint == "tcp://10.0.0.1:9797"
    err = capsys.readouterr().err
    assert "warning" in err and env["PLANTD_CONFIG"] in err and "chmod 600" in err


def test_a_private_config_file_gets_no_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    resolve(GlobalFlags(), _file(tmp_path, 0o600, curve=False))
    assert capsys.readouterr().err == ""


def test_a_world_writable_file_that_turns_curve_off_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = _file(tmp_path, 0o646, curve=False)
    with pytest.raises(CliError) as info:
        resolve(GlobalFlags(), env)
    assert info.value.code == ExitCode.CONFIG
    assert "CURVE off" in info.value.message and env["PLANTD_CONFIG"] in info.value.message
    # The user deciding it themselves lifts the refusal; the warning stays.
    assert resolve(GlobalFlags(curve=False), env).curve is False
    assert resolve(GlobalFlags(), {**env, "PLANTD_CLIENT_CURVE": "false"}).curve is False
    assert "warning" in capsys.readouterr().err
    # Group-writable only (a shared team file) is warned about, not refused.
    assert resolve(GlobalFlags(), _file(tmp_path, 0o660, curve=False)).curve is False
