"""Pure cores of identity: password policy, buckets and backoff, audit chain, frames, keys."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from plantd.identity import protocol
from plantd.identity.audit import GENESIS, AuditEvent, Auditor, verify_chain
from plantd.identity.errors import Code, IdentityError
from plantd.identity.keys import KeyRing, SigningKeyError, generate, thumbprint
from plantd.identity.passwords import MAX_BYTES, Hasher, Policy
from plantd.identity.throttle import Backoff, Bucket, take

pytestmark = pytest.mark.unit

# ---- password policy (NIST 800-63B-4: length and blocklist, no composition rules) -------


@pytest.mark.parametrize(
    "password",
    [
        "correct horse battery staple",  # a passphrase of lower-case words is fine
        "aaaaaaaaaaaaaaaaaaaaab",  # no composition or repetition rules
        "ünïcødé pässwörd lóng",
        "x" * 256,
    ],
)
def test_policy_accepts_long_uncommon_passwords(password: str) -> None:
    assert Policy(min_length=15).problems(password) == []


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("short", "at least 15"),
        ("password", "common"),
        ("Password123!", "common"),  # a listed word plus digits and punctuation
        ("  QWERTYUIOP  ", "common"),
        ("change-me-in-production", "common"),  # the original's default secret
        ("x" * 257, "at most"),
        ("é" * 600, "at most"),  # 1200 bytes: refused before hashing
    ],
)
def test_policy_refuses(password: str, why: str) -> None:
    problems = Policy(min_length=15).problems(password)
    assert problems and why in " ".join(problems)


def test_policy_refuses_the_username_and_email() -> None:
    p = Policy(min_length=8)
    assert p.problems("operator-number-one", username="operator-number-one")
    assert p.problems("jane.doe.operator", email="jane.doe.operator@plant.example")
    with pytest.raises(IdentityError) as info:
        p.check("short")
    assert info.value.code is Code.PASSWORD_REJECTED


def test_hasher_is_argon2id_with_rehash_on_parameter_change() -> None:
    weak = Hasher(memory_kib=8192, time_cost=1, workers=1)
    stored = weak.hash_sync("some passphrase here")
    assert stored.startswith("$argon2id$v=19$m=8192,t=1,p=1$")
    assert weak.verify_sync(stored, "some passphrase here")
    assert not weak.verify_sync(stored, "wrong")
    assert not weak.verify_sync(None, "anything"), "the dummy hash never matches"
    assert not weak.needs_rehash(stored)
    owasp = Hasher(workers=1)
    assert owasp.params == {"m_kib": 19456, "t": 2, "p": 1}
    assert owasp.needs_rehash(stored) and owasp.needs_rehash("not a hash")
    assert MAX_BYTES == 1024
    weak.close()
    owasp.close()


# ---- buckets and backoff -----------------------------------------------------------------------


def test_token_bucket_refills_at_its_rate_up_to_capacity() -> None:
    b = Bucket(capacity=3, rate=0.5)
    tokens, t = 3.0, 0.0
    for _ in range(3):
        ok, tokens, _ = take(b, tokens, t, t)
        assert ok
    ok, tokens, retry = take(b, tokens, t, t)
    assert not ok and retry == pytest.approx(2.0)
    ok, tokens, _ = take(b, tokens, t, t + 2.0)
    assert ok
    ok, left, _ = take(b, 0.0, 0.0, 1e6)  # a long idle bucket holds capacity, not more
    assert ok and left == pytest.approx(2.0)


def test_backoff_grows_exponentially_and_locks_only_normal_accounts() -> None:
    b = Backoff(free_failures=3, base_s=1.0, max_s=300.0, max_failures=100)
    assert [b.delay(n) for n in (0, 2, 3, 4, 5, 8)] == [0, 0, 1, 2, 4, 32]
    assert b.delay(50) == 300.0
    assert b.wait(5, last_failure=100.0, now=101.0, critical=False) == pytest.approx(3.0)
    assert b.wait(5, last_failure=100.0, now=110.0, critical=False) == 0.0
    assert b.wait(100, last_failure=0.0, now=1e9, critical=False) == float("inf")
    assert b.wait(100, last_failure=0.0, now=1e9, critical=True) == 0.0  # slowed, never locked
    assert b.wait(1000, last_failure=10.0, now=11.0, critical=True) == pytest.approx(299.0)


# ---- audit -------------------------------------------------------------------------------------


class ListSink:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes]] = []

    def publish(self, topic: str | bytes, payload: bytes) -> None:
        assert isinstance(topic, bytes)
        self.sent.append((topic, payload))


def test_audit_events_are_typed_published_and_hash_chained() -> None:
    sink = ListSink()
    a = Auditor(sink, clock=lambda: 1000.0)
    a.emit(AuditEvent("auth.login", "deny", reason="BAD_PASSWORD", target="bob", source="10.1"))
    a.emit(AuditEvent("auth.login", "allow", actor="u1", target="u1", jti="j1", trace_id="t"))
    events = [json.loads(p) for t, p in sink.sent if t == b"audit"]
    assert len(events) == 2 and a.denials == 1
    first = events[0]
    for key in ("actor", "action", "target", "decision", "reason", "source", "jti", "trace_id"):
        assert key in first
    assert first["prev"] == GENESIS and events[1]["prev"] == first["hash"]
    assert verify_chain(events)
    tampered = [dict(e) for e in events]
    tampered[0]["reason"] = "OK"
    assert not verify_chain(tampered)
    assert not verify_chain(events[::-1])


# ---- frames and envelopes ----------------------------------------------------------------------


def test_decode_frames_like_the_original() -> None:
    req = protocol.decode(
        [b"auth", b"login", b'{"identifier": "a", "header": {"request_id": "r1"}}']
    )
    assert (req.category, req.operation, req.request_id) == ("auth", "login", "r1")
    assert protocol.decode([b"x"]).category == "health"  # fewer than 2 frames: health
    assert protocol.decode([b"bogus", b"op", b"{}"]).category == "health"
    assert protocol.decode([b"auth", b"jwks"]).data == {}


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([b"auth", b"login", b"{", b"x"], Code.INVALID_MESSAGE),
        ([b"a" * 100, b"login", b"{}"], Code.INVALID_MESSAGE),
        ([b"auth", b"login", b"{bad"], Code.INVALID_REQUEST),
        ([b"auth", b"login", b"[1]"], Code.INVALID_REQUEST),
        ([b"auth", b"login", b'{"n": ' + b"1" * 5000 + b"}"], Code.INVALID_REQUEST),
        ([b"auth", b"login", b"[" * 100_000], Code.INVALID_REQUEST),
        ([b"auth", b"login", b" " * (protocol.MAX_BODY_BYTES + 1)], Code.INVALID_REQUEST),
    ],
)
def test_decode_refuses_hostile_frames(frames: list[bytes], code: Code) -> None:
    with pytest.raises(IdentityError) as info:
        protocol.decode(frames)
    assert info.value.code is code


def test_replies_carry_both_envelopes() -> None:
    ok = json.loads(protocol.success("r1", {"access_token": "t"}, 5.0))
    assert ok["success"] and ok["data"] == {"access_token": "t"} and ok["access_token"] == "t"
    assert ok["header"] == {"request_id": "r1", "success": True, "timestamp": 5}
    err = IdentityError(Code.LOGIN_FAILED, "invalid credentials", retry_after=2.0)
    bad = json.loads(protocol.failure("", err, 5.0))
    assert bad["success"] is False and bad["code"] == "LOGIN_FAILED"
    assert (
        bad["header"]["error"] == "invalid credentials" and bad["header"]["request_id"] == "unknown"
    )
    assert bad["detail"] == {"retry_after": 2.0}


# ---- signing keys ------------------------------------------------------------------------------


def _jwks_kids(ring: KeyRing) -> list[tuple[str, str]]:
    return [(k["kid"], k["status"]) for k in ring.jwks()["keys"]]


def test_key_overlap_next_active_retired(tmp_path: Path) -> None:
    generate(tmp_path, kid="k2", state="next")
    generate(tmp_path, kid="k1")
    generate(tmp_path / "x", kid="k0")
    (tmp_path / "x" / "active.k0.pem").rename(tmp_path / "retired.k0.pem")
    ring = KeyRing.from_dir(tmp_path)
    assert ring.active.kid == "k1"
    assert _jwks_kids(ring) == [("k2", "next"), ("k1", "active"), ("k0", "retired")]
    assert all("d" not in k for k in ring.jwks()["keys"]), "never publish private parts"
    # rotate: next -> active, active -> retired
    (tmp_path / "active.k1.pem").rename(tmp_path / "retired.k1.pem")
    (tmp_path / "next.k2.pem").rename(tmp_path / "active.k2.pem")
    assert KeyRing.from_dir(tmp_path).active.kid == "k2"


def test_keys_fail_closed(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError, match="keygen"):
        KeyRing.from_dir(tmp_path / "missing")
    tmp_path.joinpath("empty").mkdir()
    with pytest.raises(SigningKeyError, match="keygen"):
        KeyRing.from_dir(tmp_path / "empty")
    path = generate(tmp_path / "loose")
    os.chmod(path, 0o644)
    with pytest.raises(SigningKeyError, match="chmod 600"):
        KeyRing.from_dir(tmp_path / "loose")
    generate(tmp_path / "two", kid="a", state="next")
    with pytest.raises(SigningKeyError, match="exactly one active"):
        KeyRing.from_dir(tmp_path / "two")
    with pytest.raises(FileExistsError):
        generate(tmp_path / "loose")


def test_single_key_file_has_a_stable_thumbprint_kid(tmp_path: Path) -> None:
    path = generate(tmp_path, kid="ignored")
    a, b = KeyRing.from_file(path), KeyRing.from_file(path)
    assert a.active.kid == b.active.kid == thumbprint(a.active.public)[:16]
    assert a.active.alg == "ES256" and oct(path.stat().st_mode & 0o777) == "0o600"


def test_eddsa_keys(tmp_path: Path) -> None:
    ring = KeyRing.from_file(generate(tmp_path, alg="EdDSA"))
    jwk: dict[str, Any] = ring.jwks()["keys"][0]
    assert (jwk["kty"], jwk["crv"], jwk["alg"]) == ("OKP", "Ed25519", "EdDSA")
