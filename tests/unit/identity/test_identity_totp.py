"""TOTP (RFC 6238) against the RFC's own test vectors, and the drift window."""

from __future__ import annotations

import base64

import pytest

from plantd.identity import totp

pytestmark = pytest.mark.unit

RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()  # RFC 6238 appendix B (SHA1)


@pytest.mark.parametrize(
    ("t", "code8"),
    [
        (59, "94287082"),
        (1111111109, "07081804"),
        (1234567890, "89005924"),
        (2000000000, "69279037"),
    ],
)
def test_rfc6238_vectors(t: int, code8: str) -> None:
    assert totp.code_at(RFC_SECRET, t // 30, digits=8) == code8
    assert totp.code_at(RFC_SECRET, t // 30) == code8[-6:]


def test_match_accepts_one_step_of_drift_and_nothing_else() -> None:
    secret = totp.new_secret()
    now = 1_800_000_000.0
    step = int(now // 30)
    for delta in (-1, 0, 1):
        assert totp.match(secret, totp.code_at(secret, step + delta), now) == step + delta
    assert totp.match(secret, totp.code_at(secret, step + 2), now) is None
    for junk in ("", "12345", "1234567", "abcdef", "١٢٣٤٥٦"):
        assert totp.match(secret, junk, now) is None


def test_uri_for_authenticator_apps() -> None:
    u = totp.uri("ABCDEF", "jane doe", "plantd-identity")
    assert u.startswith("otpauth://totp/plantd-identity%3Ajane%20doe?secret=ABCDEF")
