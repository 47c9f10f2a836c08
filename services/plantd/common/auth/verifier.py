"""The one offline verifier of plantd access tokens (state, gateway and identity itself use it).

``Verifier.verify(token)`` -> :class:`Claims` or :class:`TokenError`. No network: keys come from
a JWKS document (``set_jwks``), revocation from a :class:`NotBeforeMap` fed by the event bus.

Order of checks, each refusing with its own :class:`Reason`:

1. size (bytes) before any parsing; three dot-separated parts;
2. header: ``alg`` must be ES256 or EdDSA (``none`` and every ``HS*`` refused outright), ``kid``
   must name a trusted key, and the header ``alg`` must be that key's own algorithm (PyJWT is
   handed exactly one algorithm, never a list mixing families);
3. signature, then ``iss``, ``aud`` (this verifier's audience must be in the token's), ``exp``,
   ``nbf``/``iat`` with a small leeway, required claims ``sub``, ``jti``, ``iat``, ``exp``;
4. ``token_type`` is ``access``;
5. ``iat`` >= the user's ``not_before``.

Break-glass tokens (:mod:`plantd.common.auth.breakglass`) are checked the same way with the
offline key given as ``break_glass_jwks``, and must carry ``break_glass: true`` and live at most
one hour; a token signed by a normal key that claims ``break_glass`` is refused. Without
``break_glass_jwks`` their kid is simply unknown.

Verified claims are cached by sha256(token) until ``exp``: a hit skips 1-3 (the ES256
signature check is ~87 µs, a hit is a hash and two dict lookups) but still runs 5, so a
revocation takes effect on the next request, cached or not. The cache is bounded in entries.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import jwt

from plantd.common.auth.breakglass import MAX_LIFETIME_S as BREAK_GLASS_MAX_S
from plantd.common.auth.errors import Reason, TokenError
from plantd.common.auth.keyset import ALLOWED_ALGS, KeySetError, PublicKey, parse_jwks
from plantd.common.auth.permissions import PermissionSet
from plantd.common.auth.revocation import NotBeforeMap

log = logging.getLogger("plantd.auth")

MAX_TOKEN_BYTES: Final = 8 * 1024
DEFAULT_LEEWAY_S: Final = 5.0
DEFAULT_CACHE_ENTRIES: Final = 10_000
REQUIRED: Final = ["exp", "iat", "iss", "aud", "sub", "jti"]


@dataclass(frozen=True, slots=True)
class Claims:
    subject: str
    issuer: str
    audience: tuple[str, ...]
    jti: str
    issued_at: float
    expires_at: float
    kid: str
    roles: tuple[str, ...] = ()
    permissions: PermissionSet = field(default_factory=lambda: PermissionSet(()))
    raw: Mapping[str, Any] = field(default_factory=dict)
    break_glass: bool = False  # signed by the offline break-glass key

    def allows(self, permission: str, scope: str | None = None) -> bool:
        return self.permissions.allows(permission, scope)


def token_hash(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


def _strings(value: Any, what: str, limit: int = 256) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > limit:
        raise TokenError(Reason.MALFORMED, f"claim {what} must be a list of at most {limit}")
    if not all(isinstance(v, str) for v in value):
        raise TokenError(Reason.MALFORMED, f"claim {what} must hold strings")
    return tuple(value)


class Verifier:
    def __init__(
        self,
        *,
        issuer: str,
        audience: str | Sequence[str],
        jwks: Mapping[str, Any] | None = None,
        not_before: NotBeforeMap | None = None,
        leeway_s: float = DEFAULT_LEEWAY_S,
        max_token_bytes: int = MAX_TOKEN_BYTES,
        cache_entries: int = DEFAULT_CACHE_ENTRIES,
        clock: Callable[[], float] = time.time,
        break_glass_jwks: Mapping[str, Any] | None = None,
    ) -> None:
        self.issuer = issuer
        # One audience (a service verifies tokens meant for it); a list accepts any of them.
        self.audience: str | list[str] = audience if isinstance(audience, str) else list(audience)
        self.not_before = not_before if not_before is not None else NotBeforeMap()
        self.leeway_s = leeway_s
        self.max_token_bytes = max_token_bytes
        self.cache_entries = cache_entries
        self.clock = clock
        self._keys: dict[str, PublicKey] = {}
        self._cache: OrderedDict[bytes, Claims] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.unknown_kids = 0  # a caller may refresh the JWKS when this grows
        self.break_glass_accepted = 0  # every accepted use, cache hits included
        self._break_glass: dict[str, PublicKey] = (
            parse_jwks(break_glass_jwks) if break_glass_jwks is not None else {}
        )
        if jwks is not None:
            self.set_jwks(jwks)

    # ---- keys -----------------------------------------------------------------------------------

    def set_jwks(self, doc: Mapping[str, Any] | str | bytes) -> None:
        """Trust exactly these keys (raises KeySetError, keeping the old set, if unusable).

        Cached claims signed by a key that left the set are dropped."""
        keys = parse_jwks(doc)
        clash = keys.keys() & self._break_glass.keys()
        if clash:  # one kid, two trust levels: refuse rather than guess
            raise KeySetError(f"kid {sorted(clash)[0]!r} is also the break-glass key's")
        self._keys = keys
        stale = [h for h, c in self._cache.items() if c.kid not in keys and not c.break_glass]
        for h in stale:
            del self._cache[h]

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    # ---- verification ---------------------------------------------------------------------------

    def verify(self, token: str | bytes, *, use_cache: bool = True) -> Claims:
        raw = token.encode() if isinstance(token, str) else bytes(token)
        if not raw:
            raise TokenError(Reason.MALFORMED, "no token given")
        if len(raw) > self.max_token_bytes:
            raise TokenError(
                Reason.TOO_LARGE, f"token of {len(raw)} bytes is over {self.max_token_bytes}"
            )
        now = self.clock()
        digest = token_hash(raw) if use_cache else b""
        claims = self._cache.get(digest) if use_cache else None
        fresh = claims is None
        if claims is not None:
            if claims.expires_at + self.leeway_s <= now:
                del self._cache[digest]
                raise TokenError(Reason.EXPIRED, "the token has expired")
            self.hits += 1
        else:
            self.misses += 1
            claims = self._decode(raw, now)
            if use_cache:
                self._remember(digest, claims)
        if claims.issued_at < self.not_before.get(claims.subject):
            raise TokenError(
                Reason.REVOKED, "the token was issued before its user's sessions ended"
            )
        if claims.break_glass:
            self.break_glass_accepted += 1
            if fresh:  # once per token and process (its uses are counted): no log flood
                log.warning(
                    "break-glass token accepted",
                    extra={
                        "break_glass": True,
                        "sub": claims.subject,
                        "jti": claims.jti,
                        "reason": str(claims.raw.get("reason", "")),
                        "kid": claims.kid,
                    },
                )
        return claims

    def _remember(self, digest: bytes, claims: Claims) -> None:
        cache = self._cache
        if len(cache) >= self.cache_entries:
            cache.popitem(last=False)  # oldest first
        cache[digest] = claims

    def _decode(self, raw: bytes, now: float) -> Claims:
        if raw.count(b".") != 2:
            raise TokenError(Reason.MALFORMED, "a token is three dot-separated base64url parts")
        try:
            header = jwt.get_unverified_header(raw)
        except jwt.PyJWTError as exc:
            raise TokenError(Reason.MALFORMED, f"unreadable token header: {exc}") from None
        alg = header.get("alg")
        if alg not in ALLOWED_ALGS:
            raise TokenError(
                Reason.ALG_NOT_ALLOWED, f"algorithm {alg!r} is not accepted (ES256 or EdDSA only)"
            )
        kid = header.get("kid")
        key = self._keys.get(kid) if isinstance(kid, str) else None
        break_glass = False
        if key is None and isinstance(kid, str) and kid in self._break_glass:
            key, break_glass = self._break_glass[kid], True
        if key is None or not isinstance(kid, str):
            self.unknown_kids += 1
            raise TokenError(Reason.UNKNOWN_KID, f"no trusted key with kid {kid!r}")
        if key.alg != alg:
            raise TokenError(
                Reason.ALG_NOT_ALLOWED, f"key {kid!r} is a {key.alg} key, the token says {alg}"
            )
        try:
            doc: dict[str, Any] = jwt.decode(
                raw,
                key.key,
                algorithms=[key.alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": REQUIRED, "strict_aud": False},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError(Reason.EXPIRED, "the token has expired") from None
        except jwt.InvalidAudienceError:
            raise TokenError(
                Reason.WRONG_AUDIENCE, f"the token is not for audience {self.audience!r}"
            ) from None
        except jwt.InvalidIssuerError:
            raise TokenError(
                Reason.WRONG_ISSUER, f"the token is not from {self.issuer!r}"
            ) from None
        except (jwt.ImmatureSignatureError, jwt.InvalidIssuedAtError):
            raise TokenError(Reason.NOT_YET_VALID, "the token is not valid yet") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenError(Reason.MISSING_CLAIM, str(exc)) from None
        except jwt.InvalidSignatureError:
            raise TokenError(
                Reason.BAD_SIGNATURE, "the token's signature does not verify"
            ) from None
        except jwt.PyJWTError as exc:
            raise TokenError(Reason.MALFORMED, f"invalid token: {exc}") from None
        if break_glass or doc.get("break_glass"):
            self._check_break_glass(doc, break_glass)
        return self._claims(doc, kid, now, break_glass)

    @staticmethod
    def _check_break_glass(doc: Mapping[str, Any], signed_by_it: bool) -> None:
        if not signed_by_it:
            raise TokenError(
                Reason.BREAK_GLASS_INVALID, "only the break-glass key signs break-glass tokens"
            )
        if doc.get("break_glass") is not True:
            raise TokenError(
                Reason.BREAK_GLASS_INVALID, "a break-glass token needs claim break_glass: true"
            )
        iat, exp = doc.get("iat"), doc.get("exp")
        if not isinstance(iat, int | float) or not isinstance(exp, int | float):
            raise TokenError(Reason.MALFORMED, "iat and exp must be numbers")
        if exp - iat > BREAK_GLASS_MAX_S:
            raise TokenError(
                Reason.BREAK_GLASS_INVALID,
                f"a break-glass token lives at most {BREAK_GLASS_MAX_S} s; mint a shorter one",
            )

    def _claims(
        self, doc: dict[str, Any], kid: str, now: float, break_glass: bool = False
    ) -> Claims:
        if doc.get("token_type", "access") != "access":
            raise TokenError(Reason.WRONG_TYPE, "not an access token")
        sub, jti, iat, exp = doc["sub"], doc["jti"], doc["iat"], doc["exp"]
        if not isinstance(sub, str) or not isinstance(jti, str):
            raise TokenError(Reason.MALFORMED, "sub and jti must be strings")
        aud = doc["aud"]
        audience = (aud,) if isinstance(aud, str) else _strings(aud, "aud", 16)
        perms = _strings(doc.get("permissions"), "permissions")
        return Claims(
            subject=sub,
            issuer=str(doc["iss"]),
            audience=audience,
            jti=jti,
            issued_at=float(iat),
            expires_at=float(exp),
            kid=kid,
            roles=_strings(doc.get("roles"), "roles"),
            permissions=PermissionSet(perms),
            raw=doc,
            break_glass=break_glass,
        )

    def cache_clear(self) -> None:
        self._cache.clear()

    def __len__(self) -> int:
        return len(self._cache)
