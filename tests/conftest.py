"""Fixtures shared by every test tier. The helpers live in the shared kit, tests/kit."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# Re-exported by name: the tier kits import these from tests.conftest (and older code may too).
from tests.kit import free_port as free_port
from tests.kit import in_ci as in_ci
from tests.kit import require as require

REPO_ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


@pytest.fixture
def port() -> int:
    return free_port()
