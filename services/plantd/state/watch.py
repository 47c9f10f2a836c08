"""Watching a scope correctly over an at-most-once bus.

Pub/sub loses messages (slow joiners, high-water marks), so a watcher never trusts the bus
alone. It

1. subscribes to the scope's topic first,
2. then reads where to start: a snapshot (``snapshot``), the history since a revision
   (``changes-since``), or just the current revision,
3. then takes live events, emitting one only when its revision is exactly the next one. A
   revision gap (a lost or reordered event) is filled from ``changes-since``; so is silence
   (every ``resync_interval``), so a lost *last* event is not missed for long either.

So the events it yields have strictly increasing, gap-free revisions; when the history no
longer reaches back far enough (compacted), it says so with a ``compacted`` event and re-sends
the scope as ``snapshot`` events before continuing. Order per key follows.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from plantd.bus import BusMessage
from plantd.state import events
from plantd.state.client import StateReplyError
from plantd.state.model import Change

Kind = Literal["change", "snapshot", "compacted"]


@dataclass(frozen=True, slots=True)
class WatchEvent:
    kind: Kind
    scope: str
    op: str
    key: str
    value: str
    version: int
    revision: int
    ts: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "scope": self.scope,
            "op": self.op,
            "key": self.key,
            "value": self.value,
            "version": self.version,
            "revision": self.revision,
            "ts": self.ts,
        }


def _change_event(c: Change) -> WatchEvent:
    return WatchEvent("change", c.scope, c.op, c.key, c.value, c.version, c.revision, c.ts)


class _Client(Protocol):
    def snapshot(self, scope: str, *, limit: int | None = None) -> dict[str, Any]: ...

    def changes_since(
        self, scope: str, revision: int, *, limit: int | None = None
    ) -> dict[str, Any]: ...


class _Subscriber(Protocol):
    def recv(self, timeout: float | None = None) -> BusMessage | None: ...


class Watcher:
    """Yields a scope's changes in revision order, resuming from ``from_revision`` if given."""

    def __init__(
        self,
        client: _Client,
        subscriber: _Subscriber,
        scope: str,
        *,
        from_revision: int | None = None,
        snapshot: bool = False,
        resync_interval: float = 1.0,
    ) -> None:
        self.client = client
        self.subscriber = subscriber
        self.scope = scope
        self._topic = scope.encode()
        self.from_revision = from_revision
        self.want_snapshot = snapshot
        self.resync_interval = resync_interval
        self.revision = 0  # last revision emitted (or started from)
        self.gaps_filled = 0  # times the bus lost or reordered something we then fetched
        self.skipped = 0  # bus messages (or history items) that were not valid change events
        self._started = False

    def start(self) -> list[WatchEvent]:
        """Fix the starting point now (``events()`` does it if not done); returns its events.

        Call after subscribing, before the changes you must not miss.
        """
        self._started = True
        return list(self._start())

    def events(self, idle_timeout: float | None = None) -> Iterator[WatchEvent]:
        """Events forever, or until nothing new arrived for ``idle_timeout`` seconds."""
        if not self._started:
            yield from self.start()
        last_news = time.monotonic()
        next_resync = last_news + self.resync_interval
        while True:
            now = time.monotonic()
            if idle_timeout is not None and now - last_news >= idle_timeout:
                return
            wait = next_resync - now
            if idle_timeout is not None:
                wait = min(wait, last_news + idle_timeout - now)
            msg = self.subscriber.recv(max(0.0, wait))
            emitted = 0
            if msg is None:
                if time.monotonic() >= next_resync:
                    for ev in self._catch_up():
                        emitted += 1
                        yield ev
                    next_resync = time.monotonic() + self.resync_interval
            else:
                for ev in self._offer(msg):
                    emitted += 1
                    yield ev
            if emitted:
                last_news = time.monotonic()

    # ---- internals ----------------------------------------------------------------------------

    def _start(self) -> Iterator[WatchEvent]:
        if self.from_revision is not None:
            self.revision = self.from_revision
            yield from self._catch_up()
        elif self.want_snapshot:
            yield from self._resnapshot()
        else:
            self.revision = int(self.client.changes_since(self.scope, 0, limit=1)["revision"])

    def _offer(self, msg: BusMessage) -> Iterator[WatchEvent]:
        if msg.topic != self._topic:
            return  # a longer topic that shares our prefix
        try:
            change = events.decode(msg.topic, msg.payload)
        except events.NotAnEvent:
            self.skipped += 1  # anyone on the bus can publish: never trust, never crash
            return
        if change.revision <= self.revision:
            return  # already emitted (from history, or a duplicate)
        if change.revision == self.revision + 1:
            self.revision = change.revision
            yield _change_event(change)
            return
        self.gaps_filled += 1
        yield from self._catch_up()

    def _catch_up(self) -> Iterator[WatchEvent]:
        while True:
            log = self.client.changes_since(self.scope, self.revision)
            if log.get("compacted"):
                yield WatchEvent(
                    "compacted", self.scope, "", "", "", 0, int(log.get("revision", 0))
                )
                yield from self._resnapshot()
                return
            before = self.revision
            raw_changes = log.get("changes")
            for raw in raw_changes if isinstance(raw_changes, list) else []:
                try:
                    change = events.from_json(self.scope, raw)
                except events.NotAnEvent:
                    self.skipped += 1
                    continue
                if change.revision <= self.revision:
                    continue
                self.revision = change.revision
                yield _change_event(change)
            if log.get("more") is not True or self.revision == before:
                return  # done, or a page that made no progress (never loop on it)

    def _resnapshot(self) -> Iterator[WatchEvent]:
        try:
            snap = self.client.snapshot(self.scope)
        except StateReplyError as exc:
            if exc.code != "SCOPE_NOT_FOUND":
                raise
            self.revision = int(self.client.changes_since(self.scope, 0, limit=1)["revision"])
            return
        self.revision = int(snap["revision"])
        for item in snap.get("items", []):
            yield WatchEvent(
                "snapshot",
                self.scope,
                "set",
                str(item["key"]),
                str(item["value"]),
                int(item["version"]),
                self.revision,
            )
