"""Key directories group/other can write are refused; key files are written without following
symlinks (issue 7, item 7). Real files in a temp directory."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from plantd.common import contract, files
from plantd.common.curve import generate_keypair, load_keypair, write_keypair, write_public_key
from plantd.common.files import InsecureDirectoryError, check_private_dir, write_atomic
from plantd.common.keys import InsecureKeysDirError, KeysError, load_client, load_server

pytestmark = pytest.mark.unit


def _dir(tmp_path: Path, mode: int, name: str = "keys") -> Path:
    d = tmp_path / name
    d.mkdir()
    d.chmod(mode)
    return d


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o770, 0o702, 0o720])
def test_group_or_other_writable_directories_are_refused(tmp_path: Path, mode: int) -> None:
    d = _dir(tmp_path, mode)
    with pytest.raises(InsecureDirectoryError) as info:
        check_private_dir(d, "CURVE key directory")
    message = str(info.value)
    assert str(d) in message and f"chmod go-w {d}" in message
    assert f"{stat.S_IMODE(d.stat().st_mode):o}" in message


@pytest.mark.parametrize("mode", [0o700, 0o755, 0o750, 0o500])
def test_private_or_read_only_directories_pass(tmp_path: Path, mode: int) -> None:
    check_private_dir(_dir(tmp_path, mode), "CURVE key directory")


def test_missing_directory_passes_and_a_file_does_not(tmp_path: Path) -> None:
    check_private_dir(tmp_path / "absent", "x")
    (tmp_path / "f").write_text("x")
    with pytest.raises(InsecureDirectoryError, match="not a directory"):
        check_private_dir(tmp_path / "f", "x")


def test_a_read_only_mount_is_trusted_whatever_its_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Kubernetes Secret volume is 1777/3777 but mounted read-only: nobody can add a key."""
    d = _dir(tmp_path, 0o1777)
    monkeypatch.setattr(files, "_read_only_mount", lambda path: True)
    check_private_dir(d, "CURVE key directory")


def test_write_atomic_replaces_a_planted_symlink_and_never_writes_through_it(
    tmp_path: Path,
) -> None:
    d = _dir(tmp_path, 0o700)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (d / "broker.key_secret").symlink_to(victim)
    write_atomic(d, "broker.key_secret", b"new secret", 0o600)
    assert victim.read_text() == "precious"
    target = d / "broker.key_secret"
    assert not target.is_symlink() and target.read_bytes() == b"new secret"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(os.listdir(d)) == ["broker.key_secret"]  # no temporary file left


def test_write_atomic_refuses_path_names(tmp_path: Path) -> None:
    for bad in ("", "a/b", "..", "."):
        with pytest.raises(ValueError, match="plain file name"):
            write_atomic(tmp_path, bad, b"x", 0o600)


def test_key_writers_follow_no_symlink(tmp_path: Path) -> None:
    d = _dir(tmp_path, 0o700)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (d / "echo.key").symlink_to(victim)
    (d / "echo.key_secret").symlink_to(victim)
    pair = generate_keypair()
    pub, sec = write_keypair(d, "echo", pair)
    assert victim.read_text() == "precious"
    assert not pub.is_symlink() and not sec.is_symlink()
    assert load_keypair(sec) == pair
    (d / "other.key").symlink_to(victim)
    write_public_key(d, "other", pair.public)
    assert victim.read_text() == "precious"


def test_key_writers_refuse_a_world_writable_directory(tmp_path: Path) -> None:
    d = _dir(tmp_path, 0o777)
    with pytest.raises(InsecureDirectoryError):
        write_keypair(d, "echo", generate_keypair())
    with pytest.raises(InsecureDirectoryError):
        write_public_key(d, "intruder", generate_keypair().public)
    assert list(d.iterdir()) == []


def test_loading_keys_from_a_writable_directory_is_refused(tmp_path: Path) -> None:
    d = _dir(tmp_path, 0o700)
    for name in (contract.BROKER, contract.ECHO):
        write_keypair(d, name, generate_keypair())
    load_server(d)
    load_client(d, contract.ECHO)
    d.chmod(0o777)
    for load in (lambda: load_server(d), lambda: load_client(d, contract.ECHO)):
        with pytest.raises(InsecureKeysDirError) as info:
            load()
        assert isinstance(info.value, KeysError) and str(d) in str(info.value)
