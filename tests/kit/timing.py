"""Timing settings every test peer and every broker under test share.

A peer whose heartbeat interval differs from its broker's misjudges it: each side expires the
other after ``liveness`` of *its own* intervals, so a 100 ms worker facing a 250 ms broker
declares the broker dead after 300 ms of silence, a margin of 50 ms over the broker's beat, and
reconnects under load with a new identity (the flakes of issue 7). Both sides of every test
take ``HEARTBEAT_MS`` from here.
"""

from __future__ import annotations

from plantd.common.contract import HEARTBEAT_LIVENESS

# 500 ms with liveness 3: a dead peer is noticed in 1.5-2 s, and a live Python peer on the shared
# 2-core box (six suites and a Go build) can stall for a second without being dropped.
HEARTBEAT_MS = 500
LIVENESS = HEARTBEAT_LIVENESS  # the broker's and worker's default: missed beats before "dead"

# Process start-up alone can take seconds on the shared, loaded box.
START_TIMEOUT = 40.0


def expiry_s(heartbeat_ms: int = HEARTBEAT_MS) -> float:
    """Seconds after which a silent peer is surely expired: liveness intervals plus one tick."""
    return (LIVENESS + 1) * heartbeat_ms / 1000
