"""Typed audit events, hash-chained per producer, published on the event bus and logged.

Every event: ``id, time, producer, seq, action, decision (allow|deny), reason, actor, target,
source (the caller-supplied ``ip_address`` or source key), jti, trace_id, prev, hash``.
``hash = sha256(prev_hash || canonical JSON of the event without hash)``: a consumer that keeps
the last hash per producer detects a dropped, altered or reordered event. ``seq`` restarts at 1
and ``prev`` at the genesis value with each process (the producer id includes the process id
and start time, so restarts are separate chains).

Topic ``audit`` on the event bus, payload the event's JSON. Publishing is best effort (the bus
drops for slow subscribers); the log line ``audit`` carries the same event.
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

log = logging.getLogger("plantd.identity.audit")

TOPIC: Final = b"audit"
GENESIS: Final = "0" * 64


class Sink(Protocol):
    def publish(self, topic: str | bytes, payload: bytes) -> None: ...


@dataclass(slots=True)
class AuditEvent:
    action: str  # e.g. auth.login, auth.refresh, user.create
    decision: str  # allow | deny
    reason: str = ""  # why (a code) — every deny has one
    actor: str = ""  # user id / username of the caller ("" = anonymous)
    target: str = ""  # what was acted on (a user id, a role name, an identifier)
    source: str = ""  # caller-supplied ip_address, or the caller's key identity
    jti: str = ""
    trace_id: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


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
    def __init__(self, sink: Sink | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self.sink = sink
        self.clock = clock
        self.producer = f"identity@{socket.gethostname()}:{os.getpid()}:{int(clock())}"
        self.prev = GENESIS
        self.seq = 0
        self.denials = 0

    def emit(self, event: AuditEvent) -> dict[str, Any]:
        self.seq += 1
        if event.decision == "deny":
            self.denials += 1
        body = asdict(event)
        body.update(
            {
                "id": uuid.uuid4().hex,
                "time": round(self.clock(), 3),
                "producer": self.producer,
                "seq": self.seq,
                "prev": self.prev,
            }
        )
        body["hash"] = chain_hash(self.prev, body)
        self.prev = body["hash"]
        level = logging.WARNING if event.decision == "deny" else logging.INFO
        log.log(level, "audit", extra={"audit": body})
        if self.sink is not None:
            try:
                self.sink.publish(TOPIC, json.dumps(body).encode())
            except Exception:  # the bus is best effort; the log line stands
                log.exception("publishing an audit event failed")
        return body
