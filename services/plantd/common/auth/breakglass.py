"""Break-glass tokens: signed offline with a key kept apart from identity's signing keys.

When identity (or the store behind it) is down, an operator with the offline private key mints
a short access token (``python -m plantd.identity.breakglass mint``). A verifier accepts one
only when it was given the break-glass PUBLIC key (``Verifier(break_glass_jwks=...)``), only
signed by that key, only with claim ``break_glass: true``, and only for at most
:data:`MAX_LIFETIME_S` (``exp - iat``). Every accepted one is logged at warning level with
``break_glass: true`` and counted (``Verifier.break_glass_accepted``); identity audits each use.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

MAX_LIFETIME_S: Final = 3600
KID_PREFIX: Final = "breakglass-"
MAX_KEY_FILE_BYTES: Final = 16 * 1024


class BreakGlassKeyError(ValueError):
    """The break-glass key file is unusable; the message names it and the fix."""


def public_jwk(public: Any) -> dict[str, Any]:
    """The JWK of a break-glass public key; kid = ``breakglass-`` + its RFC 7638 thumbprint."""
    if isinstance(public, ed25519.Ed25519PublicKey):
        jwk: dict[str, Any] = OKPAlgorithm.to_jwk(public, as_dict=True)
        members: tuple[str, ...] = ("crv", "kty", "x")
        alg = "EdDSA"
    elif isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1":
        jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        members, alg = ("crv", "kty", "x", "y"), "ES256"
    else:
        raise BreakGlassKeyError("a break-glass key is Ed25519 or EC P-256")
    canon = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    digest = base64.urlsafe_b64encode(hashlib.sha256(canon.encode()).digest()).rstrip(b"=")
    jwk.update({"kid": KID_PREFIX + digest.decode()[:16], "alg": alg, "use": "sig"})
    return jwk


def load_public(path: Path) -> dict[str, Any]:
    """A JWKS holding the break-glass public key in ``path`` (PEM; a private key is refused:
    the private half never belongs on a server)."""
    try:
        if path.stat().st_size > MAX_KEY_FILE_BYTES:
            raise BreakGlassKeyError(f"{path} is too large for a key file")
        data = path.read_bytes()
    except OSError as exc:
        raise BreakGlassKeyError(
            f"cannot read the break-glass key {path}: {exc.strerror}"
        ) from None
    if b"PRIVATE KEY" in data:
        raise BreakGlassKeyError(
            f"{path} holds a PRIVATE key: give servers only the public half "
            "(breakglass.pub.pem) and keep the private one offline"
        )
    try:
        public = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise BreakGlassKeyError(f"{path} is not a PEM public key: {exc}") from None
    return {"keys": [public_jwk(public)]}
