"""Enrolment operations (category ``modules``): machine identities and one-time join tokens.

- ``modules/enroll``: with an admin ``token`` (``identity:module:enroll``) the request names
  the whole grant; with a ``join_token`` (no user token) only ``public_key`` (and, optionally,
  the grant's ``name``): the grant is the one the admin fixed when issuing the token, so its
  holder cannot widen it. A join token is taken by one atomic store step, so it enrols once
  even when two replicas race; a redemption that then fails (a key enrolled already) still
  uses it up.
- ``modules/join-token`` (``identity:module:join-token``), ``list``/``registry``
  (``identity:module:list``), ``get`` (``identity:module:read``), ``revoke``
  (``identity:module:revoke``).

Escalation guard as for roles: nobody grants a permission they do not hold; kind ``plantd``
(may serve ``org.plantd.*``) needs ``system:admin`` and is never granted by a join token.
After each change the registry file (``registry_file``) is rewritten, atomically and 0600.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
from typing import Any, Final

from plantd.common.auth.permissions import SYSTEM_ADMIN
from plantd.common.files import write_atomic
from plantd.identity.core import Ctx, ServiceCore
from plantd.identity.enrolment import check_key, grant_from, module_from_grant, registry_document
from plantd.identity.errors import Code, IdentityError
from plantd.identity.protocol import integer, text

log = logging.getLogger("plantd.identity")

JOIN_PREFIX: Final = "pld_jt_"
MAX_JOIN_TOKEN_CHARS: Final = 128


def join_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class ModuleOps(ServiceCore):
    registry_writes = 0
    registry_write_errors = 0
    _registry_last: bytes | None = None

    def _guard_grant(self, ctx: Ctx, action: str, grant: dict[str, Any]) -> None:
        assert ctx.caller is not None
        missing = [p for p in grant["permissions"] if not ctx.caller.allows(p)]
        if grant["kind"] == "plantd" and not ctx.caller.allows(SYSTEM_ADMIN):
            missing.insert(0, f"{SYSTEM_ADMIN} (kind plantd)")
        if missing:
            raise self._deny(
                ctx,
                action,
                IdentityError(
                    Code.PERMISSION_DENIED,
                    f"you cannot grant what you do not hold: {', '.join(missing[:5])}",
                    reason="ESCALATION",
                ),
                target=grant["name"],
            )

    async def module_enroll(self, ctx: Ctx) -> dict[str, Any]:
        d = ctx.req.data
        if "join_token" in d:
            return await self._enroll_joined(ctx)
        await self._authorize(ctx, "modules.enroll", "identity:module:enroll")
        assert ctx.caller is not None
        grant = grant_from(d)
        self._guard_grant(ctx, "modules.enroll", grant)
        module = module_from_grant(
            grant, check_key(d.get("public_key")), ctx.now, ctx.caller.subject
        )
        return await self._add(ctx, module, via="admin")

    async def _enroll_joined(self, ctx: Ctx) -> dict[str, Any]:
        d = ctx.req.data
        token = text(d, "join_token", max_chars=MAX_JOIN_TOKEN_CHARS)
        name = text(d, "name", max_chars=63, required=False)
        await self._throttle(ctx, "modules.enroll", name or "join")  # guessing costs a bucket
        key = check_key(d.get("public_key"))  # a bad key is refused before the token is used
        th = join_hash(token)
        raw = (
            await self.store.take_join_token(th, ctx.now) if token.startswith(JOIN_PREFIX) else None
        )
        if raw is None:
            raise self._deny(
                ctx,
                "modules.enroll",
                IdentityError(
                    Code.UNAUTHENTICATED,
                    "the join token is unknown, expired or used already; ask an administrator "
                    "for a new one (modules/join-token)",
                    reason="JOIN_TOKEN_INVALID",
                ),
                target=name,
            )
        grant = json.loads(raw)
        if name and name != grant["name"]:
            raise self._deny(
                ctx,
                "modules.enroll",
                IdentityError(
                    Code.PERMISSION_DENIED,
                    f"this join token is for {grant['name']!r}, not {name!r} (it is used up)",
                    reason="JOIN_TOKEN_NAME",
                ),
                target=name,
            )
        module = module_from_grant(grant, key, ctx.now, "join:" + th[:12])
        return await self._add(ctx, module, via="join_token", actor="join:" + th[:12])

    async def _add(self, ctx: Ctx, module: Any, *, via: str, actor: str = "") -> dict[str, Any]:
        try:
            await self.store.add_module(module, self.cfg.max_modules)
        except IdentityError as err:
            raise self._deny(ctx, "modules.enroll", err, target=module.name, actor=actor) from None
        self._allow(
            ctx,
            "modules.enroll",
            actor=actor,
            target=module.name,
            detail={"kind": module.kind, "public_key": module.public_key, "via": via},
        )
        await self.write_registry()
        return {"module": module.doc()}

    async def module_join_token(self, ctx: Ctx) -> dict[str, Any]:
        grant = grant_from(ctx.req.data)
        if grant["kind"] == "plantd":
            raise IdentityError(
                Code.INVALID_REQUEST,
                "kind plantd is enrolled only by an administrator (modules/enroll), never by "
                "a join token",
            )
        self._guard_grant(ctx, "modules.join_token", grant)
        if await self.store.get_module(grant["name"]) is not None:
            raise IdentityError(Code.CONFLICT, f"{grant['name']!r} is enrolled already")
        ttl = integer(
            ctx.req.data, "ttl_s", self.cfg.join_token_ttl_s, 60, self.cfg.join_token_ttl_s
        )
        token = JOIN_PREFIX + secrets.token_urlsafe(32)
        expires = ctx.now + ttl
        assert ctx.caller is not None
        doc = json.dumps({**grant, "issued_by": ctx.caller.subject}, separators=(",", ":"))
        await self.store.add_join_token(
            join_hash(token), doc, expires, ctx.now, self.cfg.max_join_tokens
        )
        self._allow(
            ctx,
            "modules.join_token",
            target=grant["name"],
            detail={"token_id": join_hash(token)[:12], "expires_at": int(expires)},
        )
        return {"join_token": token, "expires_at": int(expires), "name": grant["name"]}

    async def module_list(self, ctx: Ctx) -> dict[str, Any]:
        modules = await self.store.list_modules()
        return {"modules": [m.doc() for m in modules], "total": len(modules)}

    async def module_get(self, ctx: Ctx) -> dict[str, Any]:
        name = text(ctx.req.data, "name", max_chars=63)
        module = await self.store.get_module(name)
        if module is None:
            raise IdentityError(Code.NOT_FOUND, f"no identity {name!r} is enrolled")
        return {"module": module.doc()}

    async def module_revoke(self, ctx: Ctx) -> dict[str, Any]:
        name = text(ctx.req.data, "name", max_chars=63)
        module = await self.store.delete_module(name)
        if module is None:
            raise IdentityError(Code.NOT_FOUND, f"no identity {name!r} is enrolled")
        self._allow(ctx, "modules.revoke", target=name, detail={"public_key": module.public_key})
        await self.write_registry()
        return {"revoked": True, "module": module.doc()}

    async def module_registry(self, ctx: Ctx) -> dict[str, Any]:
        return registry_document(await self.store.list_modules())

    async def write_registry(self, *, only_if_changed: bool = False) -> bool:
        """Rewrite the registry file (if configured) from the store; False when it failed.

        Called after every change, and periodically with ``only_if_changed``: two replicas on
        one machine may finish their writes out of order (the later rename may carry the older
        list), and the next periodic pass of either replaces it with the store's current one."""
        path = self.cfg.registry_file
        if path is None:
            return True
        doc = registry_document(await self.store.list_modules())
        data = (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()
        if only_if_changed and data == self._registry_last:
            return True
        try:
            await asyncio.to_thread(write_atomic, path.parent, path.name, data, 0o600)
        except (OSError, ValueError) as exc:
            self.registry_write_errors += 1
            log.error(
                "cannot write the registry file %s: %s; the broker keeps its old registry",
                path,
                exc,
            )
            return False
        self.registry_writes += 1
        self._registry_last = data
        return True
