"""The echo module's handler (pure), compatible with the original module."""

from __future__ import annotations

import json

import pytest

from plantd.echo.handler import handle

pytestmark = pytest.mark.unit


def test_echo_returns_parts_verbatim() -> None:
    body = json.dumps({"service": "org.plantd.Client", "message": "hi"}).encode()
    assert handle([b"echo", body, b"\x00\xff"]) == [body, b"\x00\xff"]
    assert handle([b"echo"]) == []


def test_other_operations_get_one_error_per_part() -> None:
    reply = handle([b"ECHO", b"a", b"b"])
    assert len(reply) == 2
    assert json.loads(reply[0])["code"] == "bad_request"
    assert len(handle([b"nope"])) == 1
    assert "empty request" in json.loads(handle([])[0])["error"]


def test_both_request_forms_come_back_unchanged() -> None:
    # `plant echo MSG` sends plain frames; the original CLI (and --envelope) a JSON envelope.
    envelope = b'{"service": "org.plantd.Client", "message": "hello"}'
    assert handle([b"echo", b"hello", b"world"]) == [b"hello", b"world"]
    assert handle([b"echo", envelope]) == [envelope]
