"""Hostile input to the state service's pure core: request bodies, replies, bus events.

Each test here failed before issue 7: a poisoned integer escaped ``decode`` as ValueError,
replies were built whole before their size was checked, repeated keys were fetched and
rendered once per mention, ``"revision": Infinity`` crashed the watcher.
"""

from __future__ import annotations

import json
import sys
from collections import deque
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plantd.bus import BusMessage
from plantd.state import body, events, operations, render
from plantd.state.errors import Code, StateError
from plantd.state.limits import Limits
from plantd.state.model import (
    Change,
    ChangeLog,
    ChangesSince,
    Entry,
    Get,
    GetResult,
    KeyList,
    ListKeys,
    Set,
    SetItem,
    SetResult,
    Snapshot,
    SnapshotResult,
)
from plantd.state.watch import Watcher

pytestmark = pytest.mark.unit

LIMITS = Limits()
UP = operations.HealthInfo("sqlite", True)
BIG_INT = "9" * (sys.get_int_max_str_digits() + 1)


def big(template: bytes) -> bytes:
    """``template`` with BIG replaced by an integer literal one digit past Python's limit."""
    return template.replace(b"BIG", BIG_INT.encode())


def decode(op: str, raw: bytes, limits: Limits = LIMITS) -> operations.Request | StateError:
    try:
        return operations.decode([op.encode(), raw], limits, UP)
    except StateError as err:
        return err


# ---- request bodies ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        big(b'{"service":"S","key":"k","value":"v","if_version":BIG}'),
        big(b'{"service":"S","key":"k","value":"v","ttl_ms":-BIG}'),
        big(b' {"service":"S","pad":[BIG]} '),  # json.loads path (whitespace)
    ],
)
def test_an_integer_past_the_digit_limit_is_invalid_request(raw: bytes) -> None:
    err = decode("state-set", raw)
    assert isinstance(err, StateError) and err.code == Code.INVALID_REQUEST
    assert "4300 digits" in err.message and err.field == "body"


json_docs = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=200))
def test_decode_of_arbitrary_bytes_returns_a_request_or_a_coded_error(raw: bytes) -> None:
    for op in ("state-set", "batch-set", "batch-get", "changes-since", "health"):
        out = decode(op, raw)
        assert isinstance(out, operations.Request) or out.code in Code.ALL


@settings(max_examples=300, deadline=None)
@given(doc=json_docs, prefix=st.sampled_from(["", " ", "\n"]))
def test_body_parse_matches_json_loads(doc: Any, prefix: str) -> None:
    """The scan_once fast path parses exactly as json.loads (or refuses as it does)."""
    text = prefix + json.dumps(doc)
    try:
        want: Any = json.loads(text)
    except ValueError:
        want = ValueError
    try:
        got: Any = body.parse(text.encode(), LIMITS)
    except StateError as err:
        assert err.code == Code.INVALID_REQUEST
        got = ValueError if want is ValueError or not isinstance(want, dict) else err
    if isinstance(want, dict):
        assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True)
    else:
        assert got is ValueError


@settings(max_examples=200, deadline=None)
@given(doc=st.dictionaries(st.text(max_size=8), json_docs, max_size=6))
def test_decode_of_arbitrary_objects_never_raises_anything_else(doc: dict[str, Any]) -> None:
    raw = json.dumps(doc).encode()
    for op in operations.NAMES:
        out = decode(op, raw)
        assert isinstance(out, operations.Request) or out.code in Code.ALL


def test_batch_get_names_each_key_once() -> None:
    r = decode("batch-get", b'{"service":"S","keys":["big","a","big","big","a"]}')
    assert isinstance(r, operations.Request) and r.op == Get("S", ("big", "a"))


def test_batch_set_refuses_a_key_twice() -> None:
    raw = json.dumps(
        {
            "service": "S",
            "items": [
                {"key": "a", "value": "1", "if_version": 0},
                {"key": "b", "value": "2"},
                {"key": "a", "value": "3", "if_version": 0},
            ],
        }
    ).encode()
    err = decode("batch-set", raw)
    assert isinstance(err, StateError) and err.code == Code.INVALID_REQUEST
    assert "'a'" in err.message and err.field == "items[2].key"


# ---- replies within the budget ----------------------------------------------------------------


def test_batch_get_stops_at_the_budget_before_building_the_rest() -> None:
    built: list[int] = []

    class Counting(tuple[Entry | None, ...]):
        def __iter__(self) -> Any:
            for i, e in enumerate(tuple.__iter__(self)):
                built.append(i)
                yield e

    keys = tuple(f"k{i}" for i in range(100))
    entries = Counting(Entry("x" * 1000, i + 1) for i in range(100))
    with pytest.raises(StateError) as info:
        render.batch_get(Get("S", keys), GetResult(entries), 10_000)
    assert info.value.code == Code.REPLY_TOO_LARGE
    assert "fewer keys" in info.value.message
    assert len(built) <= 11, "items past the budget were formatted"


def test_snapshot_over_the_budget_is_refused_with_how_to_page() -> None:
    items = tuple((f"k{i}", Entry("v" * 100, i + 1)) for i in range(50))
    with pytest.raises(StateError) as info:
        render.snapshot(Snapshot("S"), SnapshotResult(50, items, False), 2000)
    assert info.value.code == Code.REPLY_TOO_LARGE and "list-keys" in info.value.message


def test_changes_since_pages_at_the_budget() -> None:
    changes = tuple(Change("S", "set", f"k{i}", "v" * 100, i + 1, i + 1, 5) for i in range(50))
    raw = render.changes_since(ChangesSince("S", 0), ChangeLog(50, changes, False, 1, False), 2000)
    assert len(raw) <= 2000
    out = json.loads(raw)["data"]
    assert out["more"] is True and 0 < len(out["changes"]) < 50
    assert [c["revision"] for c in out["changes"]] == list(range(1, len(out["changes"]) + 1))


def test_a_wrong_result_type_is_internal_without_asserts() -> None:
    """Explicit checks: `python -O` strips asserts, these stay."""
    err = operations.reply(
        operations.Request("state-get", Get("S", ("k",)), render.get, "", None),  # type: ignore[arg-type]
        SetResult((1,), 1, False, 0),
        LIMITS,
    )
    doc = json.loads(err)
    assert doc["code"] == Code.INTERNAL and "GetResult" in doc["error"]


def _reference_entry(k: str, e: Entry | None) -> dict[str, Any]:
    if e is None:
        return {"key": k, "value": "", "found": False, "version": 0}
    d: dict[str, Any] = {"key": k, "value": e.value, "found": True, "version": e.version}
    if e.expires_at is not None:
        d["expires_at"] = e.expires_at
    return d


entries = st.one_of(
    st.none(),
    st.builds(
        Entry,
        st.text(max_size=30),
        st.integers(1, 2**53),
        st.one_of(st.none(), st.integers(0, 2**53)),
    ),
)


@settings(max_examples=200, deadline=None)
@given(
    scope=st.text(min_size=1, max_size=10),
    pairs=st.lists(st.tuples(st.text(min_size=1, max_size=10), entries), min_size=1, max_size=6),
)
def test_renderers_give_the_documented_json(
    scope: str, pairs: list[tuple[str, Entry | None]]
) -> None:
    keys = tuple(k for k, _ in pairs)
    got = json.loads(
        render.batch_get(Get(scope, keys), GetResult(tuple(e for _, e in pairs)), 1 << 30)
    )
    assert got == {
        "success": True,
        "data": {
            "scope": scope,
            "count": len(pairs),
            "items": [_reference_entry(k, e) for k, e in pairs],
        },
    }
    one = json.loads(render.get(Get(scope, keys[:1]), GetResult((pairs[0][1],)), 1 << 30))
    assert one == {"success": True, "data": {**_reference_entry(*pairs[0]), "scope": scope}}
    live = tuple((k, e) for k, e in pairs if e is not None)
    snap = json.loads(render.snapshot(Snapshot(scope), SnapshotResult(7, live, True), 1 << 30))
    assert snap["data"] == {
        "scope": scope,
        "revision": 7,
        "count": len(live),
        "truncated": True,
        "items": [_reference_entry(k, e) for k, e in live],
    }
    lk = json.loads(render.list_keys(ListKeys(scope), KeyList(keys, keys[-1]), 1 << 30))
    assert lk["data"] == {
        "count": len(keys),
        "keys": list(keys),
        "scope": scope,
        "next_cursor": keys[-1],
    }
    items = tuple(SetItem(k, "v") for k in keys)
    bs = json.loads(
        render.batch_set(
            Set(scope, items), SetResult(tuple(range(1, len(keys) + 1)), 9, True, 0), 1 << 30
        )
    )
    assert bs["data"] == {
        "scope": scope,
        "status": "set",
        "count": len(keys),
        "revision": 9,
        "items": [{"key": k, "version": i + 1} for i, k in enumerate(keys)],
        "created_scope": True,
    }


# ---- bus events -------------------------------------------------------------------------------

GOOD = {"op": "set", "key": "k", "value": "v", "version": 3, "revision": 3, "ts": 1}


@pytest.mark.parametrize(
    "payload",
    [
        b'{"op":"set","key":"k","value":"v","version":3,"revision":Infinity,"ts":1}',
        b'{"op":"set","key":"k","value":"v","version":3,"revision":NaN,"ts":1}',
        b'{"op":"set","key":"k","value":"v","version":3,"revision":-Infinity,"ts":1}',
        big(b'{"op":"set","key":"k","value":"v","version":3,"revision":BIG,"ts":1}'),
        b'{"op":"set","key":"k","value":"v","version":3,"revision":1e400,"ts":1}',
        b'{"op":"set","key":"k","value":"v","version":3,"revision":3.5,"ts":1}',
        b'{"op":"set","key":"k","value":"v","version":3,"revision":true,"ts":1}',
        b'{"op":"set","key":"k","value":"v","version":3,"revision":-1,"ts":1}',
        b'{"op":"set","key":"k","value":"v","version":3,"revision":"3","ts":1}',
        b'{"op":"set","key":["k"],"value":"v","version":3,"revision":3,"ts":1}',
        b'{"op":"frob","key":"k","value":"v","version":3,"revision":3,"ts":1}',
        b'{"op":"set","key":"k","value":"v","version":3,"revision":3',
        b'{"op":"set"}',
        b"[1,2,3]",
        b"\xff\xfe",
        b"[" * 5000,
    ],
)
def test_events_decode_refuses_hostile_payloads(payload: bytes) -> None:
    with pytest.raises(events.NotAnEvent):
        events.decode(b"S", payload)


def test_events_decode_refuses_a_topic_that_is_not_utf8() -> None:
    with pytest.raises(events.NotAnEvent):
        events.decode(b"\xff", json.dumps(GOOD).encode())


@settings(max_examples=300, deadline=None)
@given(
    topic=st.binary(max_size=8),
    payload=st.binary(max_size=120) | json_docs.map(lambda d: json.dumps(d).encode()),
)
def test_events_decode_returns_a_change_or_not_an_event(topic: bytes, payload: bytes) -> None:
    try:
        ch = events.decode(topic, payload)
    except events.NotAnEvent:
        return
    assert isinstance(ch.revision, int) and 0 <= ch.revision <= 2**53


class OneScope:
    """changes-since that says "nothing after revision 2"; snapshot unused."""

    def changes_since(
        self, scope: str, revision: int, *, limit: int | None = None
    ) -> dict[str, Any]:
        return {"revision": 2, "compacted": False, "changes": [], "more": False}

    def snapshot(self, scope: str, *, limit: int | None = None) -> dict[str, Any]:
        raise AssertionError("not used")


class ScriptedBus:
    def __init__(self, payloads: list[bytes]) -> None:
        self.queue = deque(BusMessage(b"S", p) for p in payloads)

    def recv(self, timeout: float | None = None) -> BusMessage | None:
        return self.queue.popleft() if self.queue else None


def test_the_watcher_skips_hostile_events_and_shows_the_next_real_change() -> None:
    hostile = [
        b'{"op":"set","key":"k","value":"v","version":3,"revision":Infinity,"ts":1}',
        big(b'{"op":"set","key":"k","value":"v","version":3,"revision":BIG,"ts":1}'),
        b'{"op":"set","key":"k","value":"v","version":3,"revision":NaN,"ts":1}',
        b'{"op":"set","key":"k"',
        b'{"op":"set","key":"k","value":"v","version":"3","revision":3,"ts":1}',
    ]
    bus = ScriptedBus([*hostile, json.dumps(GOOD).encode()])
    w = Watcher(OneScope(), bus, "S", resync_interval=60)
    got = [(ev.kind, ev.key, ev.revision) for ev in w.events(idle_timeout=0.2)]
    assert got == [("change", "k", 3)]
    assert w.skipped == len(hostile)


def test_the_watcher_skips_bad_history_items() -> None:
    class Bad(OneScope):
        def changes_since(
            self, scope: str, revision: int, *, limit: int | None = None
        ) -> dict[str, Any]:
            bad = {**GOOD, "revision": float("inf")}
            good = {**GOOD, "revision": 2, "version": 2}
            return {"revision": 2, "compacted": False, "changes": [bad, good], "more": False}

    w = Watcher(Bad(), ScriptedBus([]), "S", from_revision=1, resync_interval=60)
    assert [(ev.key, ev.revision) for ev in w.start()] == [("k", 2)]
    assert w.skipped == 1
