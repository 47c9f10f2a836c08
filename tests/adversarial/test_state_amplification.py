"""Issue 7 case 1: a small request must not make the state worker build a huge reply."""

from __future__ import annotations

from typing import Any

import pytest
from tests.adversarial.advkit import Bounds, Stack, under_attack
from tests.kit.net import http_get

from plantd.mdp import BrokerError
from plantd.state.client import StateClient, StateReplyError

pytestmark = pytest.mark.adversarial

MIB = 1024 * 1024
MAX_REPLY = 16 * MIB  # the state service's default max_reply_bytes
# Just under the default max_value_bytes (1 MiB), as in the issue.
BIG = "x" * (MIB - 1024)
# 200 MB: the issue saw several GB; a reply refused while it is built costs about one value.
STATE_BOUNDS = Bounds({"state": 200, "broker": 200})


def _outcome(state: StateClient, op: str, body: dict[str, Any]) -> str:
    """``ok N rows`` (a reply within the budget) or the error code; anything else is wrong."""
    try:
        data = state.call(op, body)
    except StateReplyError as exc:
        return exc.code
    except BrokerError as exc:  # WORKER_LOST: the worker blocked past its heartbeat expiry
        return exc.code
    rows = data.get("items") or data.get("changes") or []
    sent = sum(len(r.get("value") or "") for r in rows)
    assert sent <= MAX_REPLY, f"{op} reply carried {sent} value bytes"
    return f"ok {len(rows)} rows" + (" (page)" if data.get("truncated") or data.get("more") else "")


def test_batch_get_naming_one_big_key_many_times(stack: Stack) -> None:
    """One 1 MiB value, then a ~1.4 KB batch-get naming it 200 times, as in the issue (before
    the fix: +190 MB and a 0.4 s stall already at 64 names). The reply is either de-duplicated
    and within max_reply_bytes, or refused early with REPLY_TOO_LARGE; never WORKER_LOST, and
    /readyz and both probes (p99 < 1 s) keep answering."""
    state = stack.state_client(timeout=30)
    state.set("amp", "big", BIG)
    body = {"service": "amp", "keys": ["big"] * 200}
    with under_attack(stack, "case 1 batch-get", STATE_BOUNDS, probes=("echo", "state")):
        outcomes = [_outcome(state, "batch-get", body) for _ in range(3)]
    print(f"[case 1 batch-get] outcomes {outcomes}")
    assert http_get(stack.url("state", "/readyz"), timeout=5.0)[0] == 200
    assert all(o == "REPLY_TOO_LARGE" or o.startswith("ok") for o in outcomes), outcomes


def test_snapshot_and_changes_since_of_a_heavy_scope(stack: Stack) -> None:
    """80 values of 1 MiB (80 MiB: five times the 16 MiB max_reply_bytes), then snapshot and
    changes-since over all of it: each answers a page within the reply budget (truncated /
    more) or REPLY_TOO_LARGE, built within 150 MB (before the fix a 40 MiB scope already cost
    +120 MB: the whole reply was built, then refused)."""
    state = stack.state_client(timeout=60)
    for i in range(80):
        state.set("heavy", f"k{i:02}", BIG)
    requests: list[tuple[str, dict[str, Any]]] = [
        ("snapshot", {"service": "heavy"}),
        ("changes-since", {"service": "heavy", "revision": 0}),
    ] * 2
    bounds = Bounds({"state": 150, "broker": 100})
    with under_attack(stack, "case 1 snapshot", bounds, probes=("echo", "state")):
        outcomes = [f"{op}: {_outcome(state, op, body)}" for op, body in requests]
    print(f"[case 1 snapshot] outcomes {outcomes}")
    assert http_get(stack.url("state", "/readyz"), timeout=5.0)[0] == 200
    bad = [o for o in outcomes if not (o.endswith("REPLY_TOO_LARGE") or "(page)" in o)]
    assert not bad, f"expected pages within the reply budget or REPLY_TOO_LARGE: {bad}"
