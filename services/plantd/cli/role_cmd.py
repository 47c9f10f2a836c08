"""``plant role`` and ``plant org``: roles (named sets of permissions) and organizations at
org.plantd.Identity. ROLE is an id or a name; ORG an id or a slug.

Nobody can create or change a role with a permission they do not hold (identity's escalation
guard answers PERMISSION_DENIED naming it).
"""

from __future__ import annotations

from typing import Any

import click

from plantd.cli.admin_output import confirm, reference, role_permissions, show, show_table
from plantd.cli.admin_output import yes_option as _yes
from plantd.cli.errors import CliError, ExitCode
from plantd.cli.identity_client import admin
from plantd.cli.settings import get_settings


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
    settings = get_settings()
    body: dict[str, Any] = {"name": name, "permissions": list(permissions), "scope": scope}
    if description is not None:
        body["description"] = description
    data = admin(settings, "role", "create", body)
    show(settings, data, f"created role {_role_line(data.get('role') or {})}")


@role.command("get")
@click.argument("ref", metavar="ROLE")
def role_get(ref: str) -> None:
    """Show ROLE and its permissions."""
    settings = get_settings()
    data = admin(settings, "role", "get", _role_ref(ref))
    show(settings, data, _role_line(data.get("role") or {}))


@role.command("update")
@click.argument("ref", metavar="ROLE")
@_perm_opt
@click.option("--clear-permissions", is_flag=True, help="remove every permission")
@click.option("--description", default=None)
def role_update(
    ref: str, permissions: tuple[str, ...], clear_permissions: bool, description: str | None
) -> None:
    """Replace ROLE's permissions (with --permission) and/or its description."""
    settings = get_settings()
    body = _role_ref(ref)
    if permissions or clear_permissions:
        body["permissions"] = list(permissions)
    if description is not None:
        body["description"] = description
    if len(body) == 1:
        raise CliError(
            "nothing to change",
            hint="pass --permission, --clear-permissions or --description",
            code=ExitCode.USAGE,
        )
    data = admin(settings, "role", "update", body)
    show(settings, data, f"updated role {_role_line(data.get('role') or {})}")


@role.command("delete")
@click.argument("ref", metavar="ROLE")
@_yes
def role_delete(ref: str, yes: bool) -> None:
    """Delete ROLE."""
    settings = get_settings()
    confirm(f"delete role {ref}", yes)
    data = admin(settings, "role", "delete", _role_ref(ref))
    show(settings, data, f"deleted role {ref}")


@role.command("list")
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--limit", type=click.IntRange(1, 100), default=50, show_default=True)
def role_list(offset: int, limit: int) -> None:
    """List roles."""
    settings = get_settings()
    data = admin(settings, "role", "list", {"offset": offset, "limit": limit})
    roles = [r for r in data.get("roles") or [] if isinstance(r, dict)]
    rows = [
        [r.get("id"), r.get("name"), r.get("scope"), ", ".join(role_permissions(r)) or "-"]
        for r in roles
    ]
    show_table(settings, data, ["id", "name", "scope", "permissions"], rows)


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
    settings = get_settings()
    body: dict[str, Any] = {"name": name}
    if slug is not None:
        body["slug"] = slug
    if description is not None:
        body["description"] = description
    data = admin(settings, "organization", "create", body)
    show(settings, data, f"created organization {_org_line(data.get('organization') or {})}")


@org.command("get")
@click.argument("ref", metavar="ORG")
def org_get(ref: str) -> None:
    """Show ORG."""
    settings = get_settings()
    data = admin(settings, "organization", "get", _org_ref(ref))
    show(settings, data, _org_line(data.get("organization") or {}))


@org.command("update")
@click.argument("ref", metavar="ORG")
@click.option("--name", default=None)
@click.option("--description", default=None)
@click.option("--active/--inactive", default=None)
def org_update(ref: str, name: str | None, description: str | None, active: bool | None) -> None:
    """Change ORG's name, description or active flag."""
    settings = get_settings()
    body = _org_ref(ref)
    for key, value in (("name", name), ("description", description), ("is_active", active)):
        if value is not None:
            body[key] = value
    if len(body) == 1:
        raise CliError(
            "nothing to change",
            hint="pass --name, --description or --active/--inactive",
            code=ExitCode.USAGE,
        )
    data = admin(settings, "organization", "update", body)
    show(settings, data, f"updated organization {_org_line(data.get('organization') or {})}")


@org.command("delete")
@click.argument("ref", metavar="ORG")
@_yes
def org_delete(ref: str, yes: bool) -> None:
    """Delete ORG."""
    settings = get_settings()
    confirm(f"delete organization {ref}", yes)
    data = admin(settings, "organization", "delete", _org_ref(ref))
    show(settings, data, f"deleted organization {ref}")


@org.command("list")
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--limit", type=click.IntRange(1, 100), default=50, show_default=True)
def org_list(offset: int, limit: int) -> None:
    """List organizations."""
    settings = get_settings()
    data = admin(settings, "organization", "list", {"offset": offset, "limit": limit})
    orgs = [o for o in data.get("organizations") or [] if isinstance(o, dict)]
    rows = [
        [o.get("id"), o.get("slug"), o.get("name"), "yes" if o.get("is_active") else "no"]
        for o in orgs
    ]
    show_table(settings, data, ["id", "slug", "name", "active"], rows)
