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


def decode(topic: bytes, payload: bytes) -> Change:
    """Parse one bus message; ``ValueError`` if it is not a state change event."""
    try:
        doc = json.loads(payload)
        return Change(
            scope=topic.decode(),
            op=change_op(doc["op"]),
            key=str(doc["key"]),
            value=str(doc["value"]),
            version=int(doc["version"]),
            revision=int(doc["revision"]),
            ts=int(doc["ts"]),
        )
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a state change event: {exc}") from None


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
