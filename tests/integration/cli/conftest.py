"""Fixtures for the CLI integration tests (real `plant`, `plantd` and `plantd up` processes)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from clikit import Stack, clean_env, require


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fresh HOME: config, keys and state all land under it."""
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture
def env(home: Path) -> dict[str, str]:
    return clean_env(home)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One `plantd up` (CURVE on, keys generated into its HOME) shared by a module's tests."""
    require(Path("/proc").is_dir(), "needs Linux /proc to find the stack's children")
    s = Stack(tmp_path_factory.mktemp("stackhome"))
    s.start()
    try:
        s.wait_ready()
        s.children()  # remember the pids, so teardown can reap them whatever happens
        yield s
    finally:
        try:
            s.stop()
        finally:
            s.kill_all()
