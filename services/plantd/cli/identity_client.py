"""Calls to org.plantd.Identity for the ``plant`` commands: ``[category, operation, json]`` out,
the reply envelope in, identity's error codes turned into ``CliError``s that say what to do.

The framing and codes are identity's (docs/identity.md, "Operations" and "Codes"); this module
only frames, decodes and explains. ``decode_reply`` is pure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from plantd.cli.connect import session
from plantd.cli.errors import CliError, ExitCode
from plantd.cli.settings import ClientSettings
from plantd.common import contract

SERVICE: Final = contract.SERVICE_IDENTITY
# A reply is tokens and one page of at most 100 small records; anything far larger is not
# identity talking. Checked before parsing (the broker bounds what it forwards anyway).
MAX_REPLY_BYTES: Final = 1024 * 1024


@dataclass
class IdentityReplyError(Exception):
    """``success: false`` from identity (or a reply that is not identity's envelope)."""

    code: str
    message: str
    detail: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def decode_reply(frames: list[bytes]) -> dict[str, Any]:
    """The ``data`` of a successful reply; raises :class:`IdentityReplyError` otherwise."""
    if len(frames) != 1:
        raise IdentityReplyError("BAD_REPLY", f"expected one reply frame, got {len(frames)}")
    if len(frames[0]) > MAX_REPLY_BYTES:
        raise IdentityReplyError(
            "BAD_REPLY", f"reply of {len(frames[0])} bytes is over {MAX_REPLY_BYTES}"
        )
    try:
        doc = json.loads(frames[0])
    except (ValueError, RecursionError):
        raise IdentityReplyError("BAD_REPLY", "the reply is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("success"), bool):
        raise IdentityReplyError("BAD_REPLY", "the reply is not identity's envelope")
    if not doc["success"]:
        detail = doc.get("detail")
        return _raise(
            str(doc.get("code") or "ERROR"),
            str(doc.get("error") or "failed"),
            detail if isinstance(detail, dict) else {},
        )
    data = doc.get("data")
    return data if isinstance(data, dict) else {}


def _raise(code: str, message: str, detail: dict[str, Any]) -> dict[str, Any]:
    raise IdentityReplyError(code[:64], message[:2000], detail)


def call(
    settings: ClientSettings, category: str, operation: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One request; the reply's ``data``. Transport failures leave as ``CliError`` (exit 3/4)."""
    payload = json.dumps(body or {}, separators=(",", ":"))
    with session(settings) as client:
        frames = client.request(SERVICE, category, operation, payload)
    return decode_reply(frames)


def _retry_hint(detail: dict[str, Any]) -> str | None:
    after = detail.get("retry_after")
    if isinstance(after, int | float) and not isinstance(after, bool):
        return f"retry in {max(1, round(after))} s"
    return None


_HINTS: Final = {
    "UNAUTHENTICATED": "run `plant auth login` (the token is missing, expired or revoked), "
    "or pass a valid --token",
    "PERMISSION_DENIED": "ask an administrator for a role that grants it "
    "(`plant user assign-role USER ROLE`); `plant auth whoami` lists what you hold",
    "PASSWORD_CHANGE_REQUIRED": "run `plant auth change-password`, then `plant auth login`",
    "LOGIN_FAILED": "check the username (or email) and password",
    "RATE_LIMITED": "too many login attempts from here or overall; wait and retry",
    "REFRESH_FAILED": "log in again: `plant auth login`",
    "LOGOUT_FAILED": "the token is not one of this identity service's; "
    "`plant auth logout --local` forgets it here",
    "PASSWORD_REJECTED": "choose a passphrase of at least 15 characters that is not a common "
    "or breached password and not your username or email",
    "NOT_FOUND": "`plant user list`, `plant role list` and `plant org list` show what exists",
    "CONFLICT": "that name, email or slug is taken: choose another",
    "BAD_REPLY": f"is {SERVICE} a plantd identity service? check `plant services`",
}


def cli_error(
    exc: IdentityReplyError, what: str, hints: Mapping[str, str] | None = None
) -> CliError:
    """``what`` failed because identity said ``exc``: exit 1, the code in ``--json`` output.

    ``hints`` override the table per code where a command knows better (``plant module``)."""
    table = {**_HINTS, **hints} if hints else _HINTS
    retry = _retry_hint(exc.detail)
    hint = retry or table.get(exc.code)
    if exc.code in ("LOGIN_FAILED", "RATE_LIMITED") and retry:
        hint = f"{table[exc.code]}; {retry}"
    details: dict[str, Any] = {"code": exc.code}
    if "retry_after" in exc.detail:
        details["retry_after"] = exc.detail["retry_after"]
    return CliError(
        f"{what} failed: {exc.message} ({exc.code})",
        hint=hint,
        code=ExitCode.ERROR_REPLY,
        details=details,
    )


def not_logged_in(profile: str) -> CliError:
    return CliError(
        f"not logged in (profile {profile!r})",
        hint="run `plant auth login`, or pass --token / set PLANTD_CLIENT_TOKEN",
        code=ExitCode.CONFIG,
        details={"code": "NOT_LOGGED_IN", "profile": profile},
    )


def admin(
    settings: ClientSettings,
    category: str,
    operation: str,
    body: dict[str, Any] | None = None,
    *,
    what: str | None = None,
    hints: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """An operation that needs a token: the one to send is added as field ``token``.

    ``what`` names it in errors (default ``CATEGORY OPERATION``); ``hints`` as for
    :func:`cli_error`."""
    from plantd.cli.credentials import token_for_request

    token = token_for_request(settings)
    if token is None:
        raise not_logged_in(settings.profile)
    try:
        return call(settings, category, operation, {**(body or {}), "token": token})
    except IdentityReplyError as exc:
        raise cli_error(exc, what or f"{category} {operation.replace('_', '-')}", hints) from None
