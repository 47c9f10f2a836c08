"""The seam for authentication and authorization (filled in by the identity issue).

Every request carries a :class:`RequestContext` (caller identity when known, the raw ``token``
the original clients send). Before a request reaches the store the service asks the
:class:`Authorizer` whether the caller holds the operation's permission on the scope. Today
the default :class:`AllowAll` says yes; the identity issue plugs in a JWT-verifying one
without touching the operations.

Permission names are the original's (reference §4.5), but mapped correctly: the original asked
for ``state:admin:full`` on ``state-get``/``state-set`` because its table only knew ``get``/``set``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Protocol

from plantd.state.errors import Code, StateError

PERM_SCOPE_CREATE: Final = "state:scope:create"
PERM_SCOPE_DELETE: Final = "state:scope:delete"
PERM_SCOPE_LIST: Final = "state:scope:list"
PERM_DATA_READ: Final = "state:data:read"
PERM_DATA_WRITE: Final = "state:data:write"
PERM_DATA_DELETE: Final = "state:data:delete"
PERM_ADMIN_FULL: Final = "state:admin:full"
PERM_HEALTH_READ: Final = "state:health:read"
PERM_METRICS_READ: Final = "state:metrics:read"
PERM_SYSTEM_ADMIN: Final = "state:system:admin"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking, once a token has been verified."""

    subject: str
    permissions: frozenset[str] = field(default_factory=frozenset)


@dataclass(slots=True)  # built per request: not frozen, which would cost ~4x to construct
class RequestContext:
    operation: str
    scope: str | None  # None for scope-less operations (list-scopes, health)
    token: str | None = None  # as sent in the request body (the original's auth field)
    caller: Caller | None = None


class Authorizer(Protocol):
    def check(self, ctx: RequestContext, permission: str) -> StateError | None:
        """None to allow; an ``UNAUTHENTICATED``/``PERMISSION_DENIED`` error to refuse."""
        ...


class AllowAll:
    """Until identity arrives: every caller may do everything (CURVE guards the bus)."""

    def check(self, ctx: RequestContext, permission: str) -> StateError | None:
        return None


def denied(ctx: RequestContext, permission: str) -> StateError:
    """The error an authorizer returns for a caller without ``permission``."""
    where = f" on scope '{ctx.scope}'" if ctx.scope else ""
    return StateError(
        Code.PERMISSION_DENIED,
        f"{ctx.operation} needs permission {permission}{where}; ask an administrator to grant it",
    )
