"""``plantd identity``: run the org.plantd.Identity worker.

``cli`` is the click command the ``plantd`` launcher registers (``plantd.identity.main:cli``);
it also runs alone with ``python -m plantd.identity``.
"""

from __future__ import annotations

import asyncio
import contextlib

from prometheus_client import Counter, Gauge

from plantd.bus import Publisher
from plantd.common import contract
from plantd.common.curve import CurveClient
from plantd.common.keys import KeysError, load_client
from plantd.common.options import service_command
from plantd.common.service import ServiceContext, ServiceError
from plantd.identity.bootstrap import BootstrapError, ensure_admin
from plantd.identity.errors import IdentityError
from plantd.identity.keys import KeyRing, SigningKeyError
from plantd.identity.passwords import Hasher, Policy
from plantd.identity.service import Config, IdentityService
from plantd.identity.settings import IdentitySettings
from plantd.identity.sqlite_store import SqliteStore
from plantd.identity.throttle import Backoff, Bucket
from plantd.mdp import AsyncWorker

DRAIN_S = 5.0


def load_keys(settings: IdentitySettings) -> KeyRing:
    """The signing keys, or a ServiceError saying how to create one (no key: no start)."""
    try:
        if settings.jwt_key_file is not None:
            return KeyRing.from_file(settings.jwt_key_file.expanduser())
        return KeyRing.from_dir(settings.jwt_keys_dir)
    except SigningKeyError as exc:
        raise ServiceError(f"identity refuses to start without a signing key: {exc}") from None


def config_for(s: IdentitySettings) -> Config:
    return Config(
        issuer=s.issuer,
        audiences=tuple(s.audiences),
        access_ttl_s=s.access_ttl_s,
        refresh_ttl_s=s.refresh_ttl_s,
        source_bucket=Bucket(s.login_source_burst, s.login_source_rate),
        global_bucket=Bucket(s.login_global_burst, s.login_global_rate),
        backoff=Backoff(
            free_failures=s.backoff_free_failures,
            max_s=s.backoff_max_s,
            max_failures=s.max_failures,
        ),
        policy=Policy(min_length=s.password_min_length),
    )


def curve_for(settings: IdentitySettings) -> CurveClient | None:
    if not settings.curve:
        return None
    try:
        return load_client(settings.curve_keys, contract.IDENTITY)
    except KeysError as exc:
        raise ServiceError(str(exc)) from None


async def _republish(service: IdentityService, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        with contextlib.suppress(Exception):
            await service.republish_once()


async def main(ctx: ServiceContext) -> None:
    settings = ctx.settings
    assert isinstance(settings, IdentitySettings)
    keys = load_keys(settings)
    curve = curve_for(settings)
    if curve is None:
        ctx.log.warning("CURVE is off: passwords and tokens travel in plaintext")
    store = SqliteStore(settings.data_dir)
    await store.open()
    hasher = Hasher(
        memory_kib=settings.argon2_memory_kib,
        time_cost=settings.argon2_time_cost,
        parallelism=settings.argon2_parallelism,
        workers=settings.hash_concurrency,
    )
    config = config_for(settings)
    try:
        how = await ensure_admin(
            store,
            hasher,
            settings.data_dir,
            bootstrap_file=settings.bootstrap_file,
            policy=config.policy,
        )
    except (BootstrapError, IdentityError) as exc:
        await store.close()
        raise ServiceError(f"bootstrap failed: {exc}") from None
    publisher = Publisher(settings.bus_endpoint, curve=curve)
    service = IdentityService(store, keys, hasher, config=config, sink=publisher)
    requests = Counter(
        "plantd_identity_requests",
        "Identity requests by operation and result (ok or error code)",
        ["operation", "result"],
        registry=ctx.registry,
    )
    service.on_result = lambda op, result: requests.labels(op, result).inc()
    denials = Gauge(
        "plantd_identity_audit_denials", "Denials audited since start", registry=ctx.registry
    )
    denials.set_function(lambda: service.audit.denials)
    ctx.log.info(
        "identity ready to serve",
        extra={
            "store": store.describe(),
            "kids": [k.kid for k in keys.keys],
            "active_kid": keys.active.kid,
            "alg": keys.active.alg,
            "bootstrap": how,
            "argon2": hasher.params,
        },
    )
    worker = AsyncWorker(
        settings.broker_endpoint,
        settings.service,
        service.handle,
        credit=settings.credit,
        heartbeat_ms=settings.heartbeat_ms,
        curve=curve,
    )
    ctx.add_readiness("store", lambda: store.available)
    ctx.add_readiness("jwks", lambda: bool(keys.jwks()["keys"]))
    ctx.add_readiness("broker", worker.connected.is_set)
    loop = asyncio.get_running_loop()
    worker_task = loop.create_task(worker.run())
    republisher = loop.create_task(_republish(service, settings.republish_s))
    try:
        stop = loop.create_task(ctx.stopping.wait())
        done, _ = await asyncio.wait({stop, worker_task}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if worker_task in done:
            worker_task.result()
            raise ServiceError("the MDP worker stopped unexpectedly")
    finally:
        await worker.stop(DRAIN_S)
        with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
            await asyncio.wait_for(worker_task, DRAIN_S + 2.0)
        republisher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await republisher
        hasher.close()
        await store.close()
        publisher.close()
        ctx.log.info("identity service stopped")


cli = service_command(
    IdentitySettings,
    main,
    name="identity",
    help=(
        f"Run the identity service ({contract.SERVICE_IDENTITY}): users, roles, organizations, "
        "service accounts; ES256/EdDSA access tokens that every service verifies offline; "
        "rotating refresh tokens; argon2id passwords; brute-force throttling; audit events on "
        "the event bus (--bus-endpoint, topics 'audit' and 'identity.not_before'). Needs a "
        "signing key: `python -m plantd.identity.keygen DIR` writes one into --jwt-keys-dir. "
        "The embedded SQLite store lives in --data-dir. CURVE is on by default (keys from "
        "--curve-keys: identity.key_secret and broker.key). Operations and codes: "
        "docs/identity.md."
    ),
    grace_s=lambda s: DRAIN_S + 10.0,
)
