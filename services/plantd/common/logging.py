"""Structured logging for plantd processes.

``json`` (the default) writes one JSON object per line to stderr::

    {"ts": "2026-11-27T06:40:01.123Z", "level": "info", "logger": "plantd.broker",
     "msg": "broker bound", "endpoint": "tcp://*:9797"}

Fields passed with ``extra=`` become top-level keys; exceptions go to ``exc``. ``text`` writes
``TS LEVEL logger: msg key=value ...`` for humans.

Secrets are never logged: any extra field whose name looks like a credential (``secret``,
``password``, ``token``, ``private``, ``authorization``, ``credential``, ``secret_key`` ...) is
replaced by ``"[redacted]"`` in both formats, whatever the caller passed. Messages themselves are
the caller's responsibility: log key *names* and public keys, never key material.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import IO, Any, Final, Literal

# The log settings' types live here, with the code that uses them; plantd.common.config imports
# them (not the other way round, which made config <-> logging an import cycle).
LogLevel = Literal["debug", "info", "warning", "error", "critical"]
LogFormat = Literal["json", "text"]

REDACTED: Final = "[redacted]"
_HANDLER_NAME: Final = "plantd"
_SECRET_NAME = re.compile(
    r"(secret|passw|token|private|authori[sz]ation|credential|cookie|api_?key|session)", re.I
)

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS: Final = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
    | {"message", "asctime", "taskName"}
)


def is_secret_name(name: str) -> bool:
    """True for field names that hold credentials and must not be logged."""
    return bool(_SECRET_NAME.search(name))


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra=`` fields of a record, with credential-like names redacted."""
    out: dict[str, Any] = {}
    for key, value in vars(record).items():
        if key in _STANDARD_ATTRS or key.startswith("_"):
            continue
        out[key] = REDACTED if hidden_field(key, value) else _redact(value)
    return out


_PATH_SUFFIXES: Final = ("_file", "_dir", "_path")


def hidden_field(key: object, value: Any) -> bool:
    """A credential-named field, unless its value cannot be one: numbers and flags
    (``password_min_length``, ``join_token_ttl_s``), an unset ``None``, and where a secret lives
    (``redis_password_file``, ``setup_token_file``: a path, which the operator needs to see)."""
    if not (isinstance(key, str) and is_secret_name(key)) or key.endswith(_PATH_SUFFIXES):
        return False
    return not (value is None or isinstance(value, int | float | bool))


def _redact(value: Any, depth: int = 0) -> Any:
    """Redact credential-named keys inside nested dicts/lists (e.g. a settings dump)."""
    if depth > 5:
        return value
    if isinstance(value, dict):
        return {
            k: REDACTED if hidden_field(k, v) else _redact(v, depth + 1) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact(v, depth + 1) for v in value]
    return value


def _iso_ts(created: float) -> str:
    secs = int(created)
    ms = int((created - secs) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{ms:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, extra fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _iso_ts(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            # Extras never overwrite the fixed keys, so consumers can rely on them.
            doc.setdefault(key, value)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``TS LEVEL logger: msg key=value`` for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [
            _iso_ts(record.created),
            f"{record.levelname:<7}",
            f"{record.name}:",
            record.getMessage(),
        ]
        parts += [
            f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}"
            for k, v in extra_fields(record).items()
        ]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(
    level: LogLevel | str = "info",
    fmt: LogFormat | str = "json",
    *,
    stream: IO[str] | None = None,
) -> None:
    """Route all logging to ``stream`` (stderr) in ``fmt``; replaces earlier handlers.

    Third-party loggers (aiohttp access logs, kopf, asyncio) go through the same handler, so the
    process emits one format only.
    """
    if fmt not in ("json", "text"):
        raise ValueError(f"log format {fmt!r} is not one of: json, text")
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(
            f"log level {level!r} is not one of: debug, info, warning, error, critical"
        )
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    # Replace only our own earlier handler: test harnesses attach theirs to the root too.
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    # aiohttp logs every request at info; health probes would drown the useful lines.
    logging.getLogger("aiohttp.access").setLevel(max(numeric, logging.WARNING))
    logging.captureWarnings(True)
