"""Why a token was refused: one code per reason, the same in every verifier and in audit."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    MALFORMED = "TOKEN_MALFORMED"  # not three base64url parts of JSON, or no token at all
    TOO_LARGE = "TOKEN_TOO_LARGE"  # over the verifier's byte budget: refused before parsing
    ALG_NOT_ALLOWED = "TOKEN_ALG_NOT_ALLOWED"  # alg none, HS*, or not the key's own algorithm
    UNKNOWN_KID = "TOKEN_UNKNOWN_KID"  # no such key in the JWKS (or no kid)
    BAD_SIGNATURE = "TOKEN_BAD_SIGNATURE"
    WRONG_AUDIENCE = "TOKEN_WRONG_AUDIENCE"
    WRONG_ISSUER = "TOKEN_WRONG_ISSUER"
    EXPIRED = "TOKEN_EXPIRED"
    NOT_YET_VALID = "TOKEN_NOT_YET_VALID"  # nbf or iat in the future (beyond the leeway)
    MISSING_CLAIM = "TOKEN_MISSING_CLAIM"
    REVOKED = "TOKEN_REVOKED"  # issued before the user's not_before (logout, password change)
    WRONG_TYPE = "TOKEN_WRONG_TYPE"  # e.g. not an access token
    BREAK_GLASS_INVALID = "TOKEN_BREAK_GLASS_INVALID"  # not a valid break-glass token (below)


_HINTS: dict[Reason, str] = {
    Reason.EXPIRED: "get a new one with `plant auth refresh` or `plant auth login`",
    Reason.REVOKED: "the session ended (logout, password change or deactivation): log in again",
    Reason.WRONG_AUDIENCE: "log in for this service (the token was issued for another one)",
    Reason.UNKNOWN_KID: "the signing key is not (or no longer) published: log in again",
}


class TokenError(Exception):
    """A refused token: ``reason`` is the code, the message says what failed and what to do."""

    def __init__(self, reason: Reason, detail: str) -> None:
        hint = _HINTS.get(reason)
        super().__init__(f"{detail}; {hint}" if hint else detail)
        self.reason = reason
        self.detail = detail
