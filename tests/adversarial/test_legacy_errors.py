"""Issue 7 case 8: a peer in the original (legacy) dialect can read every error it gets."""

from __future__ import annotations

import json
import threading

import pytest
from tests.adversarial.advkit import Bounds, MakeStack, Stack, recv_until, under_attack
from tests.kit.wait import wait_for

from plantd.mdp import Worker

pytestmark = pytest.mark.adversarial

RAISER = b"org.example.test.Raiser"  # not org.plantd.*: reserved for plantd's own keys


def _boom(body: list[bytes]) -> list[bytes]:
    raise RuntimeError("handler failed on purpose")


def _legacy_error(reply: list[bytes], service: bytes) -> dict[str, object]:
    """The envelope of a legacy FINAL ``[MDPC02, FINAL, service, json]`` (a leading empty
    frame, mirrored from a REQ-style request, is allowed)."""
    if reply[:1] == [b""]:
        reply = reply[1:]
    assert reply[:3] == [b"MDPC02", b"FINAL", service], reply[:3]
    assert len(reply) == 4, f"expected one JSON body frame, got {reply[3:]!r}"
    doc = json.loads(reply[3])  # what the original Go client does first
    assert isinstance(doc, dict), doc
    return doc


def test_legacy_peer_gets_json_errors(make_stack: MakeStack) -> None:
    """SERVICE_UNAVAILABLE (no worker, --request-timeout-ms 1000), MESSAGE_TOO_LARGE (200 frames
    past --max-frames 100) and a worker's HANDLER_ERROR, each sent to a legacy
    client as one JSON frame {"success": false, "error": ..., "code": ...}; an MDP/0.2 client keeps
    [plantd.error, CODE, message] for the same failure."""
    stack: Stack = make_stack(
        with_state=False,
        broker_args=["--request-timeout-ms", "1000", "--max-frames", "100"],
    )
    worker = Worker(
        stack.endpoint,
        RAISER,
        _boom,
        curve=stack.curve("attacker"),
        heartbeat_ms=stack.heartbeat_ms,  # the broker's: test peers and broker agree
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    seen: dict[str, dict[str, object]] = {}
    try:
        probe = stack.client("client", timeout=2.0)
        wait_for(lambda: probe.mmi("mmi.service", RAISER) == [b"200"], 20, "the raiser worker")
        with under_attack(stack, "case 8", Bounds({"broker": 100})):
            legacy = stack.dealer("client")
            cases = {
                "SERVICE_UNAVAILABLE": (b"org.plantd.test.Nobody", [b"{}"]),
                "MESSAGE_TOO_LARGE": (b"org.plantd.module.Echo", [b"echo"] + [b"x"] * 200),
                "HANDLER_ERROR": (RAISER, [b"{}"]),
            }
            for code, (service, body) in cases.items():
                legacy.send_multipart([b"", b"MDPC02", b"REQUEST", service, *body])
                got = recv_until(legacy, 10.0)
                assert got, f"{code}: no reply within 10 s"
                seen[code] = _legacy_error(got[0], service)
            legacy.close(0)
            modern = stack.dealer("client")
            modern.send_multipart([b"MDPC02", b"\x01", RAISER, b"{}"])
            got = recv_until(modern, 10.0)
            modern.close(0)
        probe.close()
    finally:
        worker.stop()
        thread.join(10)
    print(f"[case 8] legacy envelopes: {seen}")
    for code, doc in seen.items():
        assert doc.get("success") is False, doc
        assert doc.get("code") == code, doc
        assert isinstance(doc.get("error"), str) and doc["error"], doc
    assert got and got[0][:3] == [b"MDPC02", b"\x03", RAISER], got
    assert got[0][3:5] == [b"plantd.error", b"HANDLER_ERROR"], got[0][3:]
