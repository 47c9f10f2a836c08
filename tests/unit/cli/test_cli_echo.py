"""`plant echo --envelope`: the original CLI's body, and its message printed back."""

from __future__ import annotations

import json

import pytest

from plantd.cli.bus_cmd import _envelope, unwrap

pytestmark = pytest.mark.unit


def test_envelope_round_trip() -> None:
    body = _envelope("hi there")
    assert json.loads(body) == {"service": "org.plantd.Client", "message": "hi there"}
    assert unwrap(body.encode()) == "hi there"


def test_unwrap_leaves_anything_else_as_text() -> None:
    assert unwrap(b"plain") == "plain"
    assert unwrap(b'{"other": 1}') == '{"other": 1}'
    assert unwrap(b'{"message": 5}') == '{"message": 5}'
    assert unwrap(b"\x00\xff") == "0x00ff"
