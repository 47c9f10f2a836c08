"""``plant role`` and ``plant org``: roles (named sets of permissions) and organizations at
org.plantd.Identity. ROLE is an id or a name; ORG an id or a slug.

Nobody can create or change a role with a permission they do not hold (identity's escalation
guard answers PERMISSION_DENIED naming it).
"""

from __future__ import annotations

from typing import Any

import click

from plantd.cli.admin_output import (
    confirm,
    described,
    given,
    nothing_to_change,
    page_options,
    reference,
    role_permissions,
    run_admin,
    run_list,
)
from plantd.cli.admin_output import yes_option as _yes


def _role_line(role: dict[str, Any]) -> str:
    perms = ", ".join(role_permissions(role)) or "(no permissions)"
    return f"{role.get('id')} {role.get('name')} [{role.get('scope')}]: {perms}"


def _role_ref(ref: str) -> dict[str, Any]:
    return reference(ref, "role_id", "name")


@click.group("role")
def role() -> None:
    """Create, show, change, delete and list roles (sets of permissions, e.g. state:data:read).

    Needs role:create, role:read, role:update, role:delete or role:list. Give a role to a user
    with `plant user assign-role USER ROLE`.
    """


_perm_opt = click.option(
    "-p",
    "--permission",
    "permissions",
    multiple=True,
    metavar="PERM",
    help="a permission (repeat for several), e.g. state:data:read or state:scope:line1:write",
)


@role.command("create")
@click.argument("name")
@_perm_opt
@click.option(
    "--scope",
    type=click.Choice(["global", "organization"]),
    default="organization",
    show_default=True,
    help="global, or assigned per organization",
)
@click.option("--description", default=None)
def role_create(
    name: str, permissions: tuple[str, ...], scope: str, description: str | None
) -> None:
    """Create role NAME with the given permissions."""
    body = {"name": name, "permissions": list(permissions), "scope": scope}
    run_admin(
        "role",
        "create",
        {**body, **given(description=description)},
        described("role", _role_line, "created role "),
    )


@role.command("get")
@click.argument("ref", metavar="ROLE")
def role_get(ref: str) -> None:
    """Show ROLE and its permissions."""
    run_admin("role", "get", _role_ref(ref), described("role", _role_line))


@role.command("update")
@click.argument("ref", metavar="ROLE")
@_perm_opt
@click.option("--clear-permissions", is_flag=True, help="remove every permission")
@click.option("--description", default=None)
def role_update(
    ref: str, permissions: tuple[str, ...], clear_permissions: bool, description: str | None
) -> None:
    """Replace ROLE's permissions (with --permission) and/or its description."""
    changes = given(description=description)
    if permissions or clear_permissions:
        changes["permissions"] = list(permissions)
    if not changes:
        raise nothing_to_change("--permission, --clear-permissions or --description")
    run_admin(
        "role",
        "update",
        {**_role_ref(ref), **changes},
        described("role", _role_line, "updated role "),
    )


@role.command("delete")
@click.argument("ref", metavar="ROLE")
@_yes
def role_delete(ref: str, yes: bool) -> None:
    """Delete ROLE."""
    confirm(f"delete role {ref}", yes)
    run_admin("role", "delete", _role_ref(ref), f"deleted role {ref}")


@role.command("list")
@page_options
def role_list(offset: int, limit: int) -> None:
    """List roles."""
    run_list(
        "role",
        {"offset": offset, "limit": limit},
        "roles",
        ["id", "name", "scope", "permissions"],
        lambda r: [
            r.get("id"),
            r.get("name"),
            r.get("scope"),
            ", ".join(role_permissions(r)) or "-",
        ],
    )


# ---- organizations ------------------------------------------------------------------------------


def _org_line(org: dict[str, Any]) -> str:
    active = "active" if org.get("is_active") else "inactive"
    return f"{org.get('id')} {org.get('slug')} ({org.get('name')}) {active}"


def _org_ref(ref: str) -> dict[str, Any]:
    return reference(ref, "org_id", "slug")


@click.group("org")
def org() -> None:
    """Create, show, change, delete and list organizations.

    Needs organization:create, organization:read, organization:update, organization:delete or
    organization:list. ORG is an id or a slug.
    """


@org.command("create")
@click.argument("name")
@click.option("--slug", default=None, help="default: made from NAME")
@click.option("--description", default=None)
def org_create(name: str, slug: str | None, description: str | None) -> None:
    """Create organization NAME."""
    body = {"name": name, **given(slug=slug, description=description)}
    run_admin(
        "organization",
        "create",
        body,
        described("organization", _org_line, "created organization "),
    )


@org.command("get")
@click.argument("ref", metavar="ORG")
def org_get(ref: str) -> None:
    """Show ORG."""
    run_admin("organization", "get", _org_ref(ref), described("organization", _org_line))


@org.command("update")
@click.argument("ref", metavar="ORG")
@click.option("--name", default=None)
@click.option("--description", default=None)
@click.option("--active/--inactive", default=None)
def org_update(ref: str, name: str | None, description: str | None, active: bool | None) -> None:
    """Change ORG's name, description or active flag."""
    changes = given(name=name, description=description, is_active=active)
    if not changes:
        raise nothing_to_change("--name, --description or --active/--inactive")
    run_admin(
        "organization",
        "update",
        {**_org_ref(ref), **changes},
        described("organization", _org_line, "updated organization "),
    )


@org.command("delete")
@click.argument("ref", metavar="ORG")
@_yes
def org_delete(ref: str, yes: bool) -> None:
    """Delete ORG."""
    confirm(f"delete organization {ref}", yes)
    run_admin("organization", "delete", _org_ref(ref), f"deleted organization {ref}")


@org.command("list")
@page_options
def org_list(offset: int, limit: int) -> None:
    """List organizations."""
    run_list(
        "organization",
        {"offset": offset, "limit": limit},
        "organizations",
        ["id", "slug", "name", "active"],
        lambda o: [
            o.get("id"),
            o.get("slug"),
            o.get("name"),
            "yes" if o.get("is_active") else "no",
        ],
    )
