"""The caller identity frame: who sent a request, as the broker saw it (docs/protocol.md §5).

A worker that sends ``caller=1`` in its READY (``Worker(..., caller_identity=True)``) gets two
frames at the start of every request body::

    b"plantd.caller", b'{"key":"<Z85 or null>","name":"<registry name or null>","kind":...}'

``key`` is the CURVE public key the caller authenticated with (null without CURVE, or for an
in-process peer). The broker refuses a client body that starts with ``plantd.caller``
(BAD_REQUEST), so the frame a worker sees is always the broker's. Pure: no sockets.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

MARKER: Final = b"plantd.caller"
READY_OPTION: Final = b"caller=1"
MAX_FRAME_BYTES: Final = 1024  # what a worker accepts as the identity frame


@dataclass(frozen=True, slots=True)
class Caller:
    """The caller's authenticated key identity (fields are None when unknown)."""

    key: str | None
    name: str | None
    kind: str | None


def encode(key: str | None, name: str | None, kind: str | None) -> bytes:
    """The identity frame (compact JSON)."""
    return json.dumps({"key": key, "name": name, "kind": kind}, separators=(",", ":")).encode()


def _field(doc: dict[str, object], name: str) -> str | None:
    v = doc.get(name)
    return v if isinstance(v, str) else None


def split_caller(body: Sequence[bytes]) -> tuple[Caller | None, list[bytes]]:
    """``(caller, rest of the body)``; ``(None, body)`` when the body has no identity frame.

    Never raises: a malformed identity frame (which only a broker bug could send) gives a
    Caller of Nones, and the frames are still removed, so the handler sees the client's body.
    """
    if len(body) < 2 or body[0] != MARKER:
        return None, list(body)
    raw = body[1]
    caller = Caller(None, None, None)
    if len(raw) <= MAX_FRAME_BYTES:
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            caller = Caller(_field(doc, "key"), _field(doc, "name"), _field(doc, "kind"))
    return caller, list(body[2:])
