"""Authorization of every state request (issue 8): who is calling, and may they do this here?

Every request carries a :class:`RequestContext`: the operation, its scope, the raw ``token`` the
original clients send in the request JSON, and the caller's key identity from the broker's
caller frame (``plantd.caller``, docs/protocol.md). Before a request reaches the store the
service asks its :class:`Authorizer` whether the caller holds the operation's permission on the
scope. :class:`AllowAll` (``--auth off``) says yes; :class:`IdentityAuthorizer`
(``--auth identity``) decides, **default deny**:

1. a ``token`` is verified offline (``plantd.common.auth.Verifier``: JWKS-pinned signature,
   claims cache, per-user ``not_before``) and its permissions decide; a bad token is refused
   even when the key would be allowed (the caller asked to act as that user);
2. without a token, the caller key's identity in the machine registry decides (its
   ``permissions``);
3. neither: ``UNAUTHENTICATED``, saying how to log in.

Permission names are the original's (reference §4.5), mapped correctly: the original asked for
``state:admin:full`` on ``state-get``/``state-set`` because its table only knew ``get``/``set``.
Every denial is audited (:class:`Audit`, the common :mod:`plantd.common.audit` auditor: one
event shape and chain rule for every producer, on the event bus topic ``audit``), within a
per-second budget past which denials are counted into one summary event: a flood of refused
requests must not cost a publish and a log line each.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from plantd.common import contract
from plantd.common.audit import AuditEvent, Auditor, Sink
from plantd.common.auth import PermissionSet, TokenError, Verifier
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

LOGIN_HINT: Final = "log in with `plant auth login` (or pass --token / PLANTD_CLIENT_TOKEN)"
# Denial reasons that are not a token's (TokenError reasons are used as they are).
NO_CREDENTIALS: Final = "NO_CREDENTIALS"
NOT_PERMITTED: Final = "PERMISSION_DENIED"
DEFAULT_AUDIT_PER_S: Final = 100


class CallerKey(Protocol):
    """The broker's caller frame as ``plantd.mdp.caller.Caller`` decodes it."""

    @property
    def key(self) -> str | None: ...
    @property
    def name(self) -> str | None: ...
    @property
    def kind(self) -> str | None: ...
    @property
    def permissions(self) -> tuple[str, ...] | None: ...


@dataclass(slots=True)  # built per request: not frozen, which would cost ~4x to construct
class RequestContext:
    operation: str
    scope: str | None  # None for scope-less operations (list-scopes, health)
    token: str | None = None  # as sent in the request body (the original's auth field)
    caller: CallerKey | None = None  # the authenticated CURVE key, when the broker says


class Authorizer(Protocol):
    def check(self, ctx: RequestContext, permission: str) -> StateError | None:
        """None to allow; an ``UNAUTHENTICATED``/``PERMISSION_DENIED`` error to refuse."""
        ...


class AllowAll:
    """``--auth off``: every caller may do everything (CURVE guards the bus)."""

    def check(self, ctx: RequestContext, permission: str) -> StateError | None:
        return None


def denied(
    ctx: RequestContext, permission: str, who: str = "", *, no_token: bool = False
) -> StateError:
    """The error for a caller without ``permission`` (names the permission and the scope).

    ``no_token``: only the caller's CURVE key was judged, so a user may just not be logged in
    (the `plant` CLI's own key is registered, without rights): say how to log in too."""
    where = f" on scope '{ctx.scope}'" if ctx.scope else ""
    by = f" ({who} does not hold it)" if who else ""
    fix = "ask an administrator to grant it"
    if no_token:
        fix = f"the request carries no token: {LOGIN_HINT}; or {fix} to the key"
    return StateError(
        Code.PERMISSION_DENIED, f"{ctx.operation} needs permission {permission}{where}{by}; {fix}"
    )


def unauthenticated(ctx: RequestContext, why: str) -> StateError:
    return StateError(
        Code.UNAUTHENTICATED, f"{ctx.operation} needs a valid access token: {why}; {LOGIN_HINT}"
    )


# ---- key identities -----------------------------------------------------------------------------

_DATA_FORM: Final = ("state:data:read:", "state:data:write:", "state:data:delete:")


def key_permission(p: str) -> str:
    """A registry permission in the grammar of :class:`PermissionSet`.

    The registry (interface 1) also writes a scope after the data permission,
    ``state:data:write:line1``; that is the scoped template ``state:scope:line1:write``.
    Every other string is taken as it is."""
    for pre in _DATA_FORM:
        if p.startswith(pre) and len(p) > len(pre):
            action = pre[len("state:data:") : -1]
            return f"state:scope:{p[len(pre) :]}:{action}"
    return p


class KeyIdentity(Protocol):
    """What the state service reads of a ``plantd.common.registry.Identity``."""

    @property
    def name(self) -> str: ...
    @property
    def permissions(self) -> tuple[str, ...]: ...


Lookup = Callable[[str], KeyIdentity | None]


class KeyPermissions:
    """Z85 public key -> (identity name, compiled permissions), from the machine registry.

    ``lookup`` is the registry's ``by_key``; results are memoised per key (a registry has a
    few hundred keys at most, and an unknown key is remembered as None) until :meth:`replace`.
    Bounded: past ``max_entries`` keys the memo is cleared, never grown."""

    def __init__(self, lookup: Lookup | None = None, max_entries: int = 10_000) -> None:
        self._lookup = lookup
        self._memo: dict[str, tuple[str, PermissionSet] | None] = {}
        self._frames: dict[tuple[str, str, tuple[str, ...]], PermissionSet] = {}
        self.max_entries = max_entries

    def replace(self, lookup: Lookup | None) -> None:
        """A reloaded registry: forget every compiled key."""
        self._lookup = lookup
        self._memo = {}

    def from_broker(self, key: str, name: str, permissions: tuple[str, ...]) -> PermissionSet:
        """The permissions the broker's caller frame carries (its merged registry: the file and
        the modules enrolled in identity), compiled once per distinct grant."""
        memo_key = (key, name, permissions)
        perms = self._frames.get(memo_key)
        if perms is None:
            if len(self._frames) >= self.max_entries:
                self._frames.clear()
            perms = self._frames[memo_key] = PermissionSet(key_permission(p) for p in permissions)
        return perms

    def get(self, key: str) -> tuple[str, PermissionSet] | None:
        memo = self._memo
        if key in memo:
            return memo[key]
        ident = self._lookup(key) if self._lookup is not None else None
        out = (
            None
            if ident is None
            else (ident.name, PermissionSet(key_permission(p) for p in ident.permissions))
        )
        if len(memo) >= self.max_entries:
            memo.clear()
        memo[key] = out
        return out


# ---- audit --------------------------------------------------------------------------------------


class Audit(Auditor):
    """Denials as audit events of producer ``state@host:pid:start``: the common auditor
    (:mod:`plantd.common.audit`: its event shape and chain rule), within a budget of
    ``per_second`` events a second; the rest are counted by reason and reported in one
    ``state.audit_suppressed`` event when the next second starts (:meth:`flush`)."""

    def __init__(
        self,
        sink: Sink | None = None,
        *,
        per_second: int = DEFAULT_AUDIT_PER_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(contract.STATE, sink, clock=clock, per_second=per_second)

    def deny(
        self,
        action: str,
        reason: str,
        *,
        actor: str = "",
        target: str = "",
        source: str = "",
        jti: str = "",
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        self.emit(
            AuditEvent(
                action, "deny", reason, actor, target, source, jti, detail=dict(detail or {})
            )
        )


# ---- the authorizer -----------------------------------------------------------------------------


class IdentityAuthorizer:
    """``--auth identity``: a verified token or a registered key, else refused (default deny).

    Costs per request (the claims cache makes a repeated token a sha256 and two dict lookups;
    a registered key is one dict lookup): no identity round trip."""

    def __init__(
        self,
        verifier: Verifier,
        *,
        keys: KeyPermissions | None = None,
        audit: Audit | None = None,
        max_decisions: int = 10_000,  # <= ~5 MB with 256-byte scopes
    ) -> None:
        self.verifier = verifier
        self.keys = keys if keys is not None else KeyPermissions()
        self.audit = audit if audit is not None else Audit()
        self.allowed = 0
        self.denials: dict[str, int] = {}  # reason -> count
        # (jti, iat, permission, scope) -> allowed. A token's permissions never change, so the
        # decision is memoised: one dict lookup instead of PermissionSet.allows's scoped path
        # (measured: 3.1 -> 0.4 us). Cleared when full; expiry and not_before are still
        # checked by verify() on every request.
        self._decisions: dict[tuple[str, float, str, str | None], bool] = {}
        self.max_decisions = max_decisions

    def check(self, ctx: RequestContext, permission: str) -> StateError | None:
        caller = ctx.caller
        source = (caller.key or "") if caller is not None else ""
        token = ctx.token
        if token:
            try:
                claims = self.verifier.verify(token)
            except TokenError as exc:
                self._deny(ctx, permission, exc.reason.value, source=source)
                return unauthenticated(ctx, f"{exc} ({exc.reason.value})")
            memo = (claims.jti, claims.issued_at, permission, ctx.scope)
            ok = self._decisions.get(memo)
            if ok is None:
                ok = claims.permissions.allows(permission, ctx.scope)
                if len(self._decisions) >= self.max_decisions:
                    self._decisions.clear()
                self._decisions[memo] = ok
            if ok:
                self.allowed += 1
                return None
            who = claims.subject
            self._deny(ctx, permission, NOT_PERMITTED, actor=who, source=source, jti=claims.jti)
            return denied(ctx, permission, f"user {claims.subject}")
        if caller is not None and caller.key:
            # The broker's word first (it knows enrolments); the registry file without it.
            said = caller.permissions
            known = (
                (caller.name or "?", self.keys.from_broker(caller.key, caller.name or "", said))
                if said is not None
                else self.keys.get(caller.key)
            )
            if known is not None:
                name, perms = known
                if perms.allows(permission, ctx.scope):
                    self.allowed += 1
                    return None
                self._deny(ctx, permission, NOT_PERMITTED, actor=f"key:{name}", source=source)
                return denied(ctx, permission, f"key identity {name!r}", no_token=True)
            self._deny(ctx, permission, NO_CREDENTIALS, source=source)
            return unauthenticated(
                ctx,
                "the request carries no token (and its CURVE key has no entry in the machine "
                "registry)",
            )
        self._deny(ctx, permission, NO_CREDENTIALS, source=source)
        return unauthenticated(ctx, "the request carries no token")

    def _deny(
        self,
        ctx: RequestContext,
        permission: str,
        reason: str,
        *,
        actor: str = "",
        source: str = "",
        jti: str = "",
    ) -> None:
        self.denials[reason] = self.denials.get(reason, 0) + 1
        self.audit.deny(
            f"state.{ctx.operation}",
            reason,
            actor=actor,
            target=ctx.scope or "",
            source=source,
            jti=jti,
            detail={"permission": permission},
        )


def denial_reasons(authorizer: Authorizer) -> Iterable[tuple[str, int]]:
    """(reason, count) of an authorizer's denials so far (none for AllowAll)."""
    if isinstance(authorizer, IdentityAuthorizer):
        return list(authorizer.denials.items())
    return ()
