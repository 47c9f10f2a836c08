"""Structured logging: fields, extras, redaction, formats."""

from __future__ import annotations

import io
import json
import logging

import pytest

from plantd.common.logging import (
    REDACTED,
    JsonFormatter,
    TextFormatter,
    is_secret_name,
    setup_logging,
)

pytestmark = pytest.mark.unit


def _record(msg: str = "hello %s", *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("plantd.test", logging.WARNING, __file__, 1, msg, args or ("x",), None)
    for k, v in extra.items():
        setattr(rec, k, v)
    return rec


def test_json_line_has_fixed_fields_and_extras() -> None:
    doc = json.loads(JsonFormatter().format(_record(endpoint="tcp://*:1", n=3)))
    assert doc["level"] == "warning"
    assert doc["logger"] == "plantd.test"
    assert doc["msg"] == "hello x"
    assert doc["ts"].endswith("Z") and "T" in doc["ts"]
    assert doc["endpoint"] == "tcp://*:1"
    assert doc["n"] == 3


def test_extras_cannot_overwrite_fixed_fields() -> None:
    rec = _record()
    rec.__dict__["level"] = "spoofed"
    assert json.loads(JsonFormatter().format(rec))["level"] == "warning"


def test_secrets_are_redacted_in_both_formats() -> None:
    rec = _record(
        password="hunter2",
        curve_secret_key="abc",
        token="t0k",
        authorization="Bearer x",
        public_key="pub-is-fine",
    )
    doc = json.loads(JsonFormatter().format(rec))
    for key in ("password", "curve_secret_key", "token", "authorization"):
        assert doc[key] == REDACTED
    assert doc["public_key"] == "pub-is-fine"
    text = TextFormatter().format(rec)
    assert "hunter2" not in text and "t0k" not in text and "Bearer" not in text
    assert "public_key='pub-is-fine'" in text


def test_secret_names() -> None:
    assert is_secret_name("redis_password")
    assert is_secret_name("SECRET")
    assert is_secret_name("api_key")
    assert not is_secret_name("server_public_key")
    assert not is_secret_name("endpoint")


def test_exceptions_are_included() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        rec = _record()
        rec.exc_info = sys.exc_info()
    doc = json.loads(JsonFormatter().format(rec))
    assert "RuntimeError: boom" in doc["exc"]


def test_non_json_values_are_stringified() -> None:
    doc = json.loads(JsonFormatter().format(_record(obj=object(), raw=b"\x00")))
    assert doc["obj"].startswith("<object")


def test_setup_logging_routes_root_and_replaces_only_itself() -> None:
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    foreign = logging.NullHandler()
    root.addHandler(foreign)
    try:
        first, second = io.StringIO(), io.StringIO()
        setup_logging("info", "json", stream=first)
        setup_logging("debug", "text", stream=second)
        logging.getLogger("plantd.x").debug("dbg", extra={"k": 1})
        assert first.getvalue() == ""
        assert "DEBUG   plantd.x: dbg k=1" in second.getvalue()
        assert foreign in root.handlers
        assert sum(h.get_name() == "plantd" for h in root.handlers) == 1
    finally:
        for h in list(root.handlers):
            if h.get_name() == "plantd" or h is foreign:
                root.removeHandler(h)
        root.setLevel(saved[0])


def test_setup_logging_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="json, text"):
        setup_logging("info", "xml")
    with pytest.raises(ValueError, match="debug, info"):
        setup_logging("loud", "json")


def test_nested_secrets_are_redacted() -> None:
    rec = _record(settings={"http_port": 1, "redis_password": "pw", "nested": [{"token": "t"}]})
    doc = json.loads(JsonFormatter().format(rec))
    assert doc["settings"] == {
        "http_port": 1,
        "redis_password": REDACTED,
        "nested": [{"token": REDACTED}],
    }


def test_numbers_flags_and_unset_values_under_secret_names_are_shown() -> None:
    # Policy numbers are not credentials (identity logged password_min_length "[redacted]").
    settings = {"password_min_length": 15, "join_token_ttl_s": 3600.0, "token_file": None,
                "setup_token_file": "/var/lib/plantd/identity/setup-token"}  # fmt: skip
    rec = _record(settings={**settings, "redis_password": "pw", "session_cookie": True})
    doc = json.loads(JsonFormatter().format(rec))
    assert doc["settings"] == {**settings, "redis_password": REDACTED, "session_cookie": True}
