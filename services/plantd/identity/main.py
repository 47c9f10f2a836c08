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
from plantd.common.auth.breakglass import BreakGlassKeyError, load_public
from plantd.common.curve import CurveClient
from plantd.common.keys import KeysError, load_client
from plantd.common.options import service_command
from plantd.common.service import ServiceConfigError, ServiceContext, ServiceError
from plantd.identity.bootstrap import BootstrapError, ensure_admin
from plantd.identity.errors import IdentityError
from plantd.identity.keys import KeyRing, SigningKeyError
from plantd.identity.passwords import Hasher, Policy
from plantd.identity.redis_store import UNREACHABLE, RedisStore
from plantd.identity.service import Config, IdentityService
from plantd.identity.settings import IdentitySettings
from plantd.identity.sqlite_store import SqliteStore
from plantd.identity.store import Store
from plantd.identity.throttle import Backoff, Bucket
from plantd.mdp import AsyncWorker
from plantd.mdp.fleet import WorkerFleet

DRAIN_S = 5.0
# Backoff of the first store connection (Redis not listening yet): 0.2, 0.4 ... 5 s.
STORE_RETRY_FIRST_S = 0.2
STORE_RETRY_MAX_S = 5.0


def load_keys(settings: IdentitySettings) -> KeyRing:
    """The signing keys, or a ServiceError saying how to create one (no key: no start)."""
    try:
        if settings.jwt_key_file is not None:
            return KeyRing.from_file(settings.jwt_key_file.expanduser())
        return KeyRing.from_dir(settings.jwt_keys_dir)
    except SigningKeyError as exc:
        raise ServiceConfigError(
            f"identity refuses to start without a signing key: {exc}"
        ) from None


def break_glass_for(s: IdentitySettings) -> dict[str, object] | None:
    if s.break_glass_key_file is None:
        return None
    try:
        return load_public(s.break_glass_key_file.expanduser())
    except BreakGlassKeyError as exc:
        raise ServiceConfigError(str(exc)) from None


async def _open_store(ctx: ServiceContext, store: Store) -> bool:
    """Open the store, waiting (unready, backing off to STORE_RETRY_MAX_S) while Redis does not
    answer: a new cluster starts every pod at once, and on real pods identity used to exit
    into a restart because Redis was not listening yet. What waiting cannot fix (wrong
    credentials, a bad TLS or SQLite setting) fails at once. False when told to stop first."""
    delay, attempts = STORE_RETRY_FIRST_S, 0
    while True:
        try:
            await store.open()
            if attempts:
                ctx.log.info("identity store reachable", extra={"attempts": attempts + 1})
            return True
        except IdentityError as exc:
            if exc.reason != UNREACHABLE:
                raise ServiceError(f"{exc.message} (store {store.describe()})") from None
            attempts += 1
            if attempts == 1 or attempts % 10 == 0:  # one line per ~minute, not per attempt
                ctx.log.warning(
                    "identity store not reachable yet; retrying",
                    extra={"error": exc.message, "attempts": attempts, "retry_in_s": delay},
                )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ctx.stopping.wait(), delay)
            await store.close()
            return False
        delay = min(delay * 2, STORE_RETRY_MAX_S)


def store_for(s: IdentitySettings) -> Store:
    if s.store == "redis":
        password = s.redis_password.get_secret_value() if s.redis_password else None
        return RedisStore(
            s.redis_url,
            prefix=s.redis_prefix,
            password=password,
            password_file=s.redis_password_file,
            ca_file=s.redis_ca_file,
            socket_timeout=s.redis_timeout_ms / 1000.0,
        )
    return SqliteStore(s.data_dir)


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
        break_glass_jwks=break_glass_for(s),
        registry_file=s.registry_file.expanduser() if s.registry_file else None,
        max_modules=s.max_modules,
        join_token_ttl_s=s.join_token_ttl_s,
        max_join_tokens=s.max_join_tokens,
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
        with contextlib.suppress(Exception):  # converge after out-of-order replica writes
            await service.write_registry(only_if_changed=True)


async def main(ctx: ServiceContext) -> None:
    settings = ctx.settings
    assert isinstance(settings, IdentitySettings)
    keys = load_keys(settings)
    curve = curve_for(settings)
    if curve is None:
        ctx.log.warning("CURVE is off: passwords and tokens travel in plaintext")
    config = config_for(settings)
    if config.break_glass_jwks is not None:
        ctx.log.warning(
            "break-glass tokens are accepted (signed by the offline key in %s)",
            settings.break_glass_key_file,
            extra={"break_glass": True},
        )
    store = store_for(settings)
    ctx.add_readiness("store", lambda: store.available)
    if not await _open_store(ctx, store):
        return  # asked to stop while waiting for the store
    hasher = Hasher(
        memory_kib=settings.argon2_memory_kib,
        time_cost=settings.argon2_time_cost,
        parallelism=settings.argon2_parallelism,
        workers=settings.hash_concurrency,
    )
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
    # caller_frames: the broker's own fetch of modules/registry is known by its caller frame.
    service = IdentityService(
        store, keys, hasher, config=config, sink=publisher, caller_frames=True
    )
    requests = Counter(
        "plantd_identity_requests",
        "Identity requests by operation and result (ok or error code)",
        ["operation", "result"],
        registry=ctx.registry,
    )
    service.on_result = lambda op, result: requests.labels(op, result).inc()
    if config.registry_file is not None and not await service.write_registry():
        await store.close()
        raise ServiceError(f"cannot write the registry file {config.registry_file}")
    denials = Gauge(
        "plantd_identity_audit_denials", "Denials audited since start", registry=ctx.registry
    )
    denials.set_function(lambda: service.audit.denials)
    registry_errors = Gauge(
        "plantd_identity_registry_write_errors",
        "Failed writes of the registry file since start (the broker keeps its old registry)",
        registry=ctx.registry,
    )
    registry_errors.set_function(lambda: service.registry_write_errors)
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

    def on_broker(endpoint: str, credit: int) -> AsyncWorker:
        return AsyncWorker(
            endpoint,
            settings.service,
            service.handle,
            credit=credit,
            heartbeat_ms=settings.heartbeat_ms,
            curve=curve,
            caller_identity=True,
        )

    # One worker per broker of the plant (a broker set: docs/ha.md); events to every broker.
    worker = WorkerFleet(
        settings.broker_endpoint, on_broker, credit=settings.credit, service=settings.service
    )
    worker.also_rediscover.append(publisher.rediscover)
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
