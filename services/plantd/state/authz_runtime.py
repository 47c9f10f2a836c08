"""The I/O shell of ``--auth identity``: keeps the authorizer's inputs current.

:class:`plantd.state.auth.IdentityAuthorizer` is pure; this feeds it, each in its own task:

- the **JWKS**: from ``--jwks-file`` (re-read when it changes) or fetched from
  ``org.plantd.Identity`` with ``[auth, jwks, {}]`` at start (retried with backoff until it
  answers), then every ``--jwks-refresh-s``, and at most every 5 s sooner when a token named an
  unknown ``kid`` (a key rotated in). ``/readyz`` stays 503 until a key set is loaded;
- per-user **not_before** from the event bus (``plantd.common.auth.follow``), seeded once from
  ``auth/revocations`` so bumps published before this process started count too;
- the **machine registry** (``registry.json``): re-read when its mtime or size changes
  (polled every second); an unusable new file is logged and the old one kept;
- the **audit** budget's summary, flushed every second.

Nothing here is on the request path: a request costs the authorizer's cache lookups only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Final

from prometheus_client import CollectorRegistry, Gauge

from plantd.bus import Publisher
from plantd.common import contract
from plantd.common.auth import KeySetError, NotBeforeMap, Verifier, follow
from plantd.common.curve import CurveClient
from plantd.common.registry import Registry, RegistryError
from plantd.common.service import ServiceError
from plantd.mdp import AsyncClient
from plantd.state.auth import Audit, IdentityAuthorizer, KeyPermissions
from plantd.state.config import StateSettings

log = logging.getLogger("plantd.state.auth")

POLL_S: Final = 1.0  # registry / JWKS file change detection
UNKNOWN_KID_REFETCH_S: Final = 5.0
FETCH_TIMEOUT_S: Final = 2.0
RETRY_MAX_S: Final = 5.0
MAX_REPLY_BYTES: Final = 1024 * 1024  # a JWKS is <= 64 KiB; identity's envelope repeats it


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def identity_data(frames: list[bytes], what: str) -> dict[str, Any]:
    """The ``data`` of an org.plantd.Identity reply, or ValueError saying what went wrong."""
    if len(frames) != 1 or len(frames[0]) > MAX_REPLY_BYTES:
        raise ValueError(f"{what}: expected one reply frame of at most {MAX_REPLY_BYTES} bytes")
    doc = json.loads(frames[0])
    if not isinstance(doc, dict) or doc.get("success") is not True:
        err = doc.get("error") if isinstance(doc, dict) else doc
        raise ValueError(f"{what}: identity answered {err!r}")
    data = doc.get("data")
    if not isinstance(data, dict):
        raise ValueError(f"{what}: the reply has no data object")
    return data


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
        self._jwks_stamp: tuple[int, int] | None = None
        if settings.jwks_file is not None:
            self._load_jwks_file(fatal=True)
        self.authorizer = IdentityAuthorizer(self.verifier, keys=self.keys, audit=self.audit)
        self.jwks_fetches = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._client: AsyncClient | None = None
        if metrics is not None:
            self._metrics(metrics)

    # ---- state ----------------------------------------------------------------------------------

    def has_keys(self) -> bool:
        return bool(self.verifier.kids)

    def describe(self) -> dict[str, Any]:
        return {
            "auth": "identity",
            "issuer": self.settings.auth_issuer,
            "audience": self.settings.auth_audience,
            "jwks": str(self.settings.jwks_file or f"{contract.SERVICE_IDENTITY} auth/jwks"),
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

    # ---- the JWKS -------------------------------------------------------------------------------

    def _load_jwks_file(self, *, fatal: bool) -> None:
        path = self.settings.jwks_file
        assert path is not None
        stamp = _stamp(path)
        try:
            with path.open("rb") as f:
                data = f.read(MAX_REPLY_BYTES + 1)
            self.verifier.set_jwks(data)
        except (OSError, KeySetError) as exc:
            msg = f"JWKS file {path} is unusable: {exc}"
            if fatal:
                raise ServiceError(f"--auth identity: {msg}; fix it or drop --jwks-file") from None
            log.error("%s; keeping the previous keys", msg)
        self._jwks_stamp = stamp

    async def _watch_jwks_file(self) -> None:
        path = self.settings.jwks_file
        assert path is not None
        while True:
            await asyncio.sleep(POLL_S)
            if _stamp(path) != self._jwks_stamp:
                self._load_jwks_file(fatal=False)

    async def _ask(self, operation: bytes) -> dict[str, Any]:
        assert self._client is not None
        frames = await self._client.request(
            contract.SERVICE_IDENTITY, b"auth", operation, b"{}", timeout=FETCH_TIMEOUT_S
        )
        return identity_data(frames, f"auth/{operation.decode()}")

    async def fetch_jwks(self) -> None:
        data = await self._ask(b"jwks")
        self.verifier.set_jwks(data)
        self.jwks_fetches += 1

    async def seed_revocations(self) -> int:
        data = await self._ask(b"revocations")
        rows = data.get("not_before")
        n = 0
        for row in rows if isinstance(rows, list) else ():
            if isinstance(row, dict) and self.not_before.apply(json.dumps(row).encode()):
                n += 1
        return n

    async def _keep_jwks(self) -> None:
        """Fetch until it works, then refresh; sooner after an unknown kid."""
        delay = 0.25
        seeded = False
        while True:
            try:
                await self.fetch_jwks()
                if not seeded:
                    n = await self.seed_revocations()
                    seeded = True
                    log.info("JWKS loaded", extra={"kids": sorted(self.verifier.kids), "seeded": n})
            except Exception as exc:  # identity down or a bad answer: keep the keys, retry
                log.warning("fetching the JWKS from %s failed: %s", contract.SERVICE_IDENTITY, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            delay = 0.25
            unknown = self.verifier.unknown_kids
            waited = 0.0
            while waited < self.settings.jwks_refresh_s:
                step = min(UNKNOWN_KID_REFETCH_S, self.settings.jwks_refresh_s - waited)
                await asyncio.sleep(step)
                waited += step
                if self.verifier.unknown_kids != unknown:
                    break  # a token named a kid we do not know: maybe a rotation

    # ---- not_before and audit -------------------------------------------------------------------

    async def _follow_not_before(self) -> None:
        while True:
            try:
                await follow(self.settings.event_sub_endpoint, self.not_before, curve=self.curve)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("following identity.not_before failed (%s); again in 1 s", exc)
                await asyncio.sleep(1.0)

    async def _flush_audit(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.audit.flush()

    # ---- lifecycle ------------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        jobs: list[Callable[[], Coroutine[Any, Any, None]]] = [
            self._follow_not_before,
            self._flush_audit,
        ]
        if self.settings.jwks_file is not None:
            jobs.append(self._watch_jwks_file)
        else:
            self._client = AsyncClient(
                self.settings.broker_endpoint, timeout=FETCH_TIMEOUT_S, retries=0, curve=self.curve
            )
            jobs.append(self._keep_jwks)
        if self.registry_path is not None:
            jobs.append(self._watch_registry)
        self._tasks = [loop.create_task(job()) for job in jobs]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._client is not None:
            await self._client.close()
        self.audit.flush()
        self.audit_sink.close()
