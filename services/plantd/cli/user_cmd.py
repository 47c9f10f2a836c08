"""``plant user``: accounts at org.plantd.Identity (each operation needs its permission, e.g.
``user:create``; the token is the stored login or ``--token``).

USER is an id (digits), an email (contains @) or a username.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from plantd.cli.admin_output import (
    Record,
    confirm,
    described,
    given,
    nothing_to_change,
    page_options,
    reference,
    role_names,
    run_admin,
    run_list,
    user_reference,
    yes_option,
)
from plantd.cli.errors import CliError, ExitCode
from plantd.cli.identity_client import admin
from plantd.cli.password_input import prompt_secret, stdin_lines
from plantd.cli.settings import ClientSettings, get_settings

F = TypeVar("F", bound=Callable[..., Any])


def _line(user: dict[str, Any]) -> str:
    active = "active" if user.get("is_active") else "inactive"
    return (
        f"{user.get('id')} {user.get('username')} <{user.get('email')}> {active}, "
        f"roles: {role_names(user)}"
    )


def _said(prefix: str = "") -> Callable[[Record], str]:
    return described("user", _line, prefix)


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
        **given(first_name=first_name, last_name=last_name),
    }
    try:
        run_admin("user", "create", body, _said("created user "), settings=settings)
    finally:
        del secret, body


@user.command("get")
@click.argument("ref", metavar="USER")
def get(ref: str) -> None:
    """Show USER (your own account needs no permission)."""
    run_admin("user", "get", user_reference(ref), _said())


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
    changes = given(email=email, username=username, first_name=first_name, last_name=last_name)
    if not changes:
        raise nothing_to_change("--email, --username, --first-name or --last-name")
    body = {"user_id": user_id(settings, ref), **changes}
    run_admin("user", "update", body, _said("updated user "), settings=settings)


@user.command("delete")
@click.argument("ref", metavar="USER")
@yes_option
def delete(ref: str, yes: bool) -> None:
    """Delete USER (its sessions end at once)."""
    settings = get_settings()
    uid = user_id(settings, ref)
    confirm(f"delete user {ref} (id {uid})", yes)
    body = {"user_id": uid}
    run_admin("user", "delete", body, f"deleted user {uid}", settings=settings, shown=body)


@user.command("list")
@page_options
def list_users(offset: int, limit: int) -> None:
    """List user accounts, a page at a time."""

    def more(data: Record, users: list[Record]) -> str | None:
        total = data.get("total", len(users))
        if not isinstance(total, int) or offset + len(users) >= total:
            return None
        return f"(showing {offset + 1}-{offset + len(users)} of {total}; --offset for more)"

    run_list(
        "user",
        {"offset": offset, "limit": limit},
        "users",
        ["id", "username", "email", "kind", "active"],
        # user/list carries no roles: `plant user get USER` shows them
        lambda u: [
            u.get("id"),
            u.get("username"),
            u.get("email"),
            u.get("kind", "user"),
            "yes" if u.get("is_active") else "no",
        ],
        footer=more,
    )


def _set_active(ref: str, active: bool) -> None:
    settings = get_settings()
    uid = user_id(settings, ref)
    word = "activated" if active else "deactivated (its sessions end at once)"
    run_admin(
        "user",
        "activate" if active else "deactivate",
        {"user_id": uid},
        f"user {uid} {word}",
        settings=settings,
        shown={"user_id": uid, "is_active": active},
    )


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


def _change_role(ref: str, role: str, org: int | None, assign: bool) -> None:
    settings = get_settings()
    body: dict[str, Any] = {"user_id": user_id(settings, ref), **reference(role, "role_id", "role")}
    if org is not None:
        body["org_id"] = org
    done, already = ("assigned", "already had") if assign else ("removed", "did not have")
    run_admin(
        "user",
        "assign_role" if assign else "unassign_role",
        body,
        lambda data: f"user {ref}: {done if data.get('changed', True) else already} role {role}",
        settings=settings,
    )


def _role_arguments(func: F) -> F:
    func = click.option("--org", type=click.IntRange(min=1), default=None, help="organization id")(
        func
    )
    return click.argument("ref", metavar="USER")(click.argument("role", metavar="ROLE")(func))


@user.command("assign-role")
@_role_arguments
def assign_role(ref: str, role: str, org: int | None) -> None:
    """Give USER the role ROLE (a name or id); you must hold every permission it grants.

    The new permissions are in the user's next token (`plant auth login` or refresh).
    """
    _change_role(ref, role, org, True)


@user.command("unassign-role")
@_role_arguments
def unassign_role(ref: str, role: str, org: int | None) -> None:
    """Take ROLE from USER (its sessions end, so no token keeps the role)."""
    _change_role(ref, role, org, False)


@user.command("unlock")
@click.argument("ref", metavar="USER")
def unlock(ref: str) -> None:
    """Clear USER's failed-login count and lock (needs user:activate)."""
    run_admin("user", "unlock", user_reference(ref), f"user {ref} unlocked")
