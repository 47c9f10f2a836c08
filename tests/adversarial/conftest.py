"""Fixtures of the adversarial tier: a fresh CURVE stack per test (RSS baselines stay honest)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.adversarial.advkit import MakeStack, Stack


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[MakeStack]:
    """``make_stack(**Stack options)`` starts broker, echo (and state) and stops them after."""
    started: list[Stack] = []

    def make(**kw: Any) -> Stack:
        stack = Stack(tmp_path / f"stack{len(started)}", **kw)
        started.append(stack)
        return stack.start()

    yield make
    for stack in reversed(started):
        stack.stop()


@pytest.fixture
def stack(make_stack: MakeStack) -> Stack:
    """The default stack: broker, echo and state on SQLite."""
    return make_stack()
