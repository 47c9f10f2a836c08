"""Permission evaluation (pure): does a set of held permission strings allow one action?

Names are the original plantd's (reference plantd-original.md §4.4, §4.5):

- ``service:resource:action`` strings, e.g. ``state:data:read``, ``user:create``;
- scoped templates ``state:scope:<S>:read|write|delete|admin`` grant data access on scope S only;
- cross-service grants ``state:cross-service:<S>:<permission>``;
- wildcards: ``*`` (everything), or any string ending in ``:*`` (prefix match, ``state:*``);
- implications: ``system:admin`` => everything; ``state:system:admin`` => ``state:admin:full``
  => every plain ``state:`` permission; ``state:data:write`` and ``state:data:delete`` =>
  ``state:data:read``; ``state:scope:S:admin`` => ``state:scope:S:{read,write,delete}``;
  ``state:scope:S:write`` => ``state:scope:S:read`` (as the unscoped pair does).

:class:`PermissionSet` compiles the closure once (per token, cached by the verifier), so a check
is a couple of set lookups.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

SYSTEM_ADMIN: Final = "system:admin"
STATE_SYSTEM_ADMIN: Final = "state:system:admin"
STATE_ADMIN_FULL: Final = "state:admin:full"
STATE_DATA_READ: Final = "state:data:read"
STATE_DATA_WRITE: Final = "state:data:write"
STATE_DATA_DELETE: Final = "state:data:delete"

STATE_ADMIN_GRANTS: Final = frozenset(
    {
        "state:scope:create",
        "state:scope:delete",
        "state:scope:list",
        STATE_DATA_READ,
        STATE_DATA_WRITE,
        STATE_DATA_DELETE,
        "state:health:read",
        "state:metrics:read",
    }
)
# Identity's enrolment of machine identities (issue 8); ``identity:module:*`` grants all five.
IDENTITY_MODULE_ENROLL: Final = "identity:module:enroll"
IDENTITY_MODULE_LIST: Final = "identity:module:list"  # also the whole registry document
IDENTITY_MODULE_READ: Final = "identity:module:read"
IDENTITY_MODULE_REVOKE: Final = "identity:module:revoke"
IDENTITY_MODULE_JOIN_TOKEN: Final = "identity:module:join-token"  # noqa: S105 - a name
IDENTITY_MODULE_PERMISSIONS: Final = frozenset(
    {
        IDENTITY_MODULE_ENROLL,
        IDENTITY_MODULE_LIST,
        IDENTITY_MODULE_READ,
        IDENTITY_MODULE_REVOKE,
        IDENTITY_MODULE_JOIN_TOKEN,
    }
)

# Data permission -> the action of its scoped template ``state:scope:<S>:<action>``.
DATA_ACTIONS: Final = {
    STATE_DATA_READ: "read",
    STATE_DATA_WRITE: "write",
    STATE_DATA_DELETE: "delete",
}

# Direct implications of plain (unscoped) permissions.
_IMPLIES: Final[dict[str, frozenset[str]]] = {
    STATE_SYSTEM_ADMIN: frozenset({STATE_ADMIN_FULL}),
    STATE_ADMIN_FULL: STATE_ADMIN_GRANTS,
    STATE_DATA_WRITE: frozenset({STATE_DATA_READ}),
    STATE_DATA_DELETE: frozenset({STATE_DATA_READ}),
}
_SCOPED_IMPLIES: Final[dict[str, tuple[str, ...]]] = {
    "admin": ("read", "write", "delete"),
    "write": ("read",),
    "delete": ("read",),
}

MAX_PERMISSION_CHARS: Final = 256


def valid_permission(p: str) -> bool:
    """A permission string: non-empty, at most 256 characters, printable ASCII, no spaces."""
    return 0 < len(p) <= MAX_PERMISSION_CHARS and p.isascii() and p.isprintable() and " " not in p


def scoped(scope: str, action: str) -> str:
    """The scoped template ``state:scope:<scope>:<action>``."""
    return f"state:scope:{scope}:{action}"


def _closure(held: Iterable[str]) -> set[str]:
    out: set[str] = set()
    todo = list(held)
    while todo:
        p = todo.pop()
        if p in out:
            continue
        out.add(p)
        todo.extend(_IMPLIES.get(p, ()))
        if p.startswith("state:scope:"):
            scope, _, action = p[len("state:scope:") :].rpartition(":")
            if scope:
                todo.extend(scoped(scope, a) for a in _SCOPED_IMPLIES.get(action, ()))
    return out


class PermissionSet:
    """Held permissions with their implications expanded; immutable after construction."""

    __slots__ = ("_exact", "_prefixes", "everything", "granted")

    def __init__(self, held: Iterable[str]) -> None:
        self.granted: frozenset[str] = frozenset(held)
        exact = _closure(self.granted)
        self.everything = "*" in exact or SYSTEM_ADMIN in exact
        # "state:*" -> prefix "state:"; matching a prefix also covers what it implies.
        self._prefixes = tuple(sorted(p[:-1] for p in exact if p.endswith(":*")))
        self._exact = frozenset(exact)

    def has(self, permission: str) -> bool:
        """The plain permission (no scope), directly, by implication or by wildcard."""
        if self.everything or permission in self._exact:
            return True
        return any(permission.startswith(pre) for pre in self._prefixes)

    def allows(self, permission: str, scope: str | None = None) -> bool:
        """The original's ``CheckScopeAccess`` order: admin, global grant, scoped template,
        cross-service grant. ``scope`` None: only global grants count."""
        if self.has(permission):
            return True
        if scope is None:
            return False
        if self.has(scoped(scope, "admin")):
            return True
        action = DATA_ACTIONS.get(permission)
        if action is not None and self.has(scoped(scope, action)):
            return True
        return self.has(f"state:cross-service:{scope}:{permission}")

    def __repr__(self) -> str:
        return f"PermissionSet({sorted(self.granted)!r})"
