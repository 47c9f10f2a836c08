"""The skip rule: a missing prerequisite skips a test locally and fails it under CI."""

from __future__ import annotations

import os

import pytest


def in_ci() -> bool:
    """True under CI (``CI`` set to anything but ``""``/``0``/``false``/``no``)."""
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def require(condition: bool, reason: str) -> None:
    """Skip the test when ``condition`` is false locally; fail it under CI.

    ``reason`` should say what is missing and how to get it (e.g. the apt-get line): under CI it
    is the failure message.
    """
    if condition:
        return
    if in_ci():
        pytest.fail(f"prerequisite missing under CI: {reason}")
    pytest.skip(reason)
