"""Issue 7 case 2: one poisoned request in a worker batch fails alone."""

from __future__ import annotations

import json

import pytest
from tests.adversarial.advkit import Bounds, Stack, error_code, recv_until, under_attack

pytestmark = pytest.mark.adversarial

STATE = b"org.plantd.State"
# An integer literal over Python's 4300-digit limit: json.loads raises ValueError on it.
POISON = b'{"service":"poison","key":"k","value":"v","if_version":' + b"9" * 5000 + b"}"


def test_one_poisoned_request_fails_alone(stack: Stack) -> None:
    """50 innocent writers and one poisoned request sent together, three rounds (the worker
    takes up to --credit 200 at once, so they share batches): every innocent write succeeds
    and the poisoned one alone gets INVALID_REQUEST (the issue: 50 of 50 got HANDLER_ERROR)."""
    socks = [stack.dealer("client") for _ in range(51)]
    bad_codes: list[str] = []
    innocent: dict[str, int] = {}
    with under_attack(stack, "case 2", Bounds({"state": 100, "broker": 100}), ("echo", "state")):
        for rnd in range(3):
            for i, sock in enumerate(socks):
                if i == 25:
                    sock.send_multipart([b"MDPC02", b"\x01", STATE, b"state-set", POISON])
                    continue
                body = {"service": "poison", "key": f"w{i}", "value": f"r{rnd}"}
                sock.send_multipart(
                    [b"MDPC02", b"\x01", STATE, b"state-set", json.dumps(body).encode()]
                )
            for i, sock in enumerate(socks):
                got = recv_until(sock, 30.0)
                assert got, f"round {rnd}: socket {i} got no reply within 30 s"
                reply = got[0]
                code = error_code(reply)
                if code is None:
                    doc = json.loads(reply[3])
                    code = "ok" if doc.get("success") else str(doc.get("code"))
                if i == 25:
                    bad_codes.append(code)
                else:
                    innocent[code] = innocent.get(code, 0) + 1
    for sock in socks:
        sock.close(0)
    print(f"[case 2] innocent outcomes {innocent}; poisoned {bad_codes}")
    assert innocent == {"ok": 150}, f"innocent writers failed: {innocent}"
    assert bad_codes == ["INVALID_REQUEST"] * 3, bad_codes
