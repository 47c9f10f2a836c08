"""The identity service's shared core: state, authorization, audit, credentials, sessions.

:class:`ServiceCore` holds what every operation needs (store, keys, hasher, issuer, verifier,
auditor) and the steps they share: authorizing a caller's token, checking a password (buckets,
backoff, argon2 with a dummy hash for unknown users, TOTP), minting tokens, ending sessions
(``not_before`` on the event bus) and auditing every decision. The operations live in
:mod:`plantd.identity.auth_ops` and :mod:`plantd.identity.admin_ops`; the request path and the
operation table in :mod:`plantd.identity.service`.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from plantd.common import contract
from plantd.common.auth import Claims, TokenError, Verifier
from plantd.common.auth.revocation import TOPIC as NOT_BEFORE_TOPIC
from plantd.common.auth.revocation import encode_event
from plantd.identity import protocol, totp
from plantd.identity.audit import AuditEvent, Auditor, Sink
from plantd.identity.errors import Code, IdentityError
from plantd.identity.keys import KeyRing
from plantd.identity.model import User
from plantd.identity.passwords import MAX_BYTES, Hasher, Policy
from plantd.identity.protocol import strings
from plantd.identity.store import Store
from plantd.identity.throttle import Backoff, Bucket
from plantd.identity.tokens import Issuer
from plantd.identity.wire import user_json

log = logging.getLogger("plantd.identity")

SERVICE_SECRET_PREFIX: Final = "pld_sa_"  # noqa: S105 - a prefix for secret scanners
MAX_TOKEN_CHARS: Final = 8192
INVALID_CREDENTIALS: Final = "invalid credentials"
UNPARSED: Final = protocol.Request("invalid", "invalid", {}, "")  # a request that did not parse


@dataclass(frozen=True, slots=True)
class Config:
    issuer: str = "plantd-identity"
    audiences: tuple[str, ...] = contract.TOKEN_AUDIENCES
    access_ttl_s: int = 900
    refresh_ttl_s: int = 7 * 86400
    source_bucket: Bucket = field(default_factory=lambda: Bucket(10, 1.0))
    global_bucket: Bucket = field(default_factory=lambda: Bucket(200, 50.0))
    backoff: Backoff = field(default_factory=Backoff)
    policy: Policy = field(default_factory=Policy)
    break_glass_jwks: Mapping[str, Any] | None = None  # the offline key's public half
    registry_file: Path | None = None  # enrolled identities written here on every change
    max_modules: int = 1024
    join_token_ttl_s: int = 3600
    max_join_tokens: int = 1000


@dataclass(slots=True)
class Ctx:
    req: protocol.Request
    now: float
    source: str
    caller: Claims | None = None


def ident_key(identifier: str) -> str:
    return "acct:" + hashlib.sha256(identifier.strip().lower().encode()).hexdigest()[:32]


def subject_id(subject: str) -> int:
    """The integer user id behind a token subject (0 if it is not one)."""
    return int(subject) if subject.isascii() and subject.isdigit() and len(subject) <= 19 else 0


def secret_hash(secret: str) -> str:
    return "sha256$" + hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


class ServiceCore:
    """State and shared steps of the identity service; the operations are in the mixins."""

    def __init__(
        self,
        store: Store,
        keys: KeyRing,
        hasher: Hasher,
        *,
        config: Config | None = None,
        sink: Sink | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.keys = keys
        self.hasher = hasher
        self.cfg = config or Config()
        self.sink = sink
        self.clock = clock
        self.audit = Auditor(sink, clock=clock)
        self.issuer = Issuer(keys, issuer=self.cfg.issuer, access_ttl_s=self.cfg.access_ttl_s)
        self.verifier = Verifier(
            issuer=self.cfg.issuer,
            audience=list(self.cfg.audiences),
            jwks=keys.jwks(),
            clock=clock,
            break_glass_jwks=self.cfg.break_glass_jwks,
        )
        self.started = clock()
        self.results: dict[tuple[str, str], int] = {}  # (operation, code|ok) -> count
        self.on_result: Callable[[str, str], None] | None = None
        self._dummy_secret = secret_hash(secrets.token_urlsafe(32))

    def _count(self, op: str, result: str) -> None:
        key = (op, result)
        self.results[key] = self.results.get(key, 0) + 1
        if self.on_result is not None:
            self.on_result(op, result)

    def _deny(self, ctx: Ctx, action: str, err: IdentityError, **kw: Any) -> IdentityError:
        """Audit a denial and return the error to raise."""
        err.audited = True
        named = kw.pop("actor", "")
        actor = ctx.caller.subject if ctx.caller else named
        self.audit.emit(
            AuditEvent(
                action=action,
                decision="deny",
                reason=err.reason,
                source=ctx.source,
                trace_id=ctx.req.request_id,
                actor=actor,
                **kw,
            )
        )
        return err

    def _allow(self, ctx: Ctx, action: str, **kw: Any) -> None:
        named = kw.pop("actor", "")
        actor = ctx.caller.subject if ctx.caller else named
        self.audit.emit(
            AuditEvent(
                action=action,
                decision="allow",
                source=ctx.source,
                trace_id=ctx.req.request_id,
                actor=actor,
                **kw,
            )
        )

    async def _verify(self, token: str, ctx: Ctx | None = None) -> Claims:
        """Verify one of our access tokens, with the store's not_before (authoritative).

        Every use of a break-glass token is audited, loudly (warning, ``break_glass: true``)."""
        claims = self.verifier.verify(token)
        nb = await self.store.get_not_before(claims.subject)
        if claims.issued_at < nb:
            self.verifier.not_before.bump(claims.subject, nb)
            claims = self.verifier.verify(token)  # raises REVOKED
        if claims.break_glass:
            self.audit.emit(
                AuditEvent(
                    action="auth.break_glass",
                    decision="allow",
                    reason="BREAK_GLASS",
                    actor=claims.subject,
                    target=ctx.req.category + "." + ctx.req.operation if ctx else "",
                    source=ctx.source if ctx else "",
                    jti=claims.jti,
                    trace_id=ctx.req.request_id if ctx else "",
                    detail={"why": str(claims.raw.get("reason", ""))[:500]},
                    break_glass=True,
                )
            )
        return claims

    async def _authorize(self, ctx: Ctx, action: str, permission: str) -> Claims:
        token = ctx.req.data.get("token")
        if not isinstance(token, str) or not token:
            raise self._deny(
                ctx,
                action,
                IdentityError(
                    Code.UNAUTHENTICATED,
                    f"{action} needs an access token in field 'token'; log in with "
                    "`plant auth login`",
                    reason="NO_TOKEN",
                ),
            )
        try:
            claims = await self._verify(token[: MAX_TOKEN_CHARS + 1], ctx)
        except TokenError as exc:
            raise self._deny(
                ctx,
                action,
                IdentityError(Code.UNAUTHENTICATED, str(exc), reason=exc.reason.value),
            ) from None
        if contract.SERVICE_IDENTITY not in claims.audience:
            raise self._deny(
                ctx,
                action,
                IdentityError(
                    Code.UNAUTHENTICATED,
                    f"the token is not for {contract.SERVICE_IDENTITY}; log in for it",
                    reason="TOKEN_WRONG_AUDIENCE",
                ),
                actor=claims.subject,
            )
        if claims.raw.get("pwd_change"):
            raise self._deny(
                ctx,
                action,
                IdentityError(
                    Code.PASSWORD_CHANGE_REQUIRED,
                    "change the initial password first (auth/change_password), then log in again",
                ),
                actor=claims.subject,
            )
        ctx.caller = claims
        if permission and not claims.allows(permission):
            raise self._deny(
                ctx,
                action,
                IdentityError(
                    Code.PERMISSION_DENIED,
                    f"{action} needs permission {permission}; ask an administrator to grant it",
                ),
                target=permission,
            )
        return claims

    async def _throttle(self, ctx: Ctx, action: str, identifier: str) -> None:
        """Global and per-source buckets (atomic in the store, shared by replicas)."""
        for key, bucket in (
            ("global", self.cfg.global_bucket),
            (f"src:{ctx.source}", self.cfg.source_bucket),
        ):
            ok, retry = await self.store.take_token(key, bucket, ctx.now)
            if not ok:
                raise self._deny(
                    ctx,
                    action,
                    IdentityError(
                        Code.RATE_LIMITED,
                        f"too many login attempts; retry in {max(1, round(retry))} s",
                        reason="RATE_LIMITED_GLOBAL" if key == "global" else "RATE_LIMITED_SOURCE",
                        retry_after=round(retry, 3),
                    ),
                    target=identifier,
                )

    async def _check_password(
        self, ctx: Ctx, action: str, identifier: str, password: str, fail_code: Code
    ) -> User:
        """The password, then the one-time code if the user enabled TOTP (field ``totp``)."""
        user = await self._check_first_factor(ctx, action, identifier, password, fail_code)
        if user.totp_enabled and user.totp_secret:
            code = ctx.req.data.get("totp")
            reason = await self._check_totp(user, code, ctx.now)
            if reason is not None:
                msg = (
                    "a one-time code is required (field 'totp')"
                    if reason == "TOTP_REQUIRED"
                    else "invalid or already used one-time code"
                )
                raise self._deny(
                    ctx, action, IdentityError(fail_code, msg, reason=reason), target=user.subject
                )
        await self.store.clear_failures(ident_key(identifier))
        return user

    async def _check_totp(self, user: User, code: object, now: float) -> str | None:
        """None when ``code`` is right and unused; else why not (for audit)."""
        if not isinstance(code, str) or not code:
            return "TOTP_REQUIRED"
        assert user.totp_secret is not None
        step = totp.match(user.totp_secret, code, now)
        if step is None:
            return "TOTP_BAD"
        if not await self.store.accept_totp_step(user.id, step):
            return "TOTP_REPLAY"
        return None

    async def _check_first_factor(
        self, ctx: Ctx, action: str, identifier: str, password: str, fail_code: Code
    ) -> User:
        """Throttles, backoff, argon2 (dummy for unknown users): the user, or one error."""
        await self._throttle(ctx, action, identifier)
        key = ident_key(identifier)
        user = await self.store.find_login(identifier)
        critical = user.operator_critical if user is not None else False
        # Counted as a failure before the hash runs (cleared on success): atomic, so parallel
        # guesses on several replicas cannot all slip through one backoff window.
        wait = await self.store.begin_attempt(key, self.cfg.backoff, ctx.now, critical=critical)
        if wait == float("inf"):
            raise self._deny(
                ctx,
                action,
                IdentityError(
                    fail_code,
                    "account is locked after too many failed attempts; an administrator can "
                    "unlock it (user/unlock)",
                    reason="LOCKED",
                ),
                target=identifier,
            )
        if wait > 0:
            raise self._deny(
                ctx,
                action,
                IdentityError(
                    fail_code,
                    f"too many failed attempts; retry in {max(1, round(wait))} s",
                    reason="BACKOFF",
                    retry_after=round(wait, 3),
                ),
                target=identifier,
            )
        stored = user.password_hash if user is not None and user.kind == "user" else None
        if len(password.encode("utf-8", "surrogatepass")) > MAX_BYTES:
            ok = False  # refused before hashing: a huge password costs nothing
        else:
            ok = await self.hasher.verify(stored, password)
        if not ok or user is None:
            reason = "UNKNOWN_USER" if user is None else "BAD_PASSWORD"
            raise self._deny(
                ctx,
                action,
                IdentityError(fail_code, INVALID_CREDENTIALS, reason=reason),
                target=identifier,
            )
        if not user.is_active:
            raise self._deny(
                ctx,
                action,
                IdentityError(
                    fail_code, "account is inactive; ask an administrator", reason="INACTIVE"
                ),
                target=user.subject,
            )
        if self.hasher.needs_rehash(stored or ""):
            new_hash = await self.hasher.hash(password)
            await self.store.update_user(user.id, {"password_hash": new_hash})
            log.info("password re-hashed with current parameters", extra={"user": user.id})
        return user

    def _audiences(self, data: dict[str, Any]) -> tuple[str, ...]:
        asked = strings(data, "audience", max_items=16)
        if not asked:
            return self.cfg.audiences
        bad = [a for a in asked if a not in self.cfg.audiences]
        if bad:
            raise IdentityError(
                Code.INVALID_REQUEST,
                f"audience {bad[0]!r} is not served; one of {', '.join(self.cfg.audiences)}",
            )
        return tuple(dict.fromkeys(asked))

    async def _permissions(self, user: User) -> list[str]:
        perms: set[str] = set()
        for role in await self.store.user_roles(user.id):
            perms.update(role.permissions)
        return sorted(perms)

    async def _mint(self, user: User, audience: tuple[str, ...], now: float) -> dict[str, Any]:
        perms = [] if user.must_change_password else await self._permissions(user)
        claims: dict[str, Any] = {
            "user_id": user.id,  # an integer, as the original's claims
            "email": user.email,
            "username": user.username,
            "roles": [] if user.must_change_password else user.roles,
            "permissions": perms,
            "organizations": user.organizations,
            "kind": user.kind,
        }
        if user.must_change_password:
            claims["pwd_change"] = True
        minted = self.issuer.access(subject=user.subject, audience=audience, now=now, claims=claims)
        return {
            "access_token": minted.token,
            "expires_at": int(minted.expires_at),
            "token_type": "Bearer",
            "jti": minted.jti,
        }

    async def _revoke_sessions(self, subject: str, now: float, reason: str) -> float:
        """Bump not_before, revoke refresh tokens, publish the bump on the event bus."""
        nb = await self.store.bump_not_before(subject, round(now, 3))
        await self.store.revoke_refresh_user(subject)
        self.verifier.not_before.bump(subject, nb)
        self.publish_not_before(subject, nb, reason)
        return nb

    async def _user_out(self, user: User) -> dict[str, Any]:
        """A user as the original's Go client decodes it (see plantd.identity.wire)."""
        return user_json(
            user, await self.store.user_roles(user.id), await self.store.user_orgs(user.id)
        )

    def publish_not_before(self, user_id: str, nb: float, reason: str) -> None:
        if self.sink is None:
            return
        try:
            self.sink.publish(NOT_BEFORE_TOPIC, encode_event(user_id, nb, reason))
        except Exception:
            log.exception("publishing a not_before bump failed")

    # ---- background -----------------------------------------------------------------------------

    async def republish_once(self) -> int:
        """Publish every not_before bump young enough to matter (late or lossy subscribers)."""
        now = self.clock()
        rows = await self.store.recent_not_before(now - self.cfg.access_ttl_s - 60)
        for sub, nb in rows:
            self.publish_not_before(sub, nb, "republish")
        return len(rows)
