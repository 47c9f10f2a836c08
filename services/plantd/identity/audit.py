"""The identity service's audit events: :mod:`plantd.common.audit` with producer ``identity``.

Every event: ``id, time, producer, seq, action, decision (allow|deny), reason, actor, target,
source (the caller-supplied ``ip_address`` or source key), jti, trace_id, detail, break_glass,
prev, hash``; the chain rule and the topic are the common module's, so ``plant audit tail``
verifies identity's chain and every other producer's alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from plantd.common import audit as _common
from plantd.common.audit import GENESIS, TOPIC, AuditEvent, Sink, chain_hash, verify_chain

__all__ = ["GENESIS", "TOPIC", "AuditEvent", "Auditor", "Sink", "chain_hash", "verify_chain"]


class Auditor(_common.Auditor):
    """An auditor whose producer is ``identity@host:pid:start``."""

    def __init__(self, sink: Sink | None = None, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__("identity", sink, clock=clock)
