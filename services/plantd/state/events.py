"""Change events on the state bus: ``[<scope>, json{op, key, value, version, revision, ts}]``.

Published after the store committed (never for a write that failed). Pub/sub is at-most-once;
watchers detect loss by revision gaps and fill them from ``changes-since`` (:mod:`.watch`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Protocol

from plantd.state.model import Change, change_op

log = logging.getLogger("plantd.state.events")


class Sink(Protocol):
    """Where events go (a :class:`plantd.bus.Publisher` in the service)."""

    def publish(self, topic: str | bytes, payload: bytes) -> None: ...

    def has_subscriber(self, topic: str | bytes) -> bool: ...


def encode(change: Change) -> tuple[bytes, bytes]:
    return change.scope.encode(), json.dumps(change.to_json(), separators=(",", ":")).encode()


# Revisions, versions and timestamps are non-negative and exact in JSON (at most 2**53).
_MAX_INT = 2**53
_FIELDS = ("op", "key", "value", "version", "revision", "ts")


class NotAnEvent(ValueError):
    """A bus message that is not a well-formed state change event (skip it, count it)."""


def _reject_constant(name: str) -> float:
    raise NotAnEvent(f"{name} is not a number a change event holds")


def decode(topic: bytes, payload: bytes) -> Change:
    """Parse one bus message; :class:`NotAnEvent` (a ``ValueError``) for anything else.

    Anyone allowed on the bus can publish, so this trusts nothing: NaN/Infinity, floats,
    booleans, huge or negative numbers, wrong types and truncated JSON are all refused here,
    never let through to crash a watcher (``int(float('inf'))`` once raised OverflowError).
    """
    try:
        scope = topic.decode("utf-8")
        doc = json.loads(payload, parse_constant=_reject_constant)
    except NotAnEvent:
        raise
    except (ValueError, RecursionError) as exc:  # bad UTF-8 / JSON, or digits past the limit
        raise NotAnEvent(f"not a state change event: {str(exc)[:120]}") from None
    return from_json(scope, doc)


def from_json(scope: str, doc: object) -> Change:
    """A change from its JSON object (bus event or ``changes-since`` item), strictly typed."""
    if not isinstance(doc, dict):
        raise NotAnEvent("not a state change event: not a JSON object")
    missing = [f for f in _FIELDS if f not in doc]
    if missing:
        raise NotAnEvent(f"not a state change event: missing {', '.join(missing)}")
    op, key, value = doc["op"], doc["key"], doc["value"]
    if not (isinstance(op, str) and isinstance(key, str) and isinstance(value, str)):
        raise NotAnEvent("not a state change event: op, key and value must be strings")
    try:
        kind = change_op(op)
    except KeyError:
        raise NotAnEvent(f"not a state change event: unknown op {op[:40]!r}") from None
    return Change(
        scope=scope,
        op=kind,
        key=key,
        value=value,
        version=_count(doc, "version"),
        revision=_count(doc, "revision"),
        ts=_count(doc, "ts"),
    )


def _count(doc: dict[str, object], field: str) -> int:
    raw = doc[field]
    # bool is an int in Python; JSON true is not a number.
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= _MAX_INT:
        raise NotAnEvent(f"not a state change event: {field} must be an integer in 0..2**53")
    return raw


def publish(sink: Sink, changes: Iterable[Change]) -> int:
    """Publish ``changes``; skip encoding for scopes nobody watches. Returns messages sent."""
    watched: dict[str, bool] = {}
    sent = 0
    for change in changes:
        on = watched.get(change.scope)
        if on is None:
            on = watched[change.scope] = sink.has_subscriber(change.scope)
        if on:
            topic, payload = encode(change)
            sink.publish(topic, payload)
            sent += 1
    return sent
