"""The offline verifier: every refusal reason, the claims cache and not_before revocation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from plantd.common.auth import KeySetError, NotBeforeMap, Reason, TokenError, Verifier, parse_jwks
from plantd.identity.keys import KeyRing, generate
from plantd.identity.tokens import Issuer

pytestmark = pytest.mark.unit

ISS = "plantd-identity"
AUD = "org.plantd.State"


class Clock:
    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


@pytest.fixture(params=["ES256", "EdDSA"])
def ring(request: pytest.FixtureRequest, tmp_path: Path) -> KeyRing:
    generate(tmp_path, alg=request.param)
    return KeyRing.from_dir(tmp_path)


def _mint(ring: KeyRing, now: float, **claims: Any) -> str:
    issuer = Issuer(ring, issuer=ISS, access_ttl_s=900)
    return issuer.access(subject="u1", audience=[AUD], now=now, claims=claims).token


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def test_a_minted_token_verifies_with_its_claims(ring: KeyRing) -> None:
    clock = Clock()
    v = Verifier(issuer=ISS, audience=AUD, jwks=ring.jwks(), clock=clock)
    claims = v.verify(_mint(ring, clock.t, permissions=["state:data:read"], roles=["r"]))
    assert claims.subject == "u1" and claims.audience == (AUD,) and claims.roles == ("r",)
    assert claims.allows("state:data:read", "s") and not claims.allows("state:data:write", "s")
    assert claims.kid == ring.active.kid
    assert claims.expires_at - claims.issued_at == pytest.approx(900, abs=1)


def test_alg_none_and_hs256_with_the_public_key_are_refused(ring: KeyRing) -> None:
    v = Verifier(issuer=ISS, audience=AUD, jwks=ring.jwks())
    good = _mint(ring, time.time())
    _, payload, _ = good.split(".")
    kid = ring.active.kid
    none = f"{_b64(json.dumps({'alg': 'none', 'kid': kid}).encode())}.{payload}."
    jwk = ring.jwks()["keys"][0]
    secret = json.dumps(jwk).encode()
    head = _b64(json.dumps({"alg": "HS256", "kid": kid}).encode())
    mac = hmac.new(secret, f"{head}.{payload}".encode(), hashlib.sha256).digest()
    for bad in (none, f"{head}.{payload}.{_b64(mac)}"):
        with pytest.raises(TokenError) as info:
            v.verify(bad)
        assert info.value.reason is Reason.ALG_NOT_ALLOWED


def test_the_header_alg_must_be_the_keys_own(ring: KeyRing) -> None:
    v = Verifier(issuer=ISS, audience=AUD, jwks=ring.jwks())
    _, payload, sig = _mint(ring, time.time()).split(".")
    other = "EdDSA" if ring.active.alg == "ES256" else "ES256"
    head = _b64(json.dumps({"alg": other, "kid": ring.active.kid}).encode())
    with pytest.raises(TokenError) as info:
        v.verify(f"{head}.{payload}.{sig}")
    assert info.value.reason is Reason.ALG_NOT_ALLOWED


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"aud": "org.plantd.Other"}, Reason.WRONG_AUDIENCE),
        ({"iss": "someone-else"}, Reason.WRONG_ISSUER),
        ({"exp": -60}, Reason.EXPIRED),
        ({"nbf": 120, "iat": 120}, Reason.NOT_YET_VALID),
        ({"token_type": "refresh"}, Reason.WRONG_TYPE),
    ],
)
def test_claim_checks(ring: KeyRing, over: dict[str, Any], reason: Reason) -> None:
    now = time.time()
    claims: dict[str, Any] = {
        "iss": ISS, "aud": AUD, "sub": "u1", "jti": "j", "iat": now, "nbf": now, "exp": now + 60,
    }  # fmt: skip
    for k, v in over.items():
        claims[k] = now + v if k in ("exp", "nbf", "iat") else v
    key = ring.active
    token = jwt.encode(claims, key.private, algorithm=key.alg, headers={"kid": key.kid})
    with pytest.raises(TokenError) as info:
        Verifier(issuer=ISS, audience=AUD, jwks=ring.jwks()).verify(token)
    assert info.value.reason is reason


def test_unknown_kid_and_forged_signature(ring: KeyRing) -> None:
    v = Verifier(issuer=ISS, audience=AUD, jwks=ring.jwks())
    now = time.time()
    claims = {"iss": ISS, "aud": AUD, "sub": "u", "jti": "j", "iat": now, "exp": now + 60}
    alg = ring.active.alg
    other: Any = (
        ec.generate_private_key(ec.SECP256R1())
        if alg == "ES256"
        else ed25519.Ed25519PrivateKey.generate()
    )
    for kid, reason in (("nope", Reason.UNKNOWN_KID), (ring.active.kid, Reason.BAD_SIGNATURE)):
        token = jwt.encode(claims, other, algorithm=alg, headers={"kid": kid})
        with pytest.raises(TokenError) as info:
            v.verify(token)
        assert info.value.reason is reason
    assert v.unknown_kids == 1


def test_oversized_and_malformed_tokens_cost_nothing(ring: KeyRing) -> None:
    v = Verifier(issuer=ISS, audience=AUD, jwks=ring.jwks(), max_token_bytes=1000)
    for token, reason in (
        ("x" * 1001, Reason.TOO_LARGE),
        ("", Reason.MALFORMED),
        ("a.b", Reason.MALFORMED),
        ("!!.!!.!!", Reason.MALFORMED),
    ):
        with pytest.raises(TokenError) as info:
            v.verify(token)
        assert info.value.reason is reason
    assert v.misses <= 2 and len(v) == 0


def test_cache_hit_skips_the_signature_but_not_revocation_or_expiry(ring: KeyRing) -> None:
    clock = Clock()
    nb = NotBeforeMap()
    v = Verifier(issuer=ISS, audience=AUD, jwks=ring.jwks(), not_before=nb, clock=clock)
    token = _mint(ring, clock.t)
    v.verify(token)
    v.verify(token)
    assert (v.misses, v.hits) == (1, 1)
    clock.t += 0.5
    assert nb.apply(json.dumps({"sub": "u1", "not_before": clock.t}).encode())
    with pytest.raises(TokenError) as info:
        v.verify(token)
    assert info.value.reason is Reason.REVOKED
    fresh = _mint(ring, clock.t + 0.01)  # a login after the logout is fine
    assert v.verify(fresh).subject == "u1"
    clock.t += 1000
    with pytest.raises(TokenError) as info:
        v.verify(fresh)
    assert info.value.reason is Reason.EXPIRED


def test_cache_is_bounded_and_dropped_with_its_key(ring: KeyRing, tmp_path: Path) -> None:
    clock = Clock()
    v = Verifier(issuer=ISS, audience=AUD, jwks=ring.jwks(), cache_entries=3, clock=clock)
    for i in range(5):
        v.verify(_mint(ring, clock.t + i * 0.001))
    assert len(v) == 3
    other_dir = tmp_path / "other"
    generate(other_dir)
    v.set_jwks(KeyRing.from_dir(other_dir).jwks())
    assert len(v) == 0, "claims signed by a key that left the JWKS must not stay cached"


def test_not_before_map_ignores_junk_and_never_goes_back() -> None:
    nb = NotBeforeMap(max_entries=4)
    assert nb.apply(b'{"sub": "a", "not_before": 10}')
    assert not nb.apply(b'{"sub": "a", "not_before": 5}')
    assert nb.get("a") == 10
    for junk in (b"{", b"[]", b'{"sub": 1, "not_before": 1}', b'{"sub": "a", "not_before": true}',
                 b'{"sub": "a", "not_before": 1e300}', b"x" * 2000):  # fmt: skip
        assert not nb.apply(junk)
    assert nb.rejected == 6
    for i in range(10):
        nb.bump(f"u{i}", 100 + i)
    assert len(nb) <= 4 and nb.get("u9") == 109


@pytest.mark.parametrize(
    "doc",
    [
        {"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]},
        {"keys": [{"kty": "RSA", "n": "x", "e": "AQAB", "kid": "r"}]},
        {"keys": [{"kty": "EC", "crv": "P-384", "x": "a", "y": "b", "kid": "p"}]},
        {"nokeys": []},
        {"keys": [{"kty": "EC", "crv": "P-256", "x": "a", "y": "b"}]},
    ],
)
def test_jwks_with_secret_or_foreign_keys_is_refused(doc: dict[str, Any]) -> None:
    with pytest.raises(KeySetError):
        parse_jwks(doc)


def test_jwks_refuses_private_material(ring: KeyRing) -> None:
    jwk = dict(ring.jwks()["keys"][0])
    jwk["d"] = "AAAA"
    with pytest.raises(KeySetError, match="private"):
        parse_jwks({"keys": [jwk]})
