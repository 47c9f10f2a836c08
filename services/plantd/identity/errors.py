"""Error codes of org.plantd.Identity replies (``{"success": false, "error": ..., "code": ...}``).

The operation-specific codes are the original's (``LOGIN_FAILED``, ``REFRESH_FAILED``, ...), so
the original Go ``plant`` keeps recognising them; the rest are plantd's.
"""

from __future__ import annotations

from enum import StrEnum


class Code(StrEnum):
    INVALID_MESSAGE = "INVALID_MESSAGE"  # not [category, operation, json]
    INVALID_REQUEST = "INVALID_REQUEST"  # bad JSON, missing or invalid field, over a limit
    UNKNOWN_OPERATION = "UNKNOWN_OPERATION"
    LOGIN_FAILED = "LOGIN_FAILED"  # the same message for unknown user and wrong password
    RATE_LIMITED = "RATE_LIMITED"  # per-source or global login bucket empty (retry_after)
    REFRESH_FAILED = "REFRESH_FAILED"
    LOGOUT_FAILED = "LOGOUT_FAILED"
    PASSWORD_CHANGE_FAILED = "PASSWORD_CHANGE_FAILED"  # noqa: S105 - a code
    PASSWORD_REJECTED = "PASSWORD_REJECTED"  # noqa: S105 - policy: too short, too long, on the blocklist
    UNAUTHENTICATED = "UNAUTHENTICATED"  # an admin operation without a valid token
    PERMISSION_DENIED = "PERMISSION_DENIED"
    PASSWORD_CHANGE_REQUIRED = "PASSWORD_CHANGE_REQUIRED"  # noqa: S105 - bootstrap admin: change it first
    NOT_FOUND = "NOT_FOUND"
    CONFLICT = "CONFLICT"  # unique name, username or email taken
    STORE_UNAVAILABLE = "STORE_UNAVAILABLE"
    INTERNAL = "INTERNAL"


class IdentityError(Exception):
    """A refused request: the reply carries ``code`` and the message (what failed, what to do)."""

    def __init__(self, code: Code, message: str, *, reason: str | None = None, **detail: object):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or code.value  # for audit: why, more precisely than the code
        self.detail = detail
        self.audited = False  # set once an audit event carries this refusal


class Conflict(IdentityError):
    def __init__(self, message: str) -> None:
        super().__init__(Code.CONFLICT, message)


class NotFound(IdentityError):
    def __init__(self, message: str) -> None:
        super().__init__(Code.NOT_FOUND, message)
