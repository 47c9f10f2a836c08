"""The caller identity frame: who sent a request, as the broker saw it (docs/protocol.md §5).

A worker that sends ``caller=1`` in its READY (``Worker(..., caller_identity=True)``) gets two
frames at the start of every request body::

    b"plantd.caller", b'{"key":"<Z85 or null>","name":"<registry name or null>","kind":...,
                         "permissions":[...]}'

``key`` is the CURVE public key the caller authenticated with (null without CURVE, or for an
in-process peer). ``permissions`` are the caller identity's in the broker's registry (file and
enrolments merged: the broker is the one place that knows them), present whenever the broker
knows the identity and the frame stays within ``MAX_FRAME_BYTES``. The broker refuses a
client body that starts with ``plantd.caller`` (BAD_REQUEST), so the frame a worker sees is
always the broker's. Pure: no sockets.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

MARKER: Final = b"plantd.caller"
READY_OPTION: Final = b"caller=1"
# What a worker accepts as the identity frame: a key, a name, a kind and the permissions of
# an enrolled identity (identity caps an enrolment at 4 KiB).
MAX_FRAME_BYTES: Final = 8 * 1024


@dataclass(frozen=True, slots=True)
class Caller:
    """The caller's authenticated key identity (fields are None when unknown)."""

    key: str | None
    name: str | None
    kind: str | None
    permissions: tuple[str, ...] | None = None  # None: the broker did not say


def encode(
    key: str | None,
    name: str | None,
    kind: str | None,
    permissions: Sequence[str] | None = None,
) -> bytes:
    """The identity frame (compact JSON); ``permissions`` left out when None or when they
    would take the frame past ``MAX_FRAME_BYTES`` (a worker then falls back to its own view)."""
    doc: dict[str, object] = {"key": key, "name": name, "kind": kind}
    plain = json.dumps(doc, separators=(",", ":")).encode()
    if permissions is None:
        return plain
    doc["permissions"] = list(permissions)
    full = json.dumps(doc, separators=(",", ":")).encode()
    return full if len(full) <= MAX_FRAME_BYTES else plain


def _permissions(doc: dict[str, object]) -> tuple[str, ...] | None:
    v = doc.get("permissions")
    if isinstance(v, list) and all(isinstance(p, str) for p in v):
        return tuple(v)
    return None


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
            caller = Caller(
                _field(doc, "key"), _field(doc, "name"), _field(doc, "kind"), _permissions(doc)
            )
    return caller, list(body[2:])
