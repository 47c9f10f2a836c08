"""The common auditor's optional per-second budget: off by default, one summary event past it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from plantd.common.audit import AUDIT_BUDGET, AuditEvent, Auditor, verify_chain

pytestmark = pytest.mark.unit


class Bus:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def publish(self, topic: str | bytes, payload: bytes) -> None:
        assert topic == b"audit"
        self.sent.append(json.loads(payload))


def test_without_a_budget_every_event_goes_out() -> None:
    bus = Bus()
    a = Auditor("identity", bus, clock=lambda: 1000.5)
    for i in range(500):
        assert a.emit(AuditEvent("auth.login", "deny", reason="BAD_PASSWORD", actor=str(i)))
    a.flush()  # nothing held: no summary
    assert len(bus.sent) == 500 and a.suppressed == 0 and a.denials == 500
    assert verify_chain(bus.sent)


def test_a_budget_holds_back_the_rest_of_the_second_and_summarises_it() -> None:
    bus = Bus()
    t = [2000.1]
    a = Auditor("broker", bus, clock=lambda: t[0], per_second=2)
    reasons = ["NO_CREDENTIALS", "DENIED", "DENIED", "NO_CREDENTIALS", "DENIED"]
    out = [a.emit(AuditEvent("bus.register", "deny", reason=r)) for r in reasons]
    assert [o is not None for o in out] == [True, True, False, False, False]
    assert a.suppressed == 3 and len(bus.sent) == 2
    t[0] = 2001.4
    a.emit(AuditEvent("bus.register", "allow"))  # a new second: the summary, then the event
    summary, event = bus.sent[2:]
    assert summary["action"] == "broker.audit_suppressed" and summary["reason"] == AUDIT_BUDGET
    assert summary["decision"] == "deny" and summary["time"] == 2001.4
    assert summary["detail"] == {
        "suppressed": 3,
        "by_reason": {"DENIED": 2, "NO_CREDENTIALS": 1},
        "per_second": 2,
    }
    assert event["decision"] == "allow"
    assert verify_chain(bus.sent)  # the summary is a link of the same chain
