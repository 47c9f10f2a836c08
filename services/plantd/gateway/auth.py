"""Call metadata -> the caller's token and request id, the token verified offline.

The gateway does not authorize: the state service does, from the token the gateway forwards
in the request's ``token`` field. The gateway verifies the token first (signature, issuer,
audience, expiry, revocation: :class:`plantd.common.auth.Verifier`) so a missing or bad token
costs no bus round trip, and the state service's own check is a claims-cache hit.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from plantd.api.errors import Origin
from plantd.common.auth import Reason, TokenError, Verifier
from plantd.gateway.state_map import RpcFailure

AUTHORIZATION: Final = "authorization"
REQUEST_ID: Final = "x-request-id"
MAX_REQUEST_ID: Final = 128  # longer ids are cut: they go into logs and bus requests
_BEARER: Final = "bearer "

# Advice, not a secret.
LOGIN_HINT: Final = (
    "send metadata `authorization: Bearer <access token>` (log in with "
    "`plant auth login` and use the access token it stores, or identity's auth/login)"
)

Metadata = Iterable[tuple[str, str | bytes]]


def read_metadata(metadata: Metadata | None) -> tuple[str | None, str | None]:
    """(the Bearer token, the ``x-request-id``) of a call's metadata; None when absent.

    A malformed ``authorization`` value (not ``Bearer <token>``) raises :class:`RpcFailure`."""
    token: str | None = None
    request_id: str | None = None
    for key, value in metadata or ():
        if key == AUTHORIZATION:
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            if text[: len(_BEARER)].lower() != _BEARER or not text[len(_BEARER) :].strip():
                raise RpcFailure(
                    Origin.TOKEN,
                    Reason.MALFORMED.value,
                    f"the authorization metadata is not `Bearer <token>`; {LOGIN_HINT}",
                )
            token = text[len(_BEARER) :].strip()
        elif key == REQUEST_ID and isinstance(value, str) and value:
            request_id = value[:MAX_REQUEST_ID]
    return token, request_id


class Authenticator:
    """Checks a call's token before it is forwarded (``verifier`` None: auth off)."""

    def __init__(self, verifier: Verifier | None) -> None:
        self.verifier = verifier

    def check(self, token: str | None) -> None:
        """Raise :class:`RpcFailure` (UNAUTHENTICATED) unless ``token`` verifies."""
        if self.verifier is None:
            return  # --auth off: whatever was sent goes on; the state service decides
        if not token:
            raise RpcFailure(
                Origin.TOKEN, Reason.MALFORMED.value, f"the call carries no token; {LOGIN_HINT}"
            )
        try:
            self.verifier.verify(token)
        except TokenError as exc:
            text = str(exc)
            if "plant auth" not in text:  # the verifier's own hint says it for some reasons
                text += "; send a current access token (`plant auth login`)"
            raise RpcFailure(Origin.TOKEN, exc.reason.value, text) from None
