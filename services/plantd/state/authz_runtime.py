"""The I/O shell of ``--auth identity``: keeps the authorizer's inputs current.

:class:`plantd.state.auth.IdentityAuthorizer` is pure; this feeds it, each in its own task:

- the **JWKS** and per-user **not_before**: :class:`plantd.common.auth.keeper.KeyKeeper`
  (shared with the gateway): from ``--jwks-file`` or ``org.plantd.Identity``, ``/readyz`` 503
  until a key set is loaded;
- the **machine registry** (``registry.json``): re-read when its mtime or size changes
  (polled every second); an unusable new file is logged and the old one kept;
- the **audit** budget's summary, flushed every second.

Nothing here is on the request path: a request costs the authorizer's cache lookups only.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

from prometheus_client import CollectorRegistry, Gauge

from plantd.bus import Publisher
from plantd.common.auth import NotBeforeMap, Verifier
from plantd.common.auth.keeper import KeyKeeper, cancel_all, identity_data
from plantd.common.auth.keeper import file_stamp as _stamp
from plantd.common.curve import CurveClient
from plantd.common.registry import Registry, RegistryError
from plantd.common.service import ServiceError
from plantd.state.auth import Audit, IdentityAuthorizer, KeyPermissions
from plantd.state.config import StateSettings

__all__ = ["AuthRuntime", "identity_data"]

log = logging.getLogger("plantd.state.auth")

POLL_S: Final = 1.0  # registry change detection


class AuthRuntime:
    def __init__(
        self,
        settings: StateSettings,
        curve: CurveClient | None,
        metrics: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.curve = curve
        self.not_before = NotBeforeMap()
        self.verifier = Verifier(
            issuer=settings.auth_issuer,
            audience=settings.auth_audience,
            not_before=self.not_before,
            cache_entries=settings.auth_cache_entries,
        )
        self.audit_sink = Publisher(settings.event_bus_endpoint, curve=curve)
        self.audit = Audit(self.audit_sink, per_second=settings.audit_max_per_s)
        self.keys = KeyPermissions()
        self.registry_path = settings.registry_path()
        self._registry_stamp: tuple[int, int] | None = None
        if self.registry_path is not None:
            self._load_registry(fatal=True)
        self.keeper = KeyKeeper(  # ServiceError on an unusable --jwks-file
            self.verifier,
            self.not_before,
            jwks_file=settings.jwks_file,
            refresh_s=settings.jwks_refresh_s,
            broker_endpoint=settings.broker_endpoint,
            event_sub_endpoint=settings.event_sub_endpoint,
            curve=curve,
            log=log,
        )
        self.authorizer = IdentityAuthorizer(self.verifier, keys=self.keys, audit=self.audit)
        self._tasks: list[asyncio.Task[None]] = []
        if metrics is not None:
            self._metrics(metrics)

    # ---- state ----------------------------------------------------------------------------------

    def has_keys(self) -> bool:
        return self.keeper.has_keys()

    @property
    def jwks_fetches(self) -> int:
        return self.keeper.jwks_fetches

    def describe(self) -> dict[str, Any]:
        return {
            "auth": "identity",
            "issuer": self.settings.auth_issuer,
            "audience": self.settings.auth_audience,
            "jwks": self.keeper.source(),
            "registry": str(self.registry_path) if self.registry_path else None,
        }

    def _metrics(self, registry: CollectorRegistry) -> None:
        denials = Gauge(
            "plantd_state_auth_audit_suppressed",
            "denials not audited one by one (past --audit-max-per-s; counted in a summary)",
            registry=registry,
        )
        denials.set_function(lambda: self.audit.suppressed)
        keys = Gauge("plantd_state_auth_jwks_keys", "signing keys trusted now", registry=registry)
        keys.set_function(lambda: len(self.verifier.kids))
        hits = Gauge(
            "plantd_state_auth_claims_cache_hits",
            "tokens verified from the cache",
            registry=registry,
        )
        hits.set_function(lambda: self.verifier.hits)

    # ---- the registry ---------------------------------------------------------------------------

    def _load_registry(self, *, fatal: bool) -> None:
        path = self.registry_path
        assert path is not None
        stamp = _stamp(path)
        try:
            reg = Registry.load(path)
        except RegistryError as exc:
            if fatal:
                raise ServiceError(f"--auth identity: {exc}") from None
            log.error("registry change refused, keeping the previous one: %s", exc)
            self._registry_stamp = stamp  # do not retry the same bad file every second
            return
        self.keys.replace(reg.by_key)
        self._registry_stamp = stamp
        log.info("machine registry loaded", extra={"registry": str(path)})

    async def _watch_registry(self) -> None:
        assert self.registry_path is not None
        while True:
            await asyncio.sleep(POLL_S)
            if _stamp(self.registry_path) != self._registry_stamp:
                self._load_registry(fatal=False)

    # ---- audit -------------------------------------------------------------------

    async def _flush_audit(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.audit.flush()

    # ---- lifecycle ------------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        jobs = [*self.keeper.jobs(), self._flush_audit]
        if self.registry_path is not None:
            jobs.append(self._watch_registry)
        self._tasks = [loop.create_task(job()) for job in jobs]

    async def stop(self) -> None:
        await cancel_all(self._tasks)
        await self.keeper.close()
        self.audit.flush()
        self.audit_sink.close()
