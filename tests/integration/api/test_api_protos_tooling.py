"""`make protos` / `make protos-check` on a copy of the tree: the regenerate-and-diff check
fails on an edited, extra or missing generated file, and buf lint / buf breaking (the real buf
binary) fail on a bad proto and on a breaking change, and pass when there is nothing on main."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests.kit import require

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
GENERATED = Path("services/plantd/v1")


def _tree(root: Path) -> Path:
    """Copy what protos.sh reads (protos, its scripts, the generated package) under ``root``."""
    for rel in (Path("protos"), Path("hack/protos"), GENERATED):
        shutil.copytree(REPO / rel, root / rel, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _run(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PROTOS_ROOT": str(root), "PYTHON": sys.executable, **env}
    return subprocess.run(
        ["bash", str(root / "hack/protos/protos.sh"), *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _buf() -> str:
    """The buf binary of this venv (the buf-bin wheel; `make install` puts it there)."""
    buf = Path(sys.executable).parent / "buf"
    require(buf.is_file(), f"buf is not installed in {buf.parent}: run `make install` (buf-bin)")
    return str(buf)


def _git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        check=True,
        capture_output=True,
        timeout=60,
    )


def test_diff_passes_on_a_faithful_copy(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    result = _run(root, "diff")
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stderr


@pytest.mark.parametrize("damage", ["edit", "extra", "missing"])
def test_diff_fails_when_the_generated_code_was_touched(tmp_path: Path, damage: str) -> None:
    root = _tree(tmp_path)
    gen = root / GENERATED
    if damage == "edit":
        path = gen / "state_pb2.pyi"
        path.write_text(path.read_text().replace("class Entry(", "class Entri(", 1))
    elif damage == "extra":
        (gen / "stale_pb2.py").write_text("# left over from a removed .proto\n")
    else:
        (gen / "bus_pb2_grpc.py").unlink()
    result = _run(root, "diff")
    assert result.returncode != 0
    assert "run 'make protos'" in result.stderr
    # `gen` repairs it, and the result is byte-for-byte what is checked in.
    assert _run(root, "gen").returncode == 0
    assert _run(root, "diff").returncode == 0
    for path in (REPO / GENERATED).iterdir():
        if path.is_file():
            assert (gen / path.name).read_bytes() == path.read_bytes(), path.name
    assert not (gen / "stale_pb2.py").exists()


def test_diff_fails_when_a_proto_changed_without_regenerating(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    proto = root / "protos/plantd/v1/bus.proto"
    proto.write_text(
        proto.read_text().replace(
            "message PublishResponse {}",
            "message PublishResponse {\n  // Added.\n  uint64 sequence = 1;\n}",
        )
    )
    result = _run(root, "diff")
    assert result.returncode != 0
    assert "bus_pb2" in result.stderr


def test_buf_lint_passes_on_the_real_protos_and_fails_on_a_bad_one(tmp_path: Path) -> None:
    buf = _buf()
    root = _tree(tmp_path)
    ok = _run(root, "lint", BUF=buf)
    assert ok.returncode == 0, ok.stderr
    proto = root / "protos/plantd/v1/bus.proto"
    text = proto.read_text()
    # Two RPCs sharing a request type (RPC_REQUEST_RESPONSE_UNIQUE, RPC_REQUEST_STANDARD_NAME).
    proto.write_text(
        text.replace("rpc GetService(GetServiceRequest)", "rpc GetService(CallRequest)")
    )
    bad = _run(root, "lint", BUF=buf)
    assert bad.returncode != 0
    assert "CallRequest" in bad.stdout + bad.stderr
    # A field without a comment (COMMENTS).
    proto.write_text(text.replace("  // The FINAL reply's body frames.\n", ""))
    undocumented = _run(root, "lint", BUF=buf)
    assert undocumented.returncode != 0
    assert "comment" in undocumented.stdout + undocumented.stderr


def test_buf_breaking_passes_without_protos_on_main(tmp_path: Path) -> None:
    buf = _buf()
    root = _tree(tmp_path)
    _git(root, "init", "-q", "-b", "main")
    (root / "README").write_text("before the protos\n")
    _git(root, "add", "README")
    _git(root, "commit", "-q", "-m", "no protos yet")
    result = _run(root, "breaking", BUF=buf)
    assert result.returncode == 0, result.stderr
    assert "nothing to compare" in result.stderr


def test_buf_breaking_fails_on_a_renamed_field_and_passes_on_an_added_one(tmp_path: Path) -> None:
    buf = _buf()
    root = _tree(tmp_path)
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "protos")
    _git(root, "commit", "-q", "-m", "protos")
    assert _run(root, "breaking", BUF=buf).returncode == 0
    proto = root / "protos/plantd/v1/state.proto"
    text = proto.read_text()
    proto.write_text(
        text.replace(
            "message DeleteScopeResponse {\n",
            "message DeleteScopeResponse {\n  // Added later: not breaking.\n  bool existed = 2;\n",
        )
    )
    added = _run(root, "breaking", BUF=buf)
    assert added.returncode == 0, added.stdout + added.stderr
    proto.write_text(text.replace("int64 oldest_revision = 4;", "int64 oldest = 4;"))
    renamed = _run(root, "breaking", BUF=buf)
    assert renamed.returncode != 0
    assert "oldest" in renamed.stdout + renamed.stderr
    assert "break compatibility with main" in renamed.stderr
