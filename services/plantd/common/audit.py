"""Typed audit events, hash-chained per producer: the event shape every plantd service emits.

One shape for every producer (the identity service, the broker, the state service):
``id, time, producer, seq, action, decision (allow|deny), reason, actor, target, source, jti,
trace_id, detail, prev, hash`` with ``hash = sha256(prev || canonical JSON without hash)``, so
one consumer (``plant audit tail``) verifies every producer's chain alike. Topic ``audit`` on
the event bus; publishing is best effort, the log line ``audit`` carries the same event.
Services never import each other, so the broker uses this one.

An optional per-second budget (``per_second``; the state service's denials) bounds what a flood
costs: past it, events are counted by reason and reported in one ``COMPONENT.audit_suppressed``
event (reason ``AUDIT_BUDGET``) when the next second starts or on :meth:`Auditor.flush`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Protocol

log = logging.getLogger("plantd.audit")

TOPIC: Final = b"audit"
GENESIS: Final = "0" * 64
AUDIT_BUDGET: Final = "AUDIT_BUDGET"  # the reason of a summary of events past the budget


class Sink(Protocol):
    def publish(self, topic: str | bytes, payload: bytes) -> None: ...


@dataclass(slots=True)
class AuditEvent:
    action: str  # e.g. bus.register, auth.login
    decision: str  # allow | deny
    reason: str = ""  # why (a code): every deny has one
    actor: str = ""  # the identity acting ("" = unknown)
    target: str = ""  # what was acted on (a service name, a user id, ...)
    source: str = ""  # the caller's key identity or address
    jti: str = ""
    trace_id: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    break_glass: bool = False  # a break-glass token was used: logged at warning level


def chain_hash(prev: str, body: dict[str, Any]) -> str:
    canon = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((prev + canon).encode()).hexdigest()


def verify_chain(events: list[dict[str, Any]]) -> bool:
    """True when ``events`` (one producer, in order) form an unbroken chain."""
    prev = events[0]["prev"] if events else GENESIS
    for ev in events:
        body = {k: v for k, v in ev.items() if k != "hash"}
        if ev.get("prev") != prev or chain_hash(prev, body) != ev.get("hash"):
            return False
        prev = ev["hash"]
    return True


class Auditor:
    """Chains, logs and publishes events of one producer (``component@host:pid:start``).

    With ``per_second`` set, at most that many events go out per wall-clock second; the rest
    are counted (``suppressed``) and summarised. Without it (the default) every event does."""

    def __init__(
        self,
        component: str,
        sink: Sink | None = None,
        *,
        clock: Callable[[], float] = time.time,
        per_second: int | None = None,
    ) -> None:
        self.component = component
        self.sink = sink
        self.clock = clock
        self.per_second = per_second
        self.producer = f"{component}@{socket.gethostname()}:{os.getpid()}:{int(clock())}"
        self.prev = GENESIS
        self.seq = 0
        self.denials = 0
        self.suppressed = 0  # all time: events past the budget (for /metrics and tests)
        self._window = 0  # the second the budget is counting
        self._in_window = 0
        self._held: dict[str, int] = {}  # reason -> events held back in this window

    def emit(self, event: AuditEvent) -> dict[str, Any] | None:
        """Chain, log and publish ``event``; None when the budget held it back (counted)."""
        if self.per_second is None:
            return self._emit(event, self.clock())
        now = self.clock()
        second = int(now)
        if second != self._window:
            self.flush(now)
            self._window, self._in_window = second, 0
        if self._in_window >= self.per_second:
            self.suppressed += 1
            self._held[event.reason] = self._held.get(event.reason, 0) + 1
            return None
        self._in_window += 1
        return self._emit(event, now)

    def flush(self, now: float | None = None) -> None:
        """Report the events held back in the last window (one summary event), if any."""
        if not self._held:
            return
        held, self._held = self._held, {}
        summary = AuditEvent(
            f"{self.component}.audit_suppressed",
            "deny",
            AUDIT_BUDGET,
            detail={
                "suppressed": sum(held.values()),
                "by_reason": held,
                "per_second": self.per_second,
            },
        )
        self._emit(summary, self.clock() if now is None else now)

    def _emit(self, event: AuditEvent, now: float) -> dict[str, Any]:
        self.seq += 1
        if event.decision == "deny":
            self.denials += 1
        body = asdict(event)
        body.update(
            {
                "id": uuid.uuid4().hex,
                "time": round(now, 3),
                "producer": self.producer,
                "seq": self.seq,
                "prev": self.prev,
            }
        )
        body["hash"] = chain_hash(self.prev, body)
        self.prev = body["hash"]
        loud = event.decision == "deny" or event.break_glass
        level = logging.WARNING if loud else logging.INFO
        log.log(level, "audit", extra={"audit": body})
        if self.sink is not None:
            try:
                self.sink.publish(TOPIC, json.dumps(body).encode())
            except Exception:  # the bus is best effort; the log line stands
                log.exception("publishing an audit event failed")
        return body
