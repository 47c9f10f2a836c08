"""``plant auth``: login, logout, status, refresh, whoami (the original's names), check and
change-password, against org.plantd.Identity on the profile's broker.

Tokens are kept per profile by :mod:`plantd.cli.credentials` (0600); every other ``plant``
command sends the stored access token, refreshed when it is about to expire.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from typing import Any

import click

from plantd.cli import output
from plantd.cli.credentials import (
    Credentials,
    CredentialsError,
    CredentialStore,
    InsecureCredentialsDirError,
    peek_claims,
    refresh,
    status,
    store_for,
    token_for_request,
)
from plantd.cli.errors import CliError, ExitCode
from plantd.cli.identity_client import IdentityReplyError, call, cli_error, not_logged_in
from plantd.cli.password_input import (
    prompt_secret,
    prompt_text,
    refuse_argv_password,
    stdin_lines,
)
from plantd.cli.settings import ClientSettings, get_settings


def describe_expiry(expires_at: float, now: float) -> str:
    """``2026-12-03 16:05:01 UTC (in 14 min)`` / ``(3 s ago)`` (pure)."""
    try:
        when = datetime.fromtimestamp(expires_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, ValueError, OSError):  # a token's exp is not ours to trust
        return f"at unix time {expires_at:.0f}"
    left = int(expires_at - now)
    span = abs(left)
    amount = f"{span // 60} min" if span >= 120 else f"{span} s"
    return f"{when} ({'in ' + amount if left >= 0 else amount + ' ago'})"


def _say(settings: ClientSettings, doc: dict[str, Any], text: str) -> None:
    if settings.json_output:
        output.print_json(doc)
    else:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def _rows(pairs: list[tuple[str, object]]) -> str:
    width = max(len(k) for k, _ in pairs)
    return "\n".join(f"{k.ljust(width)}  {output.frame_text(str(v).encode())}" for k, v in pairs)


@click.group("auth")
def auth() -> None:
    """Log in to the identity service (org.plantd.Identity) and manage this profile's session.

    `plant auth login` stores an access token (15 min) and a refresh token (mode 0600, one file
    per profile under ~/.local/state/plantd/credentials); every other `plant` command then
    sends the access token and refreshes it when it is about to expire. --token or
    PLANTD_CLIENT_TOKEN overrides the stored login.
    """


def _existing(store: CredentialStore, profile: str) -> Credentials | None:
    """The stored login, or None when there is none or it is unusable (login replaces it)."""
    try:
        return store.load(profile, allow_readable=True)
    except InsecureCredentialsDirError:
        raise  # an unsafe directory stays refused: nothing is written there
    except CredentialsError:
        return None


def _credentials(settings: ClientSettings, data: dict[str, Any]) -> Credentials:
    access, refresh_token = data.get("access_token"), data.get("refresh_token")
    expires = data.get("expires_at")
    user = data.get("user") if isinstance(data.get("user"), dict) else {}
    assert isinstance(user, dict)
    if not (isinstance(access, str) and isinstance(refresh_token, str)):
        raise cli_error(IdentityReplyError("BAD_REPLY", "no tokens in the login reply"), "login")
    if isinstance(expires, bool) or not isinstance(expires, int):
        raise cli_error(IdentityReplyError("BAD_REPLY", "no expires_at in the reply"), "login")
    user_id = user.get("id")
    return Credentials(
        profile=settings.profile,
        endpoint=settings.endpoint,
        access_token=access,
        refresh_token=refresh_token,
        expires_at=float(expires),
        user_id=user_id if isinstance(user_id, int) and not isinstance(user_id, bool) else None,
        username=str(user.get("username") or ""),
        email=str(user.get("email") or ""),
        password_change_required=data.get("password_change_required") is True,
    )


@auth.command("login")
@click.option("-u", "--username", "username", metavar="NAME", help="username (or email)")
@click.option("-e", "--email", metavar="EMAIL", help="email (the original's flag)")
@click.option(
    "--password-stdin", is_flag=True, help="read the password from standard input (one line)"
)
@click.option("-p", "--password", hidden=True, help="refused: a password in argv leaks")
@click.option("--totp", metavar="CODE", help="the one-time code, when the account uses TOTP")
@click.option("--force", is_flag=True, help="log in even if the stored login is still valid")
def login(
    username: str | None,
    email: str | None,
    password_stdin: bool,
    password: str | None,
    totp: str | None,
    force: bool,
) -> None:
    """Log in and store this profile's tokens (the password is asked without echo).

    An existing valid login of the same user is kept unless --force. Exits 1 when identity
    refuses (wrong credentials, throttled: the message says when to retry).
    """
    refuse_argv_password(password)
    settings = get_settings()
    store = store_for(settings)
    identifier = username or email
    if not identifier:
        identifier = "" if password_stdin else prompt_text("Username or email", "--username")
        if not identifier:
            raise CliError(
                "a username or email is required", hint="pass --username NAME", code=ExitCode.USAGE
            )
    now = time.time()
    existing = _existing(store, settings.profile)
    if (
        not force
        and existing is not None
        and existing.endpoint == settings.endpoint
        and identifier.lower() in (existing.username.lower(), existing.email.lower())
        and status(existing.expires_at, now) != "expired"
    ):
        _say(
            settings,
            {
                "profile": settings.profile,
                "username": existing.username,
                "already": True,
                "expires_at": existing.expires_at,
            },
            f"already logged in as {existing.username} on {existing.endpoint} (expires "
            f"{describe_expiry(existing.expires_at, now)}); --force logs in again",
        )
        return
    secret = stdin_lines(1)[0] if password_stdin else prompt_secret("Password")
    body: dict[str, Any] = {"identifier": identifier, "password": secret}
    if totp:
        body["totp"] = totp
    try:
        data = call(settings, "auth", "login", body)
    except IdentityReplyError as exc:
        err = cli_error(exc, "login")
        if "one-time code" in exc.message and not totp:
            err.hint = "pass --totp CODE (from your authenticator app)"
        raise err from None
    finally:
        del secret, body
    creds = _credentials(settings, data)
    with store.locked(settings.profile):
        path = store.save(creds)
    _say(
        settings,
        {
            "profile": creds.profile,
            "endpoint": creds.endpoint,
            "user_id": creds.user_id,
            "username": creds.username,
            "expires_at": creds.expires_at,
            "password_change_required": creds.password_change_required,
            "credentials_file": str(path),
        },
        f"logged in as {creds.username} (id {creds.user_id}) on {creds.endpoint}, profile "
        f"{creds.profile}; token expires {describe_expiry(creds.expires_at, time.time())}",
    )
    if creds.password_change_required:
        sys.stderr.write(
            "plant: this account must change its password before it can do anything: run "
            "`plant auth change-password`, then `plant auth login`\n"
        )


def _logout_remote(settings: ClientSettings, token: str) -> bool:
    """True when identity revoked the sessions; False when it did not know the token."""
    try:
        call(settings, "auth", "logout", {"access_token": token})
    except IdentityReplyError as exc:
        if exc.code == "LOGOUT_FAILED":
            return False
        raise cli_error(exc, "logout") from None
    return True


@auth.command("logout")
@click.option("--local", is_flag=True, help="only forget the stored tokens (no revocation)")
def logout(local: bool) -> None:
    """End every session of the logged-in user at identity, then forget the stored tokens.

    If identity cannot be reached the tokens are kept (so you can retry); --local forgets them
    without revoking (they stay valid until they expire).
    """
    settings = get_settings()
    if settings.token:
        revoked = _logout_remote(settings, settings.token)
        _say(
            settings,
            {"revoked": revoked},
            "revoked every session of the token's user"
            if revoked
            else "identity does not know that token",
        )
        if not revoked:
            raise SystemExit(int(ExitCode.ERROR_REPLY))
        return
    store = store_for(settings)
    with store.locked(settings.profile):
        creds = store.load(settings.profile, allow_readable=True)
        if creds is None:
            _say(
                settings,
                {"profile": settings.profile, "revoked": False},
                f"not logged in (profile {settings.profile}): nothing to do",
            )
            return
        revoked = False
        if not local:
            try:
                revoked = _logout_remote(settings, creds.access_token)
            except CliError as exc:
                if exc.code in (ExitCode.UNREACHABLE, ExitCode.CONFIG):
                    exc.hint = (
                        f"{exc.hint + '; ' if exc.hint else ''}the tokens are kept so you can "
                        "retry; `plant auth logout --local` forgets them without revoking"
                    )
                raise
        store.delete(settings.profile)
    if local:
        text = (
            f"forgot the login of {creds.username} (profile {creds.profile}); its sessions "
            "were NOT revoked and end when the tokens expire"
        )
    elif revoked:
        text = f"logged out {creds.username}: every session of the user was revoked"
    else:
        text = f"identity did not recognise the stored token; forgot it (profile {creds.profile})"
    _say(settings, {"profile": creds.profile, "username": creds.username, "revoked": revoked}, text)


@auth.command("status")
def status_cmd() -> None:
    """Show this profile's login (from the stored file; no request is sent).

    Status is valid, expires soon (under 5 min) or expired. Exits 4 when there is no usable
    login (none, or expired without a refresh token).
    """
    settings = get_settings()
    now = time.time()
    if settings.token:
        claims = peek_claims(settings.token)
        exp = claims.get("exp")
        exp_f = float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else 0.0
        doc = {
            "profile": settings.profile,
            "source": settings.sources.get("token", "flag"),
            "username": claims.get("username"),
            "subject": claims.get("sub"),
            "expires_at": exp_f,
            "status": status(exp_f, now),
        }
        _say(
            settings,
            doc,
            _rows(
                [
                    (
                        "token",
                        f"from {doc['source']} (not verified here; `plant auth whoami` asks)",
                    ),
                    ("user", f"{doc['username']} (sub {doc['subject']})"),
                    ("status", f"{doc['status']}, until {describe_expiry(exp_f, now)}"),
                ]
            ),
        )
        return
    store = store_for(settings)
    creds = store.load(settings.profile)
    if creds is None:
        raise not_logged_in(settings.profile)
    state = status(creds.expires_at, now)
    doc = {
        "profile": creds.profile,
        "username": creds.username,
        "user_id": creds.user_id,
        "email": creds.email,
        "endpoint": creds.endpoint,
        "status": state,
        "expires_at": creds.expires_at,
        "refresh_token": bool(creds.refresh_token),
        "credentials_file": str(store.path(creds.profile)),
    }
    _say(
        settings,
        doc,
        _rows(
            [
                ("profile", creds.profile),
                ("user", f"{creds.username} (id {creds.user_id}, {creds.email})"),
                ("endpoint", creds.endpoint),
                ("status", f"{state}, until {describe_expiry(creds.expires_at, now)}"),
                ("refresh", "yes (used automatically)" if creds.refresh_token else "no"),
                ("file", doc["credentials_file"]),
            ]
        ),
    )
    if state == "expired" and not creds.refresh_token:
        raise CliError(
            f"the login of profile {creds.profile!r} has expired",
            hint="run `plant auth login`",
            code=ExitCode.CONFIG,
            details={"code": "LOGIN_EXPIRED"},
        )


@auth.command("refresh")
def refresh_cmd() -> None:
    """Rotate the stored tokens now (other commands do it by themselves near expiry)."""
    settings = get_settings()
    if settings.token:
        raise CliError(
            "--token / PLANTD_CLIENT_TOKEN cannot be refreshed: refresh rotates the stored login",
            hint="drop --token (unset PLANTD_CLIENT_TOKEN) and run `plant auth login`",
            code=ExitCode.USAGE,
        )
    store: CredentialStore = store_for(settings)
    with store.locked(settings.profile):
        creds = store.load(settings.profile)
        if creds is None:
            raise not_logged_in(settings.profile)
        if not creds.refresh_token:
            raise CliError(
                f"the login of profile {settings.profile!r} has no usable refresh token",
                hint="run `plant auth login`",
                code=ExitCode.CONFIG,
            )
        if creds.endpoint != settings.endpoint:
            raise CliError(
                f"the login of profile {settings.profile!r} is for {creds.endpoint}, not "
                f"{settings.endpoint}",
                hint=f"pass --endpoint {creds.endpoint}, or log in here",
                code=ExitCode.CONFIG,
            )
        try:
            new = refresh(settings, store, creds)
        except IdentityReplyError as exc:
            raise cli_error(exc, "refresh") from None
    _say(
        settings,
        {"profile": new.profile, "expires_at": new.expires_at},
        f"refreshed: token expires {describe_expiry(new.expires_at, time.time())}",
    )


def _token_or_fail(settings: ClientSettings) -> str:
    token = token_for_request(settings)
    if token is None:
        raise not_logged_in(settings.profile)
    return token


@auth.command("token")
def token_cmd() -> None:
    """Print the access token, refreshed first when under a minute is left, for tools that
    take a bearer token (grpcurl, curl): `-H "authorization: Bearer $(plant auth token)"`.

    Exits 4 when not logged in (or the login expired and cannot be refreshed). The token goes
    to stdout only; keep it out of shell history and logs.
    """
    settings = get_settings()
    token = _token_or_fail(settings)
    if settings.json_output:
        output.print_json({"access_token": token})
        return
    click.echo(token)


@auth.command("whoami")
def whoami() -> None:
    """Ask identity who the token belongs to: user, roles, permissions, expiry.

    Exits 1 when identity refuses the token (expired, revoked, ...: the reason is printed).
    """
    settings = get_settings()
    token = _token_or_fail(settings)
    try:
        data = call(settings, "auth", "validate", {"token": token})
    except IdentityReplyError as exc:
        raise cli_error(exc, "whoami") from None
    if not data.get("valid"):
        reason = str(data.get("reason") or "TOKEN_INVALID")
        raise CliError(
            f"identity refused the token: {data.get('error') or reason} ({reason})",
            hint="run `plant auth login`",
            code=ExitCode.ERROR_REPLY,
            details={"code": reason},
        )
    if settings.json_output:
        output.print_json(data)
        return
    exp = data.get("expires_at")
    expires = describe_expiry(float(exp), time.time()) if isinstance(exp, int | float) else "?"
    _say(
        settings,
        data,
        _rows(
            [
                ("user id", data.get("user_id")),
                ("username", data.get("username")),
                ("email", data.get("email")),
                ("roles", ", ".join(map(str, data.get("roles") or [])) or "(none)"),
                ("permissions", ", ".join(map(str, data.get("permissions") or [])) or "(none)"),
                ("expires", expires),
            ]
        ),
    )


@auth.command("check")
@click.argument("permission")
@click.option("--scope", metavar="SCOPE", help="the scope (e.g. a state scope) to check it on")
@click.option("--user-id", type=click.IntRange(min=1), help="another user (needs role:read)")
def check(permission: str, scope: str | None, user_id: int | None) -> None:
    """Whether you (or --user-id) hold PERMISSION [on --scope]: exit 0 allowed, 1 denied.

    PERMISSION uses the original's names, e.g. state:data:write; identity evaluates it with
    the same rules as every service (docs/identity.md, Permissions).
    """
    from plantd.cli.identity_client import admin

    settings = get_settings()
    body: dict[str, Any] = {"permission": permission}
    if scope:
        body["scope"] = scope
    if user_id:
        body["user_id"] = user_id
    data = admin(settings, "role", "check_permission", body)
    allowed = data.get("allowed") is True
    where = f" on scope {scope}" if scope else ""
    _say(settings, data, f"{'allowed' if allowed else 'denied'}: {permission}{where}")
    if not allowed:
        raise SystemExit(int(ExitCode.ERROR_REPLY))


@auth.command("change-password")
@click.option("-u", "--username", metavar="NAME", help="default: the logged-in user")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="read two lines from standard input: the current password, then the new one",
)
def change_password(username: str | None, password_stdin: bool) -> None:
    """Change your password (asked without echo); every session of the user ends."""
    settings = get_settings()
    store = store_for(settings)
    creds = _existing(store, settings.profile)
    name = username or (creds.username if creds is not None else "")
    if not name:
        name = prompt_text("Username", "--username") if not password_stdin else ""
        if not name:
            raise CliError("whose password?", hint="pass --username NAME", code=ExitCode.USAGE)
    if password_stdin:
        current, new = stdin_lines(2)
    else:
        current = prompt_secret("Current password")
        new = prompt_secret("New password", confirm=True)
    body = {"identifier": name, "current_password": current, "new_password": new}
    try:
        call(settings, "auth", "change_password", body)
    except IdentityReplyError as exc:
        raise cli_error(exc, "change-password") from None
    finally:
        del current, new, body
    if creds is not None and name.lower() in (creds.username.lower(), creds.email.lower()):
        store.delete(settings.profile)  # identity revoked it: keeping it would only mislead
    _say(
        settings,
        {"username": name, "changed": True},
        f"password of {name} changed; every session of the user ended: log in again with "
        "`plant auth login`",
    )
