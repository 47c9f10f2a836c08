"""The token conformance bar against a real identity process and its published JWKS.

Each hostile token is refused by an offline :class:`Verifier` holding the JWKS fetched over
MDP (``auth/jwks``) with its precise reason, refused by identity's ``auth/validate`` with the
same reason, and that refusal is an audit event on the event bus.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from identitykit import ADMIN, ADMIN_PASSWORD, BusTap, Identity
from tests.kit import BrokerProcess, ServiceProcess, wait_for

from plantd.common import contract
from plantd.common.auth import Reason, TokenError, Verifier
from plantd.identity.keys import KeyRing

pytestmark = pytest.mark.integration

ISS = "plantd-identity"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict[str, Any], claims: dict[str, Any], sig: bytes = b"") -> str:
    h = _b64(json.dumps(header).encode())
    p = _b64(json.dumps(claims).encode())
    return f"{h}.{p}.{_b64(sig)}"


def _hs256(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    signing = _unsigned(header, claims).rsplit(".", 1)[0]
    mac = hmac.new(secret, signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{_b64(mac)}"


@pytest.fixture(scope="module")
def env(broker: BrokerProcess, identity: ServiceProcess, jwt_dir: Path) -> Iterator[dict[str, Any]]:
    assert broker.keys_dir is not None
    c = Identity(broker)
    t = BusTap(broker.bus("event")[1], broker.keys_dir, (b"audit",))
    try:

        def seen() -> bool:
            c.call("auth", "validate", {"token": "x.y.z"})
            return bool(t.events(b"audit"))

        wait_for(seen, 20, "the first audit event on the event bus", interval=0.2)
        login = c.login(ADMIN, ADMIN_PASSWORD, ip_address="192.0.2.1")
        assert login["success"], login
        yield {
            "client": c,
            "tap": t,
            "jwks": c.ok("auth", "jwks"),
            "ring": KeyRing.from_dir(jwt_dir),  # the test holds the real key: forge claims
            "good": login["access_token"],
            "sub": str(login["user"]["id"]),
        }
    finally:
        t.close()
        c.close()


def _claims(sub: str, **over: Any) -> dict[str, Any]:
    now = time.time()
    base: dict[str, Any] = {
        "iss": ISS,
        "aud": contract.SERVICE_STATE,
        "sub": sub,
        "jti": uuid.uuid4().hex,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "token_type": "access",
        "permissions": ["state:system:admin"],
    }
    base.update(over)
    return base


def _reheader(token: str, header: dict[str, Any]) -> str:
    return ".".join([_b64(json.dumps(header).encode()), *token.split(".")[1:]])


def _cases(env: dict[str, Any]) -> dict[str, tuple[str, Reason]]:
    ring: KeyRing = env["ring"]
    key, kid, sub = ring.active.private, ring.active.kid, env["sub"]
    pub_pem = ring.active.public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    jwk_x = next(k for k in env["jwks"]["keys"] if k["kid"] == kid)["x"].encode()
    other = ec.generate_private_key(ec.SECP256R1())

    def signed(claims: dict[str, Any], *, with_key: Any = key, with_kid: str = kid) -> str:
        return jwt.encode(claims, with_key, algorithm="ES256", headers={"kid": with_kid})

    return {
        "alg none": (_unsigned({"alg": "none", "kid": kid}, _claims(sub)), Reason.ALG_NOT_ALLOWED),
        "alg None": (_unsigned({"alg": "None", "kid": kid}, _claims(sub)), Reason.ALG_NOT_ALLOWED),
        "HS256 keyed with the public PEM": (
            _hs256({"alg": "HS256", "kid": kid, "typ": "JWT"}, _claims(sub), pub_pem),
            Reason.ALG_NOT_ALLOWED,
        ),
        "HS256 keyed with the JWK x": (
            _hs256({"alg": "HS256", "kid": kid}, _claims(sub), jwk_x),
            Reason.ALG_NOT_ALLOWED,
        ),
        "EdDSA header on an ES256 key": (
            _reheader(signed(_claims(sub)), {"alg": "EdDSA", "kid": kid}),
            Reason.ALG_NOT_ALLOWED,
        ),
        "wrong audience": (signed(_claims(sub, aud="org.plantd.Other")), Reason.WRONG_AUDIENCE),
        "wrong issuer": (signed(_claims(sub, iss="evil-identity")), Reason.WRONG_ISSUER),
        "expired": (
            signed(
                _claims(sub, iat=time.time() - 900, nbf=time.time() - 900, exp=time.time() - 60)
            ),
            Reason.EXPIRED,
        ),
        "not yet valid": (
            signed(
                _claims(sub, iat=time.time() + 600, nbf=time.time() + 600, exp=time.time() + 900)
            ),
            Reason.NOT_YET_VALID,
        ),
        "unknown kid": (signed(_claims(sub), with_key=other, with_kid="nope"), Reason.UNKNOWN_KID),
        "forged signature": (signed(_claims(sub), with_key=other), Reason.BAD_SIGNATURE),
        "no exp": (
            signed({k: v for k, v in _claims(sub).items() if k != "exp"}),
            Reason.MISSING_CLAIM,
        ),
        "not a JWT": ("definitely-not-a-token", Reason.MALFORMED),
        "oversized": ("a." + "b" * 9000 + ".c", Reason.TOO_LARGE),
    }


def test_each_hostile_token_is_refused_offline_by_validate_and_audited(
    env: dict[str, Any],
) -> None:
    verifier = Verifier(issuer=ISS, audience=contract.SERVICE_STATE, jwks=env["jwks"])
    assert verifier.verify(env["good"]).subject == env["sub"]
    c: Identity = env["client"]
    tap: BusTap = env["tap"]
    for name, (token, reason) in _cases(env).items():
        with pytest.raises(TokenError) as info:
            verifier.verify(token)
        assert info.value.reason is reason, f"{name}: {info.value}"
        doc = c.ok("auth", "validate", {"token": token})
        if reason is Reason.WRONG_AUDIENCE:
            # identity serves several audiences; a token for none of them is refused the same way
            assert doc["valid"] is False and doc["reason"] == reason.value, (name, doc)
        else:
            assert doc == doc | {"valid": False, "reason": reason.value}, (name, doc)

        def audited(r: Reason = reason) -> bool:
            return any(
                e["action"] == "auth.validate"
                and e["decision"] == "deny"
                and e["reason"] == r.value
                for e in tap.events(b"audit")
            )

        wait_for(audited, 5, f"an audit event for {name}")


def test_audit_events_form_one_hash_chain(env: dict[str, Any]) -> None:
    from plantd.identity.audit import verify_chain

    events = env["tap"].events(b"audit")
    assert len(events) >= 3
    producer = events[-1]["producer"]
    mine = [e for e in events if e["producer"] == producer]
    # The tap may have missed the first events (slow joiner), never later ones.
    seqs = [e["seq"] for e in mine]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert verify_chain(mine)
    forged = [dict(e) for e in mine]
    forged[len(forged) // 2]["decision"] = "allow"
    assert not verify_chain(forged)
