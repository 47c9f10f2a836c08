"""The wire shape of org.plantd.Identity (pure): request frames in, reply frame out.

Request: ``[category, operation, json]`` (the original's framing, reference §2.3.1); a message
with fewer than two frames, or an unknown category, is a health check, as in the original.

Reply: one JSON frame that is at once plantd's envelope and the original's::

    {"success": true, "data": {...}, <the data's fields again>, "header": {request_id, success,
     timestamp}}
    {"success": false, "error": MESSAGE, "code": CODE, "header": {request_id, success: false,
     error, timestamp}}

The original Go ``plant`` reads the fields at the top level and ``header.success``; plantd
clients read ``success``/``data``. Replies hold tokens and small records, so the duplication
costs a few hundred bytes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from plantd.identity.errors import Code, IdentityError

CATEGORIES: Final = frozenset(
    {"auth", "user", "organization", "role", "service_account", "modules", "health"}
)
MAX_BODY_BYTES: Final = 64 * 1024  # a request is credentials and small records
MAX_FRAMES: Final = 3
MAX_NAME_BYTES: Final = 64
MAX_REQUEST_ID_CHARS: Final = 128


@dataclass(frozen=True, slots=True)
class Request:
    category: str
    operation: str
    data: dict[str, Any]
    request_id: str


def decode(frames: Sequence[bytes]) -> Request:
    """Parse one request; :class:`IdentityError` (``INVALID_MESSAGE``/``INVALID_REQUEST``)."""
    if len(frames) < 2:
        return Request("health", "check", {}, "")
    if len(frames) > MAX_FRAMES:
        raise IdentityError(
            Code.INVALID_MESSAGE,
            f"a request is [category, operation, json]: got {len(frames)} frames",
        )
    cat_b, op_b = frames[0], frames[1]
    if len(cat_b) > MAX_NAME_BYTES or len(op_b) > MAX_NAME_BYTES:
        raise IdentityError(Code.INVALID_MESSAGE, "category and operation are short names")
    try:
        category, operation = cat_b.decode("ascii"), op_b.decode("ascii")
    except UnicodeDecodeError:
        raise IdentityError(Code.INVALID_MESSAGE, "category and operation must be ASCII") from None
    if category not in CATEGORIES:
        return Request("health", "check", {}, "")
    body = frames[2] if len(frames) == 3 else b"{}"
    if len(body) > MAX_BODY_BYTES:
        raise IdentityError(
            Code.INVALID_REQUEST, f"request body of {len(body)} bytes is over {MAX_BODY_BYTES}"
        )
    try:
        data = json.loads(body) if body.strip() else {}
    except (ValueError, RecursionError) as exc:  # also integers over Python's 4300 digits
        raise IdentityError(Code.INVALID_REQUEST, f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise IdentityError(Code.INVALID_REQUEST, "the body must be a JSON object")
    header = data.get("header")
    rid = header.get("request_id") if isinstance(header, dict) else None
    request_id = rid[:MAX_REQUEST_ID_CHARS] if isinstance(rid, str) else ""
    return Request(category, operation, data, request_id)


def _header(request_id: str, now: float, error: str | None = None) -> dict[str, Any]:
    h: dict[str, Any] = {
        "request_id": request_id or "unknown",
        "success": error is None,
        "timestamp": int(now),
    }
    if error is not None:
        h["error"] = error
    return h


def success(request_id: str, data: dict[str, Any], now: float) -> bytes:
    body = {**data, "success": True, "data": data, "header": _header(request_id, now)}
    return json.dumps(body, separators=(",", ":")).encode()


def failure(request_id: str, err: IdentityError, now: float) -> bytes:
    body: dict[str, Any] = {
        "success": False,
        "error": err.message,
        "code": err.code.value,
        "header": _header(request_id, now, err.message),
    }
    if err.detail:
        body["detail"] = err.detail
    return json.dumps(body, separators=(",", ":"), default=str).encode()


# ---- field readers (a missing or wrong-typed field is INVALID_REQUEST naming it) ---------------


def text(data: dict[str, Any], name: str, *, max_chars: int = 320, required: bool = True) -> str:
    v = data.get(name)
    if v is None or v == "":
        if required:
            raise IdentityError(Code.INVALID_REQUEST, f"field {name!r} is required")
        return ""
    if not isinstance(v, str):
        raise IdentityError(Code.INVALID_REQUEST, f"field {name!r} must be a string")
    if len(v) > max_chars:
        raise IdentityError(Code.INVALID_REQUEST, f"field {name!r} is over {max_chars} characters")
    return v


def flag(data: dict[str, Any], name: str, default: bool = False) -> bool:
    v = data.get(name, default)
    if not isinstance(v, bool):
        raise IdentityError(Code.INVALID_REQUEST, f"field {name!r} must be true or false")
    return v


def integer(data: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    v = data.get(name, default)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise IdentityError(Code.INVALID_REQUEST, f"field {name!r} must be an integer {lo}-{hi}")
    return v


def strings(data: dict[str, Any], name: str, *, max_items: int = 256) -> list[str] | None:
    v = data.get(name)
    if v is None:
        return None
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or len(v) > max_items or not all(isinstance(x, str) for x in v):
        raise IdentityError(
            Code.INVALID_REQUEST, f"field {name!r} must be a list of at most {max_items} strings"
        )
    return list(v)


def ident(data: dict[str, Any], name: str, *, required: bool = True) -> int:
    """A record id: a positive integer (the original's ``uint``), or its decimal string."""
    v = data.get(name)
    if v is None or v == "" or v == 0:
        if required:
            raise IdentityError(Code.INVALID_REQUEST, f"field {name!r} is required")
        return 0
    if isinstance(v, str) and v.isascii() and v.isdigit() and len(v) <= 19:
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 < v < 2**63:
        raise IdentityError(Code.INVALID_REQUEST, f"field {name!r} must be a positive integer id")
    return v
