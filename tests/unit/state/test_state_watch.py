"""The watcher's ordering logic (pure: a scripted history and a scripted bus)."""

from __future__ import annotations

import json
from collections import deque
from typing import Any

import pytest

from plantd.bus import BusMessage
from plantd.state.client import StateReplyError
from plantd.state.watch import Watcher

pytestmark = pytest.mark.unit


class FakeHistory:
    """changes-since / snapshot over an in-memory list of changes (history may be trimmed)."""

    def __init__(self) -> None:
        self.changes: list[dict[str, Any]] = []
        self.oldest_kept = 1
        self.calls: list[tuple[str, int]] = []
        self.page = 1000
        self.scope_exists = True

    def add(self, key: str, value: str) -> dict[str, Any]:
        rev = len(self.changes) + 1
        ch = {"op": "set", "key": key, "value": value, "version": rev, "revision": rev, "ts": 1}
        self.changes.append(ch)
        return ch

    @property
    def revision(self) -> int:
        return len(self.changes)

    def changes_since(
        self, scope: str, revision: int, *, limit: int | None = None
    ) -> dict[str, Any]:
        self.calls.append(("changes-since", revision))
        if revision < self.revision and self.oldest_kept > revision + 1:
            return {"revision": self.revision, "compacted": True, "changes": [], "more": False}
        page = self.page if limit is None else min(limit, self.page)
        rest = [c for c in self.changes if c["revision"] > revision]
        return {
            "revision": self.revision,
            "compacted": False,
            "changes": rest[:page],
            "more": len(rest) > page,
        }

    def snapshot(self, scope: str, *, limit: int | None = None) -> dict[str, Any]:
        self.calls.append(("snapshot", self.revision))
        if not self.scope_exists:
            raise StateReplyError("SCOPE_NOT_FOUND", "no")
        latest: dict[str, dict[str, Any]] = {}
        for c in self.changes:
            latest[c["key"]] = c
        items = [
            {"key": k, "value": c["value"], "version": c["version"]} for k, c in latest.items()
        ]
        return {"revision": self.revision, "items": items}


class FakeBus:
    def __init__(self) -> None:
        self.queue: deque[BusMessage] = deque()

    def send(self, ch: dict[str, Any], topic: bytes = b"S") -> None:
        self.queue.append(BusMessage(topic, json.dumps(ch).encode()))

    def recv(self, timeout: float | None = None) -> BusMessage | None:
        return self.queue.popleft() if self.queue else None


def take(watcher: Watcher, n: int) -> list[tuple[str, str, int]]:
    out: list[tuple[str, str, int]] = []
    for ev in watcher.events(idle_timeout=0.05):
        out.append((ev.kind, ev.key, ev.revision))
        if len(out) == n:
            break
    return out


def test_live_events_in_order_without_history_calls() -> None:
    h, bus = FakeHistory(), FakeBus()
    w = Watcher(h, bus, "S", resync_interval=60)
    assert w.start() == []
    bus.send(h.add("a", "1"))
    bus.send(h.add("b", "2"))
    got = take(w, 2)
    assert got == [("change", "a", 1), ("change", "b", 2)]
    assert h.calls == [("changes-since", 0)]  # only the start position


def test_a_lost_event_is_fetched_from_history() -> None:
    h, bus = FakeHistory(), FakeBus()
    w = Watcher(h, bus, "S", resync_interval=60)
    w.start()
    h.add("a", "1")
    lost = h.add("b", "2")
    bus.send(h.add("c", "3"))  # revision 3 arrives; 1 and 2 never did
    bus.send(lost)  # late duplicate of 2: must not be emitted twice
    got = take(w, 3)
    assert got == [("change", "a", 1), ("change", "b", 2), ("change", "c", 3)]
    assert take(w, 1) == []


def test_gap_in_live_stream_is_filled_in_order() -> None:
    h, bus = FakeHistory(), FakeBus()
    w = Watcher(h, bus, "S", resync_interval=60)
    w.start()
    events = w.events(idle_timeout=0.05)
    bus.send(h.add("a", "1"))
    assert next(events).revision == 1
    h.add("b", "2")  # published but dropped by the bus (HWM)
    bus.send(h.add("c", "3"))
    assert [next(events).revision, next(events).revision] == [2, 3]
    assert w.gaps_filled == 1


def test_silence_triggers_resync_so_a_lost_last_event_is_found() -> None:
    h, bus = FakeHistory(), FakeBus()
    w = Watcher(h, bus, "S", resync_interval=0.01)
    w.start()
    events = w.events(idle_timeout=1.0)
    h.add("a", "1")  # never published on the bus at all
    ev = next(events)
    assert (ev.key, ev.revision) == ("a", 1)


def test_other_topics_sharing_the_prefix_are_ignored() -> None:
    h, bus = FakeHistory(), FakeBus()
    w = Watcher(h, bus, "S", resync_interval=60)
    other = {"op": "set", "key": "x", "value": "y", "version": 1, "revision": 1, "ts": 1}
    bus.send(other, topic=b"S.other")
    bus.queue.append(BusMessage(b"S", b"not json"))
    assert take(w, 1) == []


def test_resume_from_revision_replays_paged_history() -> None:
    h, bus = FakeHistory(), FakeBus()
    for i in range(7):
        h.add(f"k{i}", str(i))
    h.page = 3
    w = Watcher(h, bus, "S", from_revision=2, resync_interval=60)
    assert [r for _, _, r in take(w, 5)] == [3, 4, 5, 6, 7]


def test_compacted_history_is_announced_then_snapshot() -> None:
    h, bus = FakeHistory(), FakeBus()
    for i in range(5):
        h.add("k", str(i))
    h.add("j", "x")
    h.oldest_kept = 4
    w = Watcher(h, bus, "S", from_revision=1, resync_interval=60)
    got = take(w, 3)
    assert got == [("compacted", "", 6), ("snapshot", "k", 6), ("snapshot", "j", 6)]
    bus.send(h.add("k", "new"))
    assert take(w, 1) == [("change", "k", 7)]


def test_snapshot_start_and_missing_scope() -> None:
    h, bus = FakeHistory(), FakeBus()
    h.add("a", "1")
    w = Watcher(h, bus, "S", snapshot=True, resync_interval=60)
    assert take(w, 1) == [("snapshot", "a", 1)]
    h2 = FakeHistory()
    h2.scope_exists = False
    w2 = Watcher(h2, FakeBus(), "S", snapshot=True, resync_interval=60)
    assert take(w2, 1) == []
    assert w2.revision == 0
