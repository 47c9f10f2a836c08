"""Records as the original's Go client decodes them (pure).

Its structs (``identity/internal/models``): ids are ``uint``; times are RFC 3339 strings
(``time.Time``, ``*time.Time`` may be null); ``user.roles`` and ``user.organizations`` are
lists of objects; ``role.permissions`` is a *string* holding a JSON array. A number where Go
wants a string (or the reverse) fails its whole ``json.Unmarshal``, so these shapes matter.
plantd's extra fields (``kind``, ``operator_critical``, ``permission_list``, ...) are ignored
by Go and read by plantd clients.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from plantd.identity.model import Organization, Role, User


def rfc3339(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def role_json(role: Role) -> dict[str, Any]:
    return {
        "id": role.id,
        "name": role.name,
        "description": role.description,
        "permissions": json.dumps(role.permissions),  # the original's TEXT column
        "permission_list": list(role.permissions),
        "scope": role.scope,
        "created_at": rfc3339(role.created_at),
        "updated_at": rfc3339(role.updated_at),
    }


def org_json(org: Organization) -> dict[str, Any]:
    return {
        "id": org.id,
        "name": org.name,
        "slug": org.slug,
        "description": org.description,
        "is_active": org.is_active,
        "created_at": rfc3339(org.created_at),
        "updated_at": rfc3339(org.updated_at),
    }


def user_json(
    user: User, roles: list[Role] | None = None, orgs: list[Organization] | None = None
) -> dict[str, Any]:
    """Never the password hash."""
    return {
        "id": user.id,
        "email": user.email,
        "username": user.username,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "is_active": user.is_active,
        "email_verified": user.email_verified,
        "email_verified_at": None,
        "last_login_at": rfc3339(user.last_login_at),
        "created_at": rfc3339(user.created_at),
        "updated_at": rfc3339(user.updated_at),
        "roles": [role_json(r) for r in roles or []],
        "organizations": [org_json(o) for o in orgs or []],
        "kind": user.kind,
        "operator_critical": user.operator_critical,
        "must_change_password": user.must_change_password,
        "totp_enabled": user.totp_enabled,
    }
