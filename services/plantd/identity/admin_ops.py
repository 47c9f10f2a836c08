"""Administration: users, roles, organizations, service accounts, check_permission (each needs
a token with the operation's permission; nobody grants what they do not hold)."""

from __future__ import annotations

import secrets
from typing import Any

from plantd.common.auth import PermissionSet
from plantd.common.auth.permissions import valid_permission
from plantd.identity.core import (
    SERVICE_SECRET_PREFIX,
    Ctx,
    ServiceCore,
    ident_key,
    secret_hash,
    subject_id,
)
from plantd.identity.errors import Code, IdentityError
from plantd.identity.model import (
    EMAIL_RE,
    MAX_NAME_CHARS,
    MAX_PERMISSIONS_PER_ROLE,
    ROLE_NAME_RE,
    USERNAME_RE,
    Organization,
    Role,
    User,
    slugify,
)
from plantd.identity.passwords import MAX_BYTES
from plantd.identity.protocol import flag, ident, integer, strings, text
from plantd.identity.wire import org_json, role_json, user_json


class AdminOps(ServiceCore):
    # ---- users ----------------------------------------------------------------------------------

    def _user_fields(self, d: dict[str, Any], *, partial: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in ("username", "email"):
            if partial and name not in d:
                continue
            v = text(d, name)
            rx = USERNAME_RE if name == "username" else EMAIL_RE
            if not rx.match(v):
                raise IdentityError(Code.INVALID_REQUEST, f"field {name!r} is not a valid {name}")
            out[name] = v.lower() if name == "email" else v
        for name in ("first_name", "last_name"):
            if name in d:
                out[name] = text(d, name, max_chars=MAX_NAME_CHARS, required=False)
        for name in ("is_active", "operator_critical", "email_verified"):
            if name in d:
                out[name] = flag(d, name)
        return out

    async def user_create(self, ctx: Ctx) -> dict[str, Any]:
        d = ctx.req.data
        fields = self._user_fields(d, partial=False)
        password = text(d, "password", max_chars=MAX_BYTES * 4)
        self.cfg.policy.check(password, username=fields["username"], email=fields["email"])
        user = User(
            id=0,
            password_hash=await self.hasher.hash(password),
            created_at=ctx.now,
            updated_at=ctx.now,
            must_change_password=flag(d, "must_change_password"),
            **fields,
        )
        user = await self.store.create_user(user)
        self._allow(ctx, "user.create", target=user.subject)
        return {"user": await self._user_out(user)}

    async def _target_user(self, ctx: Ctx) -> User:
        d = ctx.req.data
        user_id = ident(d, "user_id", required=False)
        username = text(d, "username", required=False)
        email = text(d, "email", required=False)
        if not (user_id or username or email):
            raise IdentityError(Code.INVALID_REQUEST, "Must provide user_id, email, or username")
        user = await self.store.get_user(user_id=user_id, username=username, email=email)
        if user is None:
            raise IdentityError(Code.NOT_FOUND, "user not found")
        return user

    async def user_get(self, ctx: Ctx) -> dict[str, Any]:
        user = await self._target_user(ctx)
        assert ctx.caller is not None
        if user.subject != ctx.caller.subject and not ctx.caller.allows("user:read"):
            raise self._deny(
                ctx,
                "user.get",
                IdentityError(
                    Code.PERMISSION_DENIED, "reading another user needs permission user:read"
                ),
                target=user.subject,
            )
        return {"user": await self._user_out(user)}

    async def user_update(self, ctx: Ctx) -> dict[str, Any]:
        user_id = ident(ctx.req.data, "user_id")
        changes = self._user_fields(ctx.req.data, partial=True)
        changes["updated_at"] = ctx.now
        user = await self.store.update_user(user_id, changes)
        if changes.get("is_active") is False:
            await self._revoke_sessions(str(user_id), ctx.now, "deactivate")
        self._allow(ctx, "user.update", target=str(user_id), detail={"fields": sorted(changes)})
        return {"user": await self._user_out(user)}

    async def user_delete(self, ctx: Ctx) -> dict[str, Any]:
        user_id = ident(ctx.req.data, "user_id")
        if not await self.store.delete_user(user_id):
            raise IdentityError(Code.NOT_FOUND, "user not found")
        await self._revoke_sessions(str(user_id), ctx.now, "delete")
        self._allow(ctx, "user.delete", target=str(user_id))
        return {}

    async def user_list(self, ctx: Ctx) -> dict[str, Any]:
        d = ctx.req.data
        offset = integer(d, "offset", 0, 0, 10**9)
        limit = integer(d, "limit", 50, 1, 100)
        users, total = await self.store.list_users(offset, limit)
        return {
            "users": [user_json(u) for u in users],
            "total": total,
            "offset": offset,
            "limit": limit,
        }

    async def _set_active(self, ctx: Ctx, active: bool) -> dict[str, Any]:
        user_id = ident(ctx.req.data, "user_id")
        await self.store.update_user(user_id, {"is_active": active, "updated_at": ctx.now})
        if not active:
            await self._revoke_sessions(str(user_id), ctx.now, "deactivate")
        self._allow(ctx, "user.activate" if active else "user.deactivate", target=str(user_id))
        return {}

    async def user_activate(self, ctx: Ctx) -> dict[str, Any]:
        return await self._set_active(ctx, True)

    async def user_deactivate(self, ctx: Ctx) -> dict[str, Any]:
        return await self._set_active(ctx, False)

    async def user_unlock(self, ctx: Ctx) -> dict[str, Any]:
        user = await self._target_user(ctx)
        for login_name in (user.username, user.email):
            await self.store.clear_failures(ident_key(login_name))
        self._allow(ctx, "user.unlock", target=user.subject)
        return {}

    async def _role_arg(self, d: dict[str, Any]) -> Role:
        role_id = ident(d, "role_id", required=False)
        name = text(d, "role", max_chars=64, required=False) or text(
            d, "name", max_chars=64, required=False
        )
        role = await self.store.get_role(role_id=role_id, name=name) if role_id or name else None
        if role is None:
            raise IdentityError(Code.NOT_FOUND, "role not found (give role_id or name)")
        return role

    def _guard_escalation(self, ctx: Ctx, action: str, perms: list[str], target: str) -> None:
        assert ctx.caller is not None
        missing = [p for p in perms if not ctx.caller.allows(p)]
        if missing:
            raise self._deny(
                ctx,
                action,
                IdentityError(
                    Code.PERMISSION_DENIED,
                    f"you cannot grant permissions you do not hold: {', '.join(missing[:5])}",
                    reason="ESCALATION",
                ),
                target=target,
            )

    async def assign_role(self, ctx: Ctx) -> dict[str, Any]:
        role = await self._role_arg(ctx.req.data)
        self._guard_escalation(ctx, "user.assign_role", role.permissions, role.name)
        user_id = ident(ctx.req.data, "user_id")
        org_id = ident(ctx.req.data, "org_id", required=False)
        if role.scope == "global" and org_id:
            raise IdentityError(Code.INVALID_REQUEST, "a global role is assigned without org_id")
        if (
            role.scope == "organization"
            and org_id
            and await self.store.get_org(org_id=org_id) is None
        ):
            raise IdentityError(Code.NOT_FOUND, "organization not found")
        changed = await self.store.assign("role", user_id, role.id, org_id)
        self._allow(ctx, "user.assign_role", target=str(user_id), detail={"role": role.name})
        return {"changed": changed}

    async def unassign_role(self, ctx: Ctx) -> dict[str, Any]:
        role = await self._role_arg(ctx.req.data)
        user_id = ident(ctx.req.data, "user_id")
        org_id = ident(ctx.req.data, "org_id", required=False)
        changed = await self.store.unassign("role", user_id, role.id, org_id)
        if changed:  # tokens carrying the role must not outlive it
            await self._revoke_sessions(str(user_id), ctx.now, "role_removed")
        self._allow(ctx, "user.unassign_role", target=str(user_id), detail={"role": role.name})
        return {"changed": changed}

    async def assign_org(self, ctx: Ctx) -> dict[str, Any]:
        user_id = ident(ctx.req.data, "user_id")
        org_id = ident(ctx.req.data, "org_id")
        changed = await self.store.assign("org", user_id, org_id)
        self._allow(ctx, "user.assign_organization", target=str(user_id), detail={"org": org_id})
        return {"changed": changed}

    async def unassign_org(self, ctx: Ctx) -> dict[str, Any]:
        user_id = ident(ctx.req.data, "user_id")
        org_id = ident(ctx.req.data, "org_id")
        changed = await self.store.unassign("org", user_id, org_id)
        self._allow(ctx, "user.unassign_organization", target=str(user_id), detail={"org": org_id})
        return {"changed": changed}

    # ---- roles ----------------------------------------------------------------------------------

    def _permissions_arg(self, d: dict[str, Any]) -> list[str] | None:
        perms = strings(d, "permissions", max_items=MAX_PERMISSIONS_PER_ROLE)
        if perms is not None:
            bad = [p for p in perms if not valid_permission(p)]
            if bad:
                raise IdentityError(Code.INVALID_REQUEST, f"invalid permission {bad[0][:64]!r}")
            perms = sorted(set(perms))
        return perms

    async def role_create(self, ctx: Ctx) -> dict[str, Any]:
        d = ctx.req.data
        name = text(d, "name", max_chars=64)
        if not ROLE_NAME_RE.match(name):
            raise IdentityError(Code.INVALID_REQUEST, "a role name is 1-64 of A-Z a-z 0-9 _ . : -")
        scope = text(d, "scope", max_chars=16, required=False) or "organization"
        if scope not in ("global", "organization"):
            raise IdentityError(Code.INVALID_REQUEST, "scope is global or organization")
        perms = self._permissions_arg(d) or []
        self._guard_escalation(ctx, "role.create", perms, name)
        desc = text(d, "description", max_chars=500, required=False)
        role = Role(0, name, desc, perms, scope, ctx.now, ctx.now)
        await self.store.create_role(role)
        self._allow(ctx, "role.create", target=name, detail={"permissions": perms})
        return {"role": role_json(role)}

    async def role_get(self, ctx: Ctx) -> dict[str, Any]:
        return {"role": role_json(await self._role_arg(ctx.req.data))}

    async def role_update(self, ctx: Ctx) -> dict[str, Any]:
        d = ctx.req.data
        role = await self._role_arg(d)
        changes: dict[str, Any] = {}
        perms = self._permissions_arg(d)
        if perms is not None:
            self._guard_escalation(ctx, "role.update", perms, role.name)
            changes["permissions"] = perms
        if "description" in d:
            changes["description"] = text(d, "description", max_chars=500, required=False)
        changes["updated_at"] = ctx.now
        updated = await self.store.update_role(role.id, changes)
        self._allow(ctx, "role.update", target=role.name, detail={"fields": sorted(changes)})
        return {"role": role_json(updated)}

    async def role_delete(self, ctx: Ctx) -> dict[str, Any]:
        role = await self._role_arg(ctx.req.data)
        await self.store.delete_role(role.id)
        self._allow(ctx, "role.delete", target=role.name)
        return {}

    async def role_list(self, ctx: Ctx) -> dict[str, Any]:
        offset = integer(ctx.req.data, "offset", 0, 0, 10**9)
        limit = integer(ctx.req.data, "limit", 50, 1, 100)
        roles, total = await self.store.list_roles(offset, limit)
        return {"roles": [role_json(r) for r in roles], "total": total}

    async def check_permission(self, ctx: Ctx) -> dict[str, Any]:
        d = ctx.req.data
        assert ctx.caller is not None
        permission = text(d, "permission", max_chars=256)
        scope = text(d, "scope", max_chars=255, required=False) or None
        user_id = ident(d, "user_id", required=False)
        if user_id and str(user_id) != ctx.caller.subject:
            if not ctx.caller.allows("role:read"):
                raise self._deny(
                    ctx,
                    "role.check_permission",
                    IdentityError(
                        Code.PERMISSION_DENIED, "checking another user needs permission role:read"
                    ),
                    target=user_id,
                )
            user = await self.store.get_user(user_id=user_id)
            if user is None:
                raise IdentityError(Code.NOT_FOUND, "user not found")
            held = PermissionSet(await self._permissions(user))
        else:
            user_id, held = subject_id(ctx.caller.subject), ctx.caller.permissions
        return {
            "allowed": held.allows(permission, scope),
            "permission": permission,
            "scope": scope,
            "user_id": user_id,
        }

    # ---- organizations --------------------------------------------------------------------------

    async def _org_arg(self, d: dict[str, Any]) -> Organization:
        org_id = ident(d, "org_id", required=False)
        slug = text(d, "slug", max_chars=100, required=False)
        org = await self.store.get_org(org_id=org_id, slug=slug) if org_id or slug else None
        if org is None:
            raise IdentityError(Code.NOT_FOUND, "organization not found (give org_id or slug)")
        return org

    async def org_create(self, ctx: Ctx) -> dict[str, Any]:
        d = ctx.req.data
        name = text(d, "name", max_chars=MAX_NAME_CHARS)
        slug = slugify(text(d, "slug", max_chars=100, required=False) or name)
        if not slug:
            raise IdentityError(Code.INVALID_REQUEST, "the name needs letters or digits")
        desc = text(d, "description", max_chars=500, required=False)
        org = Organization(0, name, slug, desc, True, ctx.now, ctx.now)
        await self.store.create_org(org)
        self._allow(ctx, "organization.create", target=slug)
        return {"organization": org_json(org)}

    async def org_get(self, ctx: Ctx) -> dict[str, Any]:
        return {"organization": org_json(await self._org_arg(ctx.req.data))}

    async def org_update(self, ctx: Ctx) -> dict[str, Any]:
        d = ctx.req.data
        org = await self._org_arg(d)
        changes: dict[str, Any] = {}
        if "name" in d:
            changes["name"] = text(d, "name", max_chars=MAX_NAME_CHARS)
        if "description" in d:
            changes["description"] = text(d, "description", max_chars=500, required=False)
        if "is_active" in d:
            changes["is_active"] = flag(d, "is_active")
        changes["updated_at"] = ctx.now
        updated = await self.store.update_org(org.id, changes)
        self._allow(ctx, "organization.update", target=org.slug)
        return {"organization": org_json(updated)}

    async def org_delete(self, ctx: Ctx) -> dict[str, Any]:
        org = await self._org_arg(ctx.req.data)
        await self.store.delete_org(org.id)
        self._allow(ctx, "organization.delete", target=org.slug)
        return {}

    async def org_list(self, ctx: Ctx) -> dict[str, Any]:
        offset = integer(ctx.req.data, "offset", 0, 0, 10**9)
        limit = integer(ctx.req.data, "limit", 50, 1, 100)
        orgs, total = await self.store.list_orgs(offset, limit)
        return {"organizations": [org_json(o) for o in orgs], "total": total}

    # ---- service accounts -----------------------------------------------------------------------

    async def sa_create(self, ctx: Ctx) -> dict[str, Any]:
        d = ctx.req.data
        name = text(d, "name", max_chars=50)
        if not USERNAME_RE.match(name):
            raise IdentityError(Code.INVALID_REQUEST, "a service account name is 3-50 characters")
        roles = [await self._role_arg({"name": r}) for r in strings(d, "roles", max_items=32) or []]
        for role in roles:
            self._guard_escalation(ctx, "service_account.create", role.permissions, role.name)
        secret = SERVICE_SECRET_PREFIX + secrets.token_urlsafe(32)
        user = User(
            id=0,
            username=name,
            email=f"{name.lower()}@service.invalid",
            password_hash=secret_hash(secret),
            kind="service",
            created_at=ctx.now,
            updated_at=ctx.now,
            first_name=text(d, "description", max_chars=MAX_NAME_CHARS, required=False),
        )
        user = await self.store.create_user(user)
        for role in roles:
            await self.store.assign("role", user.id, role.id)
        self._allow(ctx, "service_account.create", target=user.subject)
        # The secret is shown once; only its sha256 is stored.
        return {
            "service_account": await self._user_out(user),
            "client_id": name,
            "client_secret": secret,
        }

    async def sa_list(self, ctx: Ctx) -> dict[str, Any]:
        users, _ = await self.store.list_users(0, 10_000)
        return {"service_accounts": [user_json(u) for u in users if u.kind == "service"][:100]}

    async def sa_delete(self, ctx: Ctx) -> dict[str, Any]:
        user = await self._target_user(ctx)
        if user.kind != "service":
            raise IdentityError(Code.INVALID_REQUEST, "not a service account")
        await self.store.delete_user(user.id)
        await self._revoke_sessions(user.subject, ctx.now, "delete")
        self._allow(ctx, "service_account.delete", target=user.subject)
        return {}
