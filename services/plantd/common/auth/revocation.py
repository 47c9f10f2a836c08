"""Per-user ``not_before``: tokens issued before it are refused (logout, password change, disable).

The identity service publishes every bump on the event bus as ``[TOPIC, json]`` with
``{"sub": USER_ID, "not_before": UNIX_SECONDS, "reason": "..."}`` and re-publishes the bumps of
the last access-token lifetime every few seconds, so a verifier that started late (or lost a
message: PUB/SUB drops when a queue is full) converges too. :class:`NotBeforeMap` only moves
forward, so replays and reordering are harmless.
"""

from __future__ import annotations

import json
import logging
from typing import Final

from plantd.bus import AsyncSubscriber
from plantd.common.curve import CurveClient

log = logging.getLogger("plantd.auth")

TOPIC: Final = b"identity.not_before"
MAX_EVENT_BYTES: Final = 1024
MAX_SUBJECT_CHARS: Final = 128
# Bound on remembered users: a subscriber fed junk must cost bounded memory. Entries older than
# the longest token lifetime are useless and pruned first.
MAX_ENTRIES: Final = 100_000


def encode_event(sub: str, not_before: float, reason: str) -> bytes:
    return json.dumps({"sub": sub, "not_before": not_before, "reason": reason}).encode()


class NotBeforeMap:
    """user id -> the earliest ``iat`` still accepted."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._map: dict[str, float] = {}
        self.max_entries = max_entries
        self.updates = 0
        self.rejected = 0

    def get(self, sub: str) -> float:
        return self._map.get(sub, 0.0)

    def bump(self, sub: str, not_before: float) -> bool:
        """Raise ``sub``'s not_before (never lower it); True if it changed."""
        if not_before <= self._map.get(sub, 0.0):
            return False
        if sub not in self._map and len(self._map) >= self.max_entries:
            self._evict()
        self._map[sub] = not_before
        self.updates += 1
        return True

    def _evict(self) -> None:
        # Drop the oldest half: the oldest bumps are past every token's expiry soonest.
        keep = sorted(self._map.items(), key=lambda kv: kv[1])[len(self._map) // 2 :]
        self._map = dict(keep)

    def apply(self, payload: bytes) -> bool:
        """One bus message; malformed or oversized ones are counted and ignored."""
        if len(payload) > MAX_EVENT_BYTES:
            self.rejected += 1
            return False
        try:
            doc = json.loads(payload)
            sub, nb = doc["sub"], doc["not_before"]
        except (ValueError, KeyError, TypeError):
            self.rejected += 1
            return False
        if (
            not isinstance(sub, str)
            or not 0 < len(sub) <= MAX_SUBJECT_CHARS
            or isinstance(nb, bool)
            or not isinstance(nb, int | float)
            or not 0 <= nb < 1e11
        ):
            self.rejected += 1
            return False
        return self.bump(sub, float(nb))

    def __len__(self) -> int:
        return len(self._map)


async def follow(endpoint: str, nbmap: NotBeforeMap, *, curve: CurveClient | None = None) -> None:
    """Feed ``nbmap`` from the event bus's subscriber port until cancelled."""
    sub = AsyncSubscriber(endpoint, (TOPIC,), curve=curve)
    try:
        while True:
            msg = await sub.recv()
            if msg.topic == TOPIC:
                nbmap.apply(msg.payload)
    finally:
        sub.close()
