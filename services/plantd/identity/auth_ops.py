"""Credential operations: login, refresh, logout, validate, change_password, jwks, client
credentials, revocations, TOTP enrolment, health (no token needed, except TOTP enrolment)."""

from __future__ import annotations

import hmac
import logging
from typing import Any

import jwt

from plantd import __version__
from plantd.common.auth import TokenError
from plantd.identity import totp
from plantd.identity.core import (
    INVALID_CREDENTIALS,
    MAX_TOKEN_CHARS,
    Ctx,
    ServiceCore,
    secret_hash,
    subject_id,
)
from plantd.identity.errors import Code, IdentityError
from plantd.identity.model import RefreshRecord, User, new_family
from plantd.identity.passwords import MAX_BYTES
from plantd.identity.protocol import ident, text
from plantd.identity.tokens import looks_like_refresh, new_refresh_token, refresh_hash

log = logging.getLogger("plantd.identity")


class AuthOps(ServiceCore):
    async def health(self, ctx: Ctx) -> dict[str, Any]:
        return {
            "status": "healthy" if self.store.available else "unhealthy",
            "version": __version__,
            "uptime": int((ctx.now - self.started) * 1e9),  # the original: a Go duration in ns
            "db_status": "connected" if self.store.available else "disconnected",
            "services": ["auth", "user", "organization", "role", "service_account"],
            "kids": [k.kid for k in self.keys.keys],
        }

    async def jwks(self, ctx: Ctx) -> dict[str, Any]:
        return self.keys.jwks()

    async def login(self, ctx: Ctx) -> dict[str, Any]:
        d = ctx.req.data
        identifier = text(d, "identifier", required=False) or text(d, "email", required=False)
        if not identifier:
            raise IdentityError(Code.INVALID_REQUEST, "field 'identifier' is required")
        password = text(d, "password", max_chars=MAX_BYTES * 4)
        audience = self._audiences(d)
        user = await self._check_password(
            ctx, "auth.login", identifier, password, Code.LOGIN_FAILED
        )
        access = await self._mint(user, audience, ctx.now)
        refresh = new_refresh_token()
        await self.store.add_refresh(
            RefreshRecord(
                refresh_hash(refresh),
                new_family(),
                user.subject,
                audience,
                ctx.now,
                ctx.now + self.cfg.refresh_ttl_s,
            )
        )
        user = await self.store.update_user(user.id, {"last_login_at": ctx.now})
        self._allow(ctx, "auth.login", actor=user.subject, target=user.subject, jti=access["jti"])
        return {
            "user": await self._user_out(user),
            **access,
            "refresh_token": refresh,
            "password_change_required": user.must_change_password,
        }

    async def refresh(self, ctx: Ctx) -> dict[str, Any]:
        token = ctx.req.data.get("refresh_token")
        fail = Code.REFRESH_FAILED
        if not looks_like_refresh(token):
            raise self._deny(
                ctx,
                "auth.refresh",
                IdentityError(fail, "not a refresh token; log in again", reason="MALFORMED"),
            )
        assert isinstance(token, str)
        new = new_refresh_token()
        rec = RefreshRecord(
            refresh_hash(new), "", "", (), ctx.now, ctx.now + self.cfg.refresh_ttl_s
        )
        rot = await self.store.rotate_refresh(refresh_hash(token), rec, ctx.now)
        if rot.outcome != "rotated" or rot.record is None:
            user_id = rot.record.user_id if rot.record is not None else ""
            if rot.outcome == "reused" and user_id:
                # Someone replayed a rotated token: we cannot tell the thief from the owner, so
                # the family is revoked (done by the store) and every session of the user ends.
                await self._revoke_sessions(str(user_id), ctx.now, "refresh_reuse")
            reason = {
                "reused": "REFRESH_REUSE",
                "revoked": "REFRESH_REVOKED",
                "expired": "REFRESH_EXPIRED",
            }.get(rot.outcome, "REFRESH_UNKNOWN")
            msg = (
                "refresh token was already used: every session of this user has been revoked; "
                "log in again"
                if rot.outcome == "reused"
                else "refresh token is not valid (expired, revoked or unknown); log in again"
            )
            raise self._deny(
                ctx,
                "auth.refresh",
                IdentityError(fail, msg, reason=reason),
                actor=user_id,
                target=user_id,
            )
        user = await self.store.get_user(user_id=subject_id(rot.record.user_id))
        if user is None or not user.is_active:
            await self.store.revoke_refresh_user(rot.record.user_id)
            raise self._deny(
                ctx,
                "auth.refresh",
                IdentityError(fail, "account is inactive or deleted", reason="INACTIVE"),
                target=rot.record.user_id,
            )
        access = await self._mint(user, rot.record.audience or self.cfg.audiences, ctx.now)
        self._allow(ctx, "auth.refresh", actor=user.subject, target=user.subject, jti=access["jti"])
        return {**access, "refresh_token": new}

    def _lenient_subject(self, token: str) -> str | None:
        """The subject of one of our tokens even if expired or revoked (logout must work then)."""
        try:
            header = jwt.get_unverified_header(token)
            key = next(k for k in self.keys.keys if k.kid == header.get("kid"))
            if header.get("alg") != key.alg:
                return None
            doc = jwt.decode(
                token,
                key.public,
                algorithms=[key.alg],
                issuer=self.cfg.issuer,
                options={"verify_exp": False, "verify_aud": False, "require": ["sub"]},
            )
        except (StopIteration, jwt.PyJWTError):
            return None
        sub = doc.get("sub")
        return sub if isinstance(sub, str) else None

    async def logout(self, ctx: Ctx) -> dict[str, Any]:
        d = ctx.req.data
        token = d.get("access_token") or d.get("token")
        sub = (
            self._lenient_subject(token)
            if isinstance(token, str) and len(token) <= MAX_TOKEN_CHARS
            else None
        )
        if sub is None:
            raise self._deny(
                ctx,
                "auth.logout",
                IdentityError(
                    Code.LOGOUT_FAILED,
                    "field 'access_token' must be one of our tokens",
                    reason="TOKEN_INVALID",
                ),
            )
        nb = await self._revoke_sessions(sub, ctx.now, "logout")
        self._allow(ctx, "auth.logout", actor=sub, target=sub)
        return {"not_before": nb}

    async def validate(self, ctx: Ctx) -> dict[str, Any]:
        token = ctx.req.data.get("token") or ctx.req.data.get("access_token")
        if not isinstance(token, str):
            return {"valid": False, "reason": "TOKEN_MALFORMED"}
        try:
            claims = await self._verify(token[: MAX_TOKEN_CHARS + 1], ctx)
        except TokenError as exc:
            self._deny(
                ctx,
                "auth.validate",
                IdentityError(Code.UNAUTHENTICATED, str(exc), reason=exc.reason.value),
            )
            return {"valid": False, "reason": exc.reason.value, "error": str(exc)}
        raw = claims.raw
        return {
            "valid": True,
            "user_id": subject_id(claims.subject) or claims.subject,  # the original's uint
            "email": raw.get("email", ""),
            "username": raw.get("username", ""),
            "roles": list(claims.roles),
            "permissions": sorted(claims.permissions.granted),
            "organizations": raw.get("organizations", []),
            "audience": list(claims.audience),
            "expires_at": int(claims.expires_at),
            "issued_at": claims.issued_at,
            "jti": claims.jti,
        }

    async def change_password(self, ctx: Ctx) -> dict[str, Any]:
        d = ctx.req.data
        name = text(d, "identifier", required=False)
        user_id = ident(d, "user_id", required=False)
        if not name and user_id:
            found = await self.store.get_user(user_id=user_id)
            name = found.username if found is not None else str(user_id)
        if not name:
            raise IdentityError(Code.INVALID_REQUEST, "field 'user_id' or 'identifier' is required")
        current = text(d, "current_password", max_chars=MAX_BYTES * 4)
        new = text(d, "new_password", max_chars=MAX_BYTES * 4)
        user = await self._check_password(
            ctx, "auth.change_password", name, current, Code.PASSWORD_CHANGE_FAILED
        )
        problems = self.cfg.policy.problems(new, username=user.username, email=user.email)
        if hmac.compare_digest(new.encode(), current.encode()):
            problems.append("the new password must differ from the current one")
        if problems:
            raise self._deny(
                ctx,
                "auth.change_password",
                IdentityError(Code.PASSWORD_REJECTED, "; ".join(problems), reason="POLICY"),
                actor=user.subject,
                target=user.subject,
            )
        await self.store.update_user(
            user.id,
            {
                "password_hash": await self.hasher.hash(new),
                "must_change_password": False,
                "updated_at": ctx.now,
            },
        )
        nb = await self._revoke_sessions(user.subject, ctx.now, "password_change")
        self._allow(ctx, "auth.change_password", actor=user.subject, target=user.subject)
        return {"not_before": nb}

    async def client_credentials(self, ctx: Ctx) -> dict[str, Any]:
        d = ctx.req.data
        client_id = text(d, "client_id", max_chars=64)
        secret = text(d, "client_secret", max_chars=128)
        audience = self._audiences(d)
        await self._throttle(ctx, "auth.token", client_id)
        user = await self.store.get_user(username=client_id)
        stored = user.password_hash if user is not None and user.kind == "service" else None
        ok = hmac.compare_digest(stored or self._dummy_secret, secret_hash(secret))
        if not ok or user is None or stored is None or not user.is_active:
            raise self._deny(
                ctx,
                "auth.token",
                IdentityError(Code.LOGIN_FAILED, INVALID_CREDENTIALS, reason="BAD_CLIENT"),
                target=client_id,
            )
        access = await self._mint(user, audience, ctx.now)
        self._allow(ctx, "auth.token", actor=user.subject, target=user.subject, jti=access["jti"])
        return access

    async def revocations(self, ctx: Ctx) -> dict[str, Any]:
        since = ctx.now - self.cfg.access_ttl_s - 60
        rows = await self.store.recent_not_before(since)
        return {"not_before": [{"sub": s, "not_before": t} for s, t in rows[:10_000]]}

    # ---- TOTP (optional second factor) ---------------------------------------------------------

    async def _self(self, ctx: Ctx) -> User:
        assert ctx.caller is not None
        user = await self.store.get_user(user_id=subject_id(ctx.caller.subject))
        if user is None or user.kind != "user":
            raise IdentityError(Code.NOT_FOUND, "TOTP is for user accounts")
        return user

    async def totp_enroll(self, ctx: Ctx) -> dict[str, Any]:
        user = await self._self(ctx)
        if user.totp_enabled:
            raise IdentityError(Code.CONFLICT, "TOTP is already enabled; disable it first")
        secret = totp.new_secret()
        await self.store.update_user(user.id, {"totp_secret": secret, "updated_at": ctx.now})
        self._allow(ctx, "auth.totp_enroll", target=user.subject)
        return {"secret": secret, "otpauth_uri": totp.uri(secret, user.username, self.cfg.issuer)}

    async def _totp_code(self, ctx: Ctx, user: User, action: str) -> None:
        if not user.totp_secret:
            raise IdentityError(Code.INVALID_REQUEST, "enrol first (auth/totp_enroll)")
        reason = await self._check_totp(user, ctx.req.data.get("code"), ctx.now)
        if reason is not None:
            raise self._deny(
                ctx,
                action,
                IdentityError(Code.INVALID_REQUEST, "invalid or already used code", reason=reason),
                target=user.subject,
            )

    async def totp_confirm(self, ctx: Ctx) -> dict[str, Any]:
        user = await self._self(ctx)
        await self._totp_code(ctx, user, "auth.totp_confirm")
        await self.store.update_user(user.id, {"totp_enabled": True, "updated_at": ctx.now})
        self._allow(ctx, "auth.totp_confirm", target=user.subject)
        return {"totp_enabled": True}

    async def totp_disable(self, ctx: Ctx) -> dict[str, Any]:
        user = await self._self(ctx)
        await self._totp_code(ctx, user, "auth.totp_disable")
        await self.store.update_user(
            user.id, {"totp_enabled": False, "totp_secret": None, "updated_at": ctx.now}
        )
        self._allow(ctx, "auth.totp_disable", target=user.subject)
        return {"totp_enabled": False}
