"""RBAC evaluation with the original's permission names, implications and scoped templates."""

from __future__ import annotations

import pytest

from plantd.common.auth.permissions import PermissionSet, valid_permission

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("held", "permission", "scope", "allowed"),
    [
        # global grants and their implications
        (["state:data:read"], "state:data:read", "s1", True),
        (["state:data:read"], "state:data:write", "s1", False),
        (["state:data:write"], "state:data:read", "s1", True),
        (["state:data:delete"], "state:data:read", "s1", True),
        (["state:data:delete"], "state:data:write", "s1", False),
        (["state:admin:full"], "state:scope:create", None, True),
        (["state:admin:full"], "state:metrics:read", None, True),
        (["state:system:admin"], "state:data:delete", "any", True),
        (["system:admin"], "user:create", None, True),
        (["*"], "role:assign", None, True),
        # wildcards are prefix matches
        (["state:*"], "state:scope:delete", None, True),
        (["state:*"], "user:create", None, False),
        (["state:data:*"], "state:data:write", "s1", True),
        (["state:data:*"], "state:scope:create", None, False),
        # scoped templates: data permissions on that scope only
        (["state:scope:line1:read"], "state:data:read", "line1", True),
        (["state:scope:line1:read"], "state:data:read", "line2", False),
        (["state:scope:line1:read"], "state:data:read", None, False),
        (["state:scope:line1:read"], "state:data:write", "line1", False),
        (["state:scope:line1:write"], "state:data:read", "line1", True),
        (["state:scope:line1:write"], "state:data:delete", "line1", False),
        (["state:scope:line1:admin"], "state:data:delete", "line1", True),
        (["state:scope:line1:admin"], "state:scope:delete", "line1", True),  # admin of S
        (["state:scope:line1:admin"], "state:scope:delete", "line2", False),
        (["state:scope:line1:*"], "state:data:write", "line1", True),
        # a scoped template never grants a non-data permission by itself
        (["state:scope:line1:write"], "state:scope:create", "line1", False),
        # cross-service grants
        (["state:cross-service:line9:state:data:read"], "state:data:read", "line9", True),
        (["state:cross-service:line9:state:data:read"], "state:data:write", "line9", False),
        # nothing held
        ([], "state:data:read", "s1", False),
        ([], "state:health:read", None, False),
    ],
)
def test_allows(held: list[str], permission: str, scope: str | None, allowed: bool) -> None:
    assert PermissionSet(held).allows(permission, scope) is allowed


def test_scope_names_with_colons_keep_their_action() -> None:
    perms = PermissionSet(["state:scope:plant:line:1:admin"])
    assert perms.allows("state:data:write", "plant:line:1")
    assert not perms.allows("state:data:write", "plant:line")


@pytest.mark.parametrize(
    ("text", "ok"),
    [("state:data:read", True), ("", False), ("a b", False), ("x" * 257, False), ("é:x", False)],
)
def test_valid_permission(text: str, ok: bool) -> None:
    assert valid_permission(text) is ok
