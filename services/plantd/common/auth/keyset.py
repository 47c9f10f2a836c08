"""A JWKS document -> the public keys a verifier trusts, each pinned to its one algorithm.

Only asymmetric keys are accepted (EC P-256 for ES256, OKP Ed25519 for EdDSA); a JWK of kty
``oct`` (an HMAC secret) or any other algorithm is refused when the set is loaded, so a token
can never be checked with a public key used as an HMAC secret (HS/ES confusion,
CVE-2026-48526 class) nor with ``alg: none``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import jwt
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

ALLOWED_ALGS: Final = frozenset({"ES256", "EdDSA"})
MAX_JWKS_KEYS: Final = 32
MAX_JWKS_BYTES: Final = 64 * 1024


class KeySetError(ValueError):
    """The JWKS document is unusable; the message names the key and why."""


@dataclass(frozen=True, slots=True)
class PublicKey:
    kid: str
    alg: str
    key: Any  # a cryptography public key object
    status: str = "active"  # next | active | retired (informational: all of them verify)


def _alg_of(jwk: Mapping[str, Any]) -> str:
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if kty == "EC" and crv == "P-256":
        return "ES256"
    if kty == "OKP" and crv == "Ed25519":
        return "EdDSA"
    raise KeySetError(f"unsupported key type kty={kty!r} crv={crv!r}: only EC P-256 and Ed25519")


def parse_jwks(doc: Mapping[str, Any] | str | bytes) -> dict[str, PublicKey]:
    """kid -> key. Raises :class:`KeySetError` for anything but a set of ES256/EdDSA keys."""
    if isinstance(doc, str | bytes):
        if len(doc) > MAX_JWKS_BYTES:
            raise KeySetError(f"JWKS document over {MAX_JWKS_BYTES} bytes")
        try:
            doc = json.loads(doc)
        except ValueError as exc:
            raise KeySetError(f"JWKS is not JSON: {exc}") from None
    if not isinstance(doc, Mapping) or not isinstance(doc.get("keys"), list):
        raise KeySetError('a JWKS is an object {"keys": [...]}')
    keys: list[Any] = doc["keys"]
    if len(keys) > MAX_JWKS_KEYS:
        raise KeySetError(f"JWKS holds {len(keys)} keys; at most {MAX_JWKS_KEYS}")
    out: dict[str, PublicKey] = {}
    for jwk in keys:
        if not isinstance(jwk, Mapping):
            raise KeySetError("every JWKS entry must be an object")
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid:
            raise KeySetError("every JWKS key needs a kid")
        if "d" in jwk:
            raise KeySetError(f"key {kid!r} carries private material: publish public keys only")
        alg = _alg_of(jwk)
        if jwk.get("alg", alg) != alg:
            raise KeySetError(f"key {kid!r} says alg {jwk.get('alg')!r} but is a {alg} key")
        data = json.dumps(dict(jwk))
        try:
            key = ECAlgorithm.from_jwk(data) if alg == "ES256" else OKPAlgorithm.from_jwk(data)
        except (jwt.InvalidKeyError, ValueError) as exc:
            raise KeySetError(f"key {kid!r} is invalid: {exc}") from None
        if kid in out:
            raise KeySetError(f"kid {kid!r} appears twice")
        status = jwk.get("status", "active")
        out[kid] = PublicKey(kid, alg, key, status if isinstance(status, str) else "active")
    return out
