"""Validators for the fields of a request body: each returns a checked value or raises.

Pure functions over an already-parsed JSON object. Everything they raise is a
:class:`StateError` naming the field: ``INVALID_REQUEST`` for a missing or mistyped field,
``VALUE_TOO_LARGE`` for one over a :class:`Limits` size.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from plantd.state.errors import Code, StateError
from plantd.state.limits import Limits

_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
# The largest version / revision a client may name: JSON numbers are exact up to 2**53.
MAX_REVISION: Final = 2**53


def bad(field: str, what: str) -> StateError:
    return StateError(Code.INVALID_REQUEST, f"field '{field}' {what}", field=field)


def too_large(field: str, size: int, limit: int) -> StateError:
    return StateError(
        Code.VALUE_TOO_LARGE, f"field '{field}' is {size} bytes; the limit is {limit}", field=field
    )


def type_name(value: object) -> str:
    """What a JSON value is, as a client would say it."""
    return {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }.get(type(value), type(value).__name__)


def utf8_len(value: str, field: str) -> int:
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise bad(field, "is not valid Unicode (lone surrogate)") from None


def text(body: Mapping[str, Any], field: str, limit: int, *, what: str = "") -> str:
    """A required non-empty string of at most ``limit`` UTF-8 bytes."""
    value = body.get(field)
    if value.__class__ is str and value and value.isascii() and len(value) <= limit:
        return value  # the common case, checked in one line
    label = f" ({what})" if what else ""
    if value is None:
        raise bad(field, f"is required{label}: a non-empty string")
    if not isinstance(value, str):
        raise bad(field, f"must be a string{label}, not {type_name(value)}")
    if not value:
        raise bad(field, f"must not be empty{label}")
    size = utf8_len(value, field)
    if size > limit:
        raise too_large(field, size, limit)
    return value


def scope(body: Mapping[str, Any], limits: Limits) -> str:
    """The ``service`` field: the scope, without control characters."""
    name = body.get("service")
    # The common case in one line, without a cache: for ASCII text isprintable() is false
    # exactly for the control characters (0x00-0x1f, 0x7f), and ~3x cheaper than the regex.
    if (
        name.__class__ is str
        and name
        and name.isascii()
        and len(name) <= limits.max_scope_bytes
        and name.isprintable()
    ):
        return name
    name = text(body, "service", limits.max_scope_bytes, what="the scope")
    if _CONTROL.search(name):
        raise bad("service", "must not contain control characters")
    return name


def value(body: Mapping[str, Any], field: str, limits: Limits) -> str:
    """A required string value (may be empty) of at most ``max_value_bytes``."""
    raw = body.get(field)
    if raw is None:
        raise bad(field, "is required: a string (encode other JSON as a string)")
    if not isinstance(raw, str):
        raise bad(field, f"must be a string (encode other JSON as a string), not {type_name(raw)}")
    # Fast path: a str of n characters is at most 4n UTF-8 bytes.
    if len(raw) * 4 > limits.max_value_bytes:
        size = utf8_len(raw, field)
        if size > limits.max_value_bytes:
            raise too_large(field, size, limits.max_value_bytes)
    elif not raw.isascii():
        utf8_len(raw, field)
    return raw


def integer(
    body: Mapping[str, Any], field: str, *, low: int, high: int, default: int | None = None
) -> int | None:
    raw = body.get(field)
    if raw is None:
        return default
    # bool is an int in Python; JSON true is not a number.
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise bad(field, f"must be an integer, not {type_name(raw)}")
    if not low <= raw <= high:
        shown = raw if -(10**30) < raw < 10**30 else f"a {len(str(abs(raw)))}-digit number"
        raise bad(field, f"must be between {low} and {high}, not {shown}")
    return raw


def required_int(body: Mapping[str, Any], field: str, *, low: int, high: int, what: str) -> int:
    got = integer(body, field, low=low, high=high)
    if got is None:
        raise bad(field, f"is required: {what}")
    return got


def page(body: Mapping[str, Any], field: str, high: int) -> int:
    """An optional page size in 1..high (default ``high``)."""
    got = integer(body, field, low=1, high=high)
    return high if got is None else got


def boolean(body: Mapping[str, Any], field: str, default: bool) -> bool:
    raw = body.get(field)
    if raw is None:
        return default
    if not isinstance(raw, bool):
        raise bad(field, f"must be true or false, not {type_name(raw)}")
    return raw


def optional_text(body: Mapping[str, Any], field: str, limit: int) -> str:
    raw = body.get(field)
    if raw is None or raw == "":
        return ""
    return text(body, field, limit)


def batch_size(field: str, count: int, limits: Limits) -> None:
    if count > limits.max_batch_keys:
        raise StateError(
            Code.VALUE_TOO_LARGE,
            f"field '{field}' holds {count} keys; the limit is {limits.max_batch_keys} "
            "per request (split the batch)",
            field=field,
        )


def key_list(body: Mapping[str, Any], limits: Limits) -> tuple[str, ...]:
    """The ``keys`` array, each key checked, repeats dropped (first occurrence kept).

    De-duplicated so that naming one big value many times costs what naming it once does.
    """
    keys = body.get("keys")
    if not isinstance(keys, list) or not keys:
        raise bad("keys", "is required: a non-empty array of key strings")
    batch_size("keys", len(keys), limits)
    limit = limits.max_key_bytes
    for i, k in enumerate(keys):
        if not (k.__class__ is str and k and k.isascii() and len(k) <= limit):
            text({f"keys[{i}]": k}, f"keys[{i}]", limit)  # the slow path says what is wrong
    unique = tuple(keys)
    # A set is half the cost of dict.fromkeys; the order-keeping de-duplication only on repeats.
    return unique if len(set(unique)) == len(unique) else tuple(dict.fromkeys(unique))


def ttl(body: Mapping[str, Any], limits: Limits) -> int | None:
    return integer(body, "ttl_ms", low=1, high=limits.max_ttl_ms)


def if_version(body: Mapping[str, Any]) -> int | None:
    return integer(body, "if_version", low=0, high=MAX_REVISION)


def unique_keys(field: str, keys: Sequence[str]) -> None:
    """Refuse a key written twice in one batch: two compare-and-sets of one key cannot both win."""
    if len(set(keys)) == len(keys):
        return
    seen: set[str] = set()
    for i, k in enumerate(keys):
        if k in seen:
            raise StateError(
                Code.INVALID_REQUEST,
                f"{field}[{i}]: key {k[:80]!r} appears more than once in this batch; "
                "send each key once",
                field=f"{field}[{i}].key",
            )
        seen.add(k)
