"""Call metadata -> the caller's token, request id and trace context; the token verified offline.

State and identity authorize the calls they receive, from the token the gateway forwards in
the request's ``token`` field. The gateway verifies the token first (signature, issuer,
audience, expiry, revocation: :class:`plantd.common.auth.Verifier`) so a missing or bad token
costs no bus round trip, and the service's own check is a claims-cache hit. Calls the gateway
makes on its own behalf (generic bus calls, publish, subscribe) it authorizes itself from the
verified claims (``plantd.gateway.bus_servicer``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from plantd.api.errors import Origin
from plantd.common.auth import Claims, Reason, TokenError, Verifier
from plantd.gateway.state_map import RpcFailure

AUTHORIZATION: Final = "authorization"
REQUEST_ID: Final = "x-request-id"
TRACEPARENT: Final = "traceparent"
MAX_REQUEST_ID: Final = 128  # longer ids are cut: they go into logs and bus requests
_BEARER: Final = "bearer "
# W3C Trace Context level 1: version-traceid-parentid-flags, lower-case hex; anything else is
# dropped (not refused: tracing must never fail a call).
_TRACEPARENT: Final = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")

# Advice, not a secret.
LOGIN_HINT: Final = (
    "send metadata `authorization: Bearer <access token>` (log in with "
    "`plant auth login` and use the access token it stores, or identity's auth/login)"
)

Metadata = Iterable[tuple[str, str | bytes]]


@dataclass(frozen=True, slots=True)
class CallMetadata:
    token: str | None = None
    request_id: str | None = None
    traceparent: str | None = None
    bad_authorization: bool = False  # an authorization value that is not `Bearer <token>`

    def check_authorization(self) -> None:
        """Raise :class:`RpcFailure` for a malformed ``authorization`` value."""
        if self.bad_authorization:
            raise RpcFailure(
                Origin.TOKEN,
                Reason.MALFORMED.value,
                f"the authorization metadata is not `Bearer <token>`; {LOGIN_HINT}",
            )


def read_metadata(metadata: Metadata | None) -> tuple[str | None, str | None]:
    """(the Bearer token, the ``x-request-id``) of a call's metadata; None when absent.

    A malformed ``authorization`` value (not ``Bearer <token>``) raises :class:`RpcFailure`."""
    meta = read_call_metadata(metadata)
    meta.check_authorization()
    return meta.token, meta.request_id


def read_call_metadata(metadata: Metadata | None) -> CallMetadata:
    """The Bearer token, ``x-request-id`` and a well-formed ``traceparent``; None when absent.

    Never raises, so the request id is known even when the token is refused (a malformed
    ``authorization`` sets ``bad_authorization``: :meth:`CallMetadata.check_authorization`)."""
    token: str | None = None
    request_id: str | None = None
    traceparent: str | None = None
    bad = False
    for key, value in metadata or ():
        if key == AUTHORIZATION:
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            if text[: len(_BEARER)].lower() != _BEARER or not text[len(_BEARER) :].strip():
                bad = True
                continue
            token = text[len(_BEARER) :].strip()
        elif key == REQUEST_ID and isinstance(value, str) and value:
            request_id = value[:MAX_REQUEST_ID]
        elif key == TRACEPARENT and isinstance(value, str) and _TRACEPARENT.fullmatch(value):
            traceparent = value
    return CallMetadata(token, request_id, traceparent, bad)


class Authenticator:
    """Checks a call's token before it is forwarded (``verifier`` None: auth off).

    The verifier accepts a token meant for any service the gateway serves (its audience list);
    each call then needs the audience of the service the token goes on to, so a token for
    identity alone cannot be replayed against state through the gateway."""

    def __init__(self, verifier: Verifier | None) -> None:
        self.verifier = verifier

    def check(self, token: str | None, audience: str | None = None) -> Claims | None:
        """The token's claims; :class:`RpcFailure` (UNAUTHENTICATED) unless ``token`` verifies
        and, when ``audience`` is given, names it in ``aud``. None with auth off."""
        if self.verifier is None:
            return None  # --auth off: whatever was sent goes on; the service decides
        if not token:
            raise RpcFailure(
                Origin.TOKEN, Reason.MALFORMED.value, f"the call carries no token; {LOGIN_HINT}"
            )
        try:
            claims = self.verifier.verify(token)
        except TokenError as exc:
            text = str(exc)
            if "plant auth" not in text:  # the verifier's own hint says it for some reasons
                text += "; send a current access token (`plant auth login`)"
            raise RpcFailure(Origin.TOKEN, exc.reason.value, text) from None
        if audience is not None and audience not in claims.audience:
            raise RpcFailure(
                Origin.TOKEN,
                Reason.WRONG_AUDIENCE.value,
                f"the token is not meant for {audience} (its aud: {', '.join(claims.audience)}); "
                "log in again (`plant auth login`) for a token with that audience",
            )
        return claims
