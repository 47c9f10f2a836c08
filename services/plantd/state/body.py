"""One request body frame -> a JSON object, or a coded :class:`StateError`; never anything else.

Hostile bodies this refuses cheaply with ``INVALID_REQUEST``: bytes that are not UTF-8, invalid
JSON, nesting past the recursion limit, and integer literals over Python's int-conversion
limit (4300 digits), whose ``ValueError`` once escaped and failed a whole worker batch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

from plantd.state.errors import Code, StateError
from plantd.state.fields import type_name
from plantd.state.limits import Limits

# The C scanner of json.JSONDecoder: (text, index) -> (value, end); StopIteration when no value
# starts at index. It is what json.loads runs after its Python layers (type checks, decode,
# whitespace regexes); calling it directly halves the cost of a small body (measured: 1.0 vs
# 2.1 us for a state-get body on Python 3.11). It is undocumented, so it is used only when it
# exists and test_state_body.py proves with hypothesis that it parses exactly as json.loads.
_scan: Final[Callable[[str, int], tuple[Any, int]] | None] = getattr(
    json.JSONDecoder(), "scan_once", None
)


def parse(raw: bytes, limits: Limits) -> dict[str, Any]:
    """The body as a JSON object."""
    if len(raw) > limits.max_request_bytes:
        raise StateError(
            Code.VALUE_TOO_LARGE,
            f"request body is {len(raw)} bytes; the limit is {limits.max_request_bytes}",
            field="body",
        )
    try:
        # Decode first: json.loads(bytes) would also guess UTF-16/32 from the byte pattern.
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise StateError(
            Code.INVALID_REQUEST, "request body is not UTF-8 text", field="body"
        ) from None
    try:
        body = _loads(text)
    except json.JSONDecodeError as exc:
        raise StateError(
            Code.INVALID_REQUEST,
            f"request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            field="body",
        ) from None
    except RecursionError:
        raise StateError(
            Code.INVALID_REQUEST, "request body is nested too deeply", field="body"
        ) from None
    except ValueError as exc:  # int('9' * 5000): over sys.get_int_max_str_digits()
        raise StateError(
            Code.INVALID_REQUEST,
            f"request body holds a number too long to read ({str(exc)[:120]}); "
            "send numbers of at most 4300 digits (large values as strings)",
            field="body",
        ) from None
    if not isinstance(body, dict):
        raise StateError(
            Code.INVALID_REQUEST,
            f"request body must be a JSON object, not {type_name(body)}",
            field="body",
        )
    return body


def _loads(text: str) -> Any:
    if _scan is not None:
        try:
            value, end = _scan(text, 0)
        except StopIteration:
            end = -1
        if end == len(text):
            return value
    # Whitespace around the value, or an error: json.loads accepts the one, explains the other.
    return json.loads(text)
