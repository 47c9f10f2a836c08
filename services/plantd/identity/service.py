"""org.plantd.Identity's request path: one request in, one reply frame out, never raising.

Each request is its own task in the worker (one bad request fails alone). Every denial is an
audit event. Operations (reference plantd-original.md §2.3.2 names):

- auth: ``login``, ``refresh``, ``logout``, ``validate``, ``change_password``, ``jwks``,
  ``token`` (client credentials for service accounts), ``revocations``, ``totp_enroll``,
  ``totp_confirm``, ``totp_disable``;
- user: ``create``, ``get``, ``update``, ``delete``, ``list``, ``activate``, ``deactivate``,
  ``unlock``, ``assign_role``, ``unassign_role``, ``assign_organization``,
  ``unassign_organization``;
- role: ``create``, ``get``, ``update``, ``delete``, ``list``, ``check_permission``;
- organization: ``create``, ``get``, ``update``, ``delete``, ``list``;
- service_account: ``create``, ``list``, ``delete``;
- modules: ``enroll`` (admin token, or a one-time ``join_token``), ``join-token``, ``list``,
  ``get``, ``revoke``, ``registry`` (machine identities: :mod:`plantd.identity.module_ops`);
- health: ``check``.

Everything but login, refresh, logout, validate, change_password, jwks, token and health needs
an access token (field ``token``) for audience org.plantd.Identity holding the operation's
permission from the original catalogue (``user:create``, ``role:assign``, ... or
``system:admin``). Nobody can grant a permission they do not hold (escalation guard).

One exception, for the broker's key map: with ``caller_frames`` (the worker asked for the
caller frame at READY, docs/protocol.md section 5) ``modules/registry`` needs no token when the
broker says the caller is itself, identity ``broker`` of kind ``plantd``
(:data:`BROKER_OPERATIONS`; docs/identity.md "Where the broker's registry comes from").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from plantd.common import contract
from plantd.common.registry import PLANTD_KIND
from plantd.identity import protocol
from plantd.identity.admin_ops import AdminOps
from plantd.identity.audit import Sink
from plantd.identity.auth_ops import AuthOps
from plantd.identity.core import UNPARSED, Config, Ctx
from plantd.identity.errors import Code, IdentityError
from plantd.identity.keys import KeyRing
from plantd.identity.module_ops import ModuleOps
from plantd.identity.passwords import Hasher
from plantd.identity.protocol import text
from plantd.identity.store import Store
from plantd.mdp.caller import Caller, split_caller

__all__ = ["Config", "IdentityService"]

log = logging.getLogger("plantd.identity")

Handler = Callable[[Ctx], Awaitable[dict[str, Any]]]

# What the broker itself may ask without a user token: the enrolments it merges into its
# registry (public keys and grants, no secrets). Nothing else.
BROKER_OPERATIONS: Final = frozenset({("modules", "registry")})


def is_broker(caller: Caller | None) -> bool:
    """The broker's caller frame names the broker itself (only the broker writes the frame)."""
    return caller is not None and caller.name == contract.BROKER and caller.kind == PLANTD_KIND


class IdentityService(AuthOps, AdminOps, ModuleOps):
    def __init__(
        self,
        store: Store,
        keys: KeyRing,
        hasher: Hasher,
        *,
        config: Config | None = None,
        sink: Sink | None = None,
        clock: Callable[[], float] = time.time,
        caller_frames: bool = False,
    ) -> None:
        super().__init__(store, keys, hasher, config=config, sink=sink, clock=clock)
        # True only when the worker asked the broker for the caller frame: then a body that
        # starts with it is the broker's, never a client's (the broker refuses those).
        self.caller_frames = caller_frames
        self.handlers: dict[tuple[str, str], tuple[Handler, str | None]] = {
            # (category, op) -> (handler, permission; None = no token needed, "" = any token)
            ("health", "check"): (self.health, None),
            ("auth", "login"): (self.login, None),
            ("auth", "refresh"): (self.refresh, None),
            ("auth", "logout"): (self.logout, None),
            ("auth", "validate"): (self.validate, None),
            ("auth", "change_password"): (self.change_password, None),
            ("auth", "jwks"): (self.jwks, None),
            ("auth", "token"): (self.client_credentials, None),
            ("auth", "revocations"): (self.revocations, None),
            ("auth", "totp_enroll"): (self.totp_enroll, ""),
            ("auth", "totp_confirm"): (self.totp_confirm, ""),
            ("auth", "totp_disable"): (self.totp_disable, ""),
            ("user", "create"): (self.user_create, "user:create"),
            ("user", "get"): (self.user_get, ""),
            ("user", "update"): (self.user_update, "user:update"),
            ("user", "delete"): (self.user_delete, "user:delete"),
            ("user", "list"): (self.user_list, "user:list"),
            ("user", "activate"): (self.user_activate, "user:activate"),
            ("user", "deactivate"): (self.user_deactivate, "user:deactivate"),
            ("user", "unlock"): (self.user_unlock, "user:activate"),
            ("user", "assign_role"): (self.assign_role, "role:assign"),
            ("user", "unassign_role"): (self.unassign_role, "role:unassign"),
            ("user", "assign_organization"): (self.assign_org, "organization:member:add"),
            ("user", "unassign_organization"): (self.unassign_org, "organization:member:remove"),
            ("role", "create"): (self.role_create, "role:create"),
            ("role", "get"): (self.role_get, "role:read"),
            ("role", "update"): (self.role_update, "role:update"),
            ("role", "delete"): (self.role_delete, "role:delete"),
            ("role", "list"): (self.role_list, "role:list"),
            ("role", "check_permission"): (self.check_permission, ""),
            ("organization", "create"): (self.org_create, "organization:create"),
            ("organization", "get"): (self.org_get, "organization:read"),
            ("organization", "update"): (self.org_update, "organization:update"),
            ("organization", "delete"): (self.org_delete, "organization:delete"),
            ("organization", "list"): (self.org_list, "organization:list"),
            ("service_account", "create"): (self.sa_create, "user:create"),
            ("service_account", "list"): (self.sa_list, "user:list"),
            ("service_account", "delete"): (self.sa_delete, "user:delete"),
            ("modules", "enroll"): (self.module_enroll, None),  # admin token or join token
            ("modules", "join-token"): (self.module_join_token, "identity:module:join-token"),
            ("modules", "list"): (self.module_list, "identity:module:list"),
            ("modules", "registry"): (self.module_registry, "identity:module:list"),
            ("modules", "get"): (self.module_get, "identity:module:read"),
            ("modules", "revoke"): (self.module_revoke, "identity:module:revoke"),
        }

    # ---- the request path -----------------------------------------------------------------------

    async def handle(self, frames: list[bytes]) -> list[bytes]:
        now = self.clock()
        rid = ""
        op = "invalid"
        ctx = Ctx(UNPARSED, now, "-")
        try:
            who: Caller | None = None
            if self.caller_frames:
                who, frames = split_caller(frames)
            req = ctx.req = protocol.decode(frames)
            rid = req.request_id
            op = f"{req.category}.{req.operation}"
            entry = self.handlers.get((req.category, req.operation))
            if entry is None:
                raise IdentityError(
                    Code.UNKNOWN_OPERATION, f"Unknown operation: {req.category}/{req.operation}"
                )
            fn, permission = entry
            ip = text(req.data, "ip_address", max_chars=64, required=False)
            # Audit's source: the caller's address if given, else its CURVE key.
            ctx.source = ip or (who.key if who is not None and who.key else "-")
            broker = (req.category, req.operation) in BROKER_OPERATIONS and is_broker(who)
            if permission is not None and not broker:
                ctx.caller = await self._authorize(ctx, op, permission)
            data = await fn(ctx)
            self._count(op, "ok")
            return [protocol.success(rid, data, self.clock())]
        except IdentityError as err:
            if not err.audited:  # every refusal is an audit event, malformed requests included
                self._deny(ctx, op, err)
            self._count(op, err.code.value)
            return [protocol.failure(rid, err, self.clock())]
        except Exception as exc:  # a bug costs this request, never the worker
            log.exception("identity request failed", extra={"operation": op})
            bug = IdentityError(Code.INTERNAL, f"internal error: {type(exc).__name__}")
            self._count(op, bug.code.value)
            return [protocol.failure(rid, bug, self.clock())]
