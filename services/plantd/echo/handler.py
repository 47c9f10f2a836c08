"""What ``org.plantd.module.Echo`` answers. Pure: frames in, frames out.

This is the whole of the module's logic; :mod:`plantd.echo.main` only wires it to the bus.

Compatible with the original echo module: a request ``[b"echo", p1, p2, ...]`` is answered with
``[p1, p2, ...]`` verbatim, whatever the parts hold: ``plant echo MSG`` sends ``["echo", MSG]``,
the original ``plant echo`` (and ``plant echo --envelope``) ``["echo", '{"service": ...,
"message": MSG}']``; both come back unchanged. The original answered any other operation with
empty frames; here the caller gets a JSON error per part instead, so a typo is visible.
"""

from __future__ import annotations

import json

OPERATION = b"echo"


def handle(frames: list[bytes]) -> list[bytes]:
    """Reply frames for one request (``frames`` is the request body: operation, then parts)."""
    if not frames:
        return [_error("empty request: send [echo, part...]")]
    op, parts = frames[0], frames[1:]
    if op == OPERATION:
        return parts
    name = op.decode("utf-8", errors="replace")
    message = f"unknown operation {name!r}; this module only answers 'echo'"
    return [_error(message) for _ in parts] or [_error(message)]


def _error(message: str) -> bytes:
    return json.dumps({"error": message, "code": "bad_request"}).encode()
