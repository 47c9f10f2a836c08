"""``plant user``: accounts at org.plantd.Identity (each operation needs its permission, e.g.
``user:create``; the token is the stored login or ``--token``).

USER is an id (digits), an email (contains @) or a username.
"""

from __future__ import annotations

from typing import Any

import click

from plantd.cli.admin_output import (
    confirm,
    reference,
    role_names,
    show,
    show_table,
    user_reference,
    yes_option,
)
from plantd.cli.errors import CliError, ExitCode
from plantd.cli.identity_client import admin
from plantd.cli.password_input import prompt_secret, stdin_lines
from plantd.cli.settings import ClientSettings, get_settings


def _line(user: dict[str, Any]) -> str:
    active = "active" if user.get("is_active") else "inactive"
    return (
        f"{user.get('id')} {user.get('username')} <{user.get('email')}> {active}, "
        f"roles: {role_names(user)}"
    )


def user_id(settings: ClientSettings, ref: str) -> int:
    """The id of USER (a lookup when it is a name or email)."""
    found = user_reference(ref)
    if "user_id" in found:
        return int(found["user_id"])
    data = admin(settings, "user", "get", found)
    user = data.get("user")
    if not isinstance(user, dict) or not isinstance(user.get("id"), int):
        raise CliError(f"identity returned no id for user {ref!r}", code=ExitCode.ERROR_REPLY)
    return int(user["id"])


@click.group("user")
def user() -> None:
    """Create, read, change and delete user accounts; activate, deactivate, give roles.

    USER is an id, an email or a username. Needs the operation's permission (user:create,
    user:read, user:update, user:delete, user:list, user:activate, user:deactivate,
    role:assign, role:unassign).
    """


@user.command("create")
@click.argument("username")
@click.option("--email", required=True, help="the user's email (unique)")
@click.option("--first-name", default=None)
@click.option("--last-name", default=None)
@click.option("--password-stdin", is_flag=True, help="read the initial password from stdin")
@click.option("--must-change-password", is_flag=True, help="force a change at first login")
def create(
    username: str,
    email: str,
    first_name: str | None,
    last_name: str | None,
    password_stdin: bool,
    must_change_password: bool,
) -> None:
    """Create USERNAME (the initial password is asked without echo, or read from stdin)."""
    settings = get_settings()
    secret = stdin_lines(1)[0] if password_stdin else prompt_secret("Password", confirm=True)
    body: dict[str, Any] = {
        "username": username,
        "email": email,
        "password": secret,
        "must_change_password": must_change_password,
    }
    if first_name is not None:
        body["first_name"] = first_name
    if last_name is not None:
        body["last_name"] = last_name
    try:
        data = admin(settings, "user", "create", body)
    finally:
        del secret, body
    show(settings, data, f"created user {_line(data.get('user') or {})}")


@user.command("get")
@click.argument("ref", metavar="USER")
def get(ref: str) -> None:
    """Show USER (your own account needs no permission)."""
    settings = get_settings()
    data = admin(settings, "user", "get", user_reference(ref))
    show(settings, data, _line(data.get("user") or {}))


@user.command("update")
@click.argument("ref", metavar="USER")
@click.option("--email", default=None)
@click.option("--username", default=None)
@click.option("--first-name", default=None)
@click.option("--last-name", default=None)
def update(
    ref: str,
    email: str | None,
    username: str | None,
    first_name: str | None,
    last_name: str | None,
) -> None:
    """Change USER's email, username or names (only the options given)."""
    settings = get_settings()
    changes = {
        k: v
        for k, v in {
            "email": email,
            "username": username,
            "first_name": first_name,
            "last_name": last_name,
        }.items()
        if v is not None
    }
    if not changes:
        raise CliError(
            "nothing to change",
            hint="pass --email, --username, --first-name or --last-name",
            code=ExitCode.USAGE,
        )
    data = admin(settings, "user", "update", {"user_id": user_id(settings, ref), **changes})
    show(settings, data, f"updated user {_line(data.get('user') or {})}")


@user.command("delete")
@click.argument("ref", metavar="USER")
@yes_option
def delete(ref: str, yes: bool) -> None:
    """Delete USER (its sessions end at once)."""
    settings = get_settings()
    uid = user_id(settings, ref)
    confirm(f"delete user {ref} (id {uid})", yes)
    data = admin(settings, "user", "delete", {"user_id": uid})
    show(settings, {"user_id": uid, **data}, f"deleted user {uid}")


@user.command("list")
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--limit", type=click.IntRange(1, 100), default=50, show_default=True)
def list_users(offset: int, limit: int) -> None:
    """List user accounts, a page at a time."""
    settings = get_settings()
    data = admin(settings, "user", "list", {"offset": offset, "limit": limit})
    users = [u for u in data.get("users") or [] if isinstance(u, dict)]
    rows = [
        [
            u.get("id"),
            u.get("username"),
            u.get("email"),
            u.get("kind", "user"),
            "yes" if u.get("is_active") else "no",
        ]
        for u in users  # user/list carries no roles: `plant user get USER` shows them
    ]
    total = data.get("total", len(users))
    more = f"(showing {offset + 1}-{offset + len(users)} of {total}; --offset for more)"
    show_table(
        settings,
        data,
        ["id", "username", "email", "kind", "active"],
        rows,
        more if isinstance(total, int) and offset + len(users) < total else None,
    )


def _set_active(ref: str, active: bool) -> None:
    settings = get_settings()
    uid = user_id(settings, ref)
    data = admin(settings, "user", "activate" if active else "deactivate", {"user_id": uid})
    word = "activated" if active else "deactivated (its sessions end at once)"
    show(settings, {"user_id": uid, "is_active": active, **data}, f"user {uid} {word}")


@user.command("activate")
@click.argument("ref", metavar="USER")
def activate(ref: str) -> None:
    """Allow USER to log in again."""
    _set_active(ref, True)


@user.command("deactivate")
@click.argument("ref", metavar="USER")
def deactivate(ref: str) -> None:
    """Stop USER from logging in and end its sessions."""
    _set_active(ref, False)


def _role_body(settings: ClientSettings, ref: str, role: str, org: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {"user_id": user_id(settings, ref)}
    found = reference(role, "role_id", "role")
    body.update(found)
    if org is not None:
        body["org_id"] = org
    return body


@user.command("assign-role")
@click.argument("ref", metavar="USER")
@click.argument("role", metavar="ROLE")
@click.option("--org", type=click.IntRange(min=1), default=None, help="organization id")
def assign_role(ref: str, role: str, org: int | None) -> None:
    """Give USER the role ROLE (a name or id); you must hold every permission it grants.

    The new permissions are in the user's next token (`plant auth login` or refresh).
    """
    settings = get_settings()
    data = admin(settings, "user", "assign_role", _role_body(settings, ref, role, org))
    changed = "assigned" if data.get("changed", True) else "already had"
    show(settings, data, f"user {ref}: {changed} role {role}")


@user.command("unassign-role")
@click.argument("ref", metavar="USER")
@click.argument("role", metavar="ROLE")
@click.option("--org", type=click.IntRange(min=1), default=None, help="organization id")
def unassign_role(ref: str, role: str, org: int | None) -> None:
    """Take ROLE from USER (its sessions end, so no token keeps the role)."""
    settings = get_settings()
    data = admin(settings, "user", "unassign_role", _role_body(settings, ref, role, org))
    changed = "removed" if data.get("changed", True) else "did not have"
    show(settings, data, f"user {ref}: {changed} role {role}")


@user.command("unlock")
@click.argument("ref", metavar="USER")
def unlock(ref: str) -> None:
    """Clear USER's failed-login count and lock (needs user:activate)."""
    settings = get_settings()
    data = admin(settings, "user", "unlock", user_reference(ref))
    show(settings, data, f"user {ref} unlocked")
