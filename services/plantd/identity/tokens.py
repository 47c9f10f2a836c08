"""Minting tokens (pure but for the clock and randomness passed in).

Access tokens: JWT signed by the key ring's active key (ES256 by default, EdDSA optional), header
``kid``; claims ``iss``, ``aud`` (the target services), ``sub`` (user id), ``jti``, ``iat`` and
``nbf`` (millisecond precision, so a login right after a logout is not caught by the logout's
``not_before``), ``exp``, plus the original's ``user_id``, ``email``, ``username``, ``roles``,
``permissions``, ``organizations`` and ``token_type: "access"``.

Refresh tokens are opaque: ``pld_rt_`` + 32 random bytes (base64url); only their sha256 is
stored (a high-entropy secret needs no slow hash).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import jwt

from plantd.identity.keys import KeyRing

REFRESH_PREFIX: Final = "pld_rt_"
MAX_REFRESH_CHARS: Final = 128


@dataclass(frozen=True, slots=True)
class Minted:
    token: str
    jti: str
    issued_at: float
    expires_at: float


def ms(t: float) -> float:
    return round(t, 3)


class Issuer:
    def __init__(self, keys: KeyRing, *, issuer: str, access_ttl_s: int) -> None:
        self.keys = keys
        self.issuer = issuer
        self.access_ttl_s = access_ttl_s

    def access(
        self,
        *,
        subject: str,
        audience: Sequence[str],
        now: float,
        claims: dict[str, Any] | None = None,
    ) -> Minted:
        key = self.keys.active
        assert key.private is not None  # KeyRing guarantees an active private key
        jti = uuid.uuid4().hex
        iat = ms(now)
        exp = int(now) + self.access_ttl_s
        body: dict[str, Any] = dict(claims or {})
        body.update(
            {
                "iss": self.issuer,
                "sub": subject,
                "aud": list(audience) if len(audience) != 1 else audience[0],
                "jti": jti,
                "iat": iat,
                "nbf": iat,
                "exp": exp,
                "token_type": "access",
            }
        )
        token = jwt.encode(body, key.private, algorithm=key.alg, headers={"kid": key.kid})
        return Minted(token, jti, iat, float(exp))


def new_refresh_token() -> str:
    return REFRESH_PREFIX + secrets.token_urlsafe(32)


def refresh_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def looks_like_refresh(token: object) -> bool:
    return (
        isinstance(token, str)
        and token.startswith(REFRESH_PREFIX)
        and len(token) <= MAX_REFRESH_CHARS
    )
