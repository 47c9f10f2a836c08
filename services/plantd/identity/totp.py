"""TOTP (RFC 6238: HMAC-SHA1, 30 s steps, 6 digits), pure.

``match`` returns the time step a code belongs to (the current one or one either side, for
clock drift); the store then accepts each step at most once per user with one conditional write
(:meth:`plantd.identity.store.Store.accept_totp_step`), which is the replay protection RFC 6238
§5.2 asks for and most libraries leave out (pyotp's ``verify`` accepts a code again).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
from typing import Final
from urllib.parse import quote

STEP_S: Final = 30
DIGITS: Final = 6
WINDOW: Final = 1  # steps accepted either side of now


def new_secret() -> str:
    """160 random bits, base32 without padding (what authenticator apps expect)."""
    return base64.b32encode(secrets.token_bytes(20)).decode().rstrip("=")


def _key(secret: str) -> bytes:
    pad = "=" * (-len(secret) % 8)
    return base64.b32decode(secret.upper() + pad)


def code_at(secret: str, step: int, digits: int = DIGITS) -> str:
    mac = hmac.new(_key(secret), struct.pack(">Q", step), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


def match(secret: str, code: str, now: float, window: int = WINDOW) -> int | None:
    """The step ``code`` is valid for around ``now``, or None. Constant time per candidate."""
    if not (isinstance(code, str) and len(code) == DIGITS and code.isascii() and code.isdigit()):
        return None
    current = int(now // STEP_S)
    found = None
    for step in range(current - window, current + window + 1):
        if hmac.compare_digest(code_at(secret, step), code):
            found = step
    return found


def uri(secret: str, account: str, issuer: str) -> str:
    label = quote(f"{issuer}:{account}")
    return f"otpauth://totp/{label}?secret={secret}&issuer={quote(issuer)}&digits={DIGITS}&period={STEP_S}"
