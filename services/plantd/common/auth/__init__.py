"""Offline verification of plantd access tokens, shared by every service (issue 8).

- :class:`Verifier`: JWKS-pinned ES256/EdDSA verification with a verified-claims cache;
- :class:`NotBeforeMap` and :func:`follow`: per-user revocation fed by the event bus;
- :class:`PermissionSet`: the original's permission names, implications and scoped templates.

See docs/identity.md.
"""

from plantd.common.auth.errors import Reason, TokenError
from plantd.common.auth.keyset import KeySetError, PublicKey, parse_jwks
from plantd.common.auth.permissions import PermissionSet
from plantd.common.auth.revocation import TOPIC as NOT_BEFORE_TOPIC
from plantd.common.auth.revocation import NotBeforeMap, follow
from plantd.common.auth.verifier import Claims, Verifier

__all__ = [
    "NOT_BEFORE_TOPIC",
    "Claims",
    "KeySetError",
    "NotBeforeMap",
    "PermissionSet",
    "PublicKey",
    "Reason",
    "TokenError",
    "Verifier",
    "follow",
    "parse_jwks",
]
