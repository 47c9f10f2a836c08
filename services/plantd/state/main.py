"""``plantd state``: run the org.plantd.State worker.

``cli`` is the click command the ``plantd`` launcher registers (``plantd.state.main:cli``); it
also runs alone with ``python -m plantd.state``.
"""

from __future__ import annotations

import asyncio
import contextlib

from plantd.bus import Publisher
from plantd.common import contract
from plantd.common.config import ServiceSettings
from plantd.common.curve import CurveClient
from plantd.common.keys import KeysError, load_client
from plantd.common.options import service_command
from plantd.common.service import ServiceContext, ServiceError
from plantd.mdp import AsyncWorker
from plantd.mdp.caller import MARKER, split_caller
from plantd.mdp.fleet import WorkerFleet
from plantd.state.auth import AllowAll, Authorizer
from plantd.state.authz_runtime import AuthRuntime
from plantd.state.config import StateSettings
from plantd.state.errors import StoreUnavailable
from plantd.state.metrics import StateMetrics
from plantd.state.redis_store import RedisStore
from plantd.state.service import CallerFrames, StateService
from plantd.state.sqlite_store import SqliteStore
from plantd.state.store import Store

# How long SIGTERM waits for in-flight requests before the worker disconnects.
DRAIN_S = 5.0


def build_store(settings: StateSettings) -> Store:
    limits = settings.limits()
    if settings.store == "redis":
        password = settings.redis_password
        return RedisStore(
            settings.redis_url,
            prefix=settings.redis_prefix,
            limits=limits,
            password=password.get_secret_value() if password is not None else None,
            password_file=settings.redis_password_file,
            ca_file=settings.redis_ca_file,
            socket_timeout=settings.redis_timeout_ms / 1000.0,
            wait_replicas=settings.redis_wait_replicas,
            wait_timeout_ms=settings.redis_wait_timeout_ms,
        )
    return SqliteStore(settings.data_dir, limits=limits, synchronous=settings.sqlite_sync)


def curve_for(settings: StateSettings) -> CurveClient | None:
    if not settings.curve:
        return None
    try:
        return load_client(settings.curve_keys, contract.STATE)
    except KeysError as exc:
        raise ServiceError(str(exc)) from None


async def main(ctx: ServiceContext) -> None:
    settings = ctx.settings
    assert isinstance(settings, StateSettings)
    curve = curve_for(settings)
    runtime: AuthRuntime | None = None
    authorizer: Authorizer = AllowAll()
    if settings.auth == "identity":
        runtime = AuthRuntime(settings, curve, ctx.registry)  # ServiceError if unusable
        authorizer = runtime.authorizer
        ctx.add_readiness("jwks", runtime.has_keys)
    store = build_store(settings)
    try:
        await store.open()  # Redis down: opens anyway and reconnects in the background
    except StoreUnavailable as exc:
        raise ServiceError(f"cannot open the state store: {exc}") from None
    ctx.log.info("state store opened", extra={"store": store.describe()})
    publisher = Publisher(settings.bus_endpoint, curve=curve)
    service = StateService(
        store,
        sink=publisher,
        authorizer=authorizer,
        metrics=StateMetrics(ctx.registry, lambda: store.available),
        split_caller=CallerFrames(split_caller, MARKER) if runtime is not None else None,
    )

    def on_broker(endpoint: str, credit: int) -> AsyncWorker:
        return AsyncWorker(
            endpoint,
            contract.SERVICE_STATE,
            batch_handler=service.handle_batch,
            credit=credit,
            heartbeat_ms=settings.heartbeat_ms,
            curve=curve,
            caller_identity=runtime is not None,
        )

    # One worker per broker of the plant (a broker set: docs/ha.md); events to every broker.
    worker = WorkerFleet(
        settings.broker_endpoint, on_broker, credit=settings.credit, service=contract.SERVICE_STATE
    )
    worker.also_rediscover.append(publisher.rediscover)
    if runtime is not None:
        worker.also_rediscover.append(runtime.audit_sink.rediscover)
    ctx.add_readiness("store", lambda: store.available)
    ctx.add_readiness("broker", worker.connected.is_set)
    loop = asyncio.get_running_loop()
    if runtime is not None:
        runtime.start(loop)
        ctx.log.info("authorization on", extra=runtime.describe())
    else:
        ctx.log.warning(
            "authorization is off (--auth off): any caller with an allowed CURVE key may read "
            "and write every scope; use --auth identity"
        )
    worker_task = loop.create_task(worker.run())
    sweeper = loop.create_task(service.run_sweeper(settings.sweep_interval_ms / 1000.0))
    try:
        stop = loop.create_task(ctx.stopping.wait())
        done, _ = await asyncio.wait({stop, worker_task}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if worker_task in done:
            worker_task.result()  # re-raise why the worker ended
            raise ServiceError("the MDP worker stopped unexpectedly")
    finally:
        await worker.stop(DRAIN_S)
        with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
            await asyncio.wait_for(worker_task, DRAIN_S + 2.0)
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        if runtime is not None:
            await runtime.stop()
        await store.close()
        publisher.close()
        ctx.log.info("state service stopped", extra={"published_events": service.published})


def _grace(settings: ServiceSettings) -> float:
    return DRAIN_S + 10.0


cli = service_command(
    StateSettings,
    main,
    name="state",
    help=(
        f"Run the state service ({contract.SERVICE_STATE}): a scoped key/value store on the bus "
        "with versions, compare-and-set, TTLs, batches and change events. The store is embedded "
        "SQLite under --data-dir by default, or Redis with --store redis --redis-url URL. "
        "Changes are published on the state bus (--bus-endpoint) as [scope, json]. "
        "/healthz, /readyz (store reachable and registered with the broker) and /metrics are "
        "served on --http-port. CURVE is on by default (keys from --curve-keys: state.key_secret "
        "and broker.key); --no-curve is for development only. Operations and error codes: "
        "docs/state.md."
    ),
    grace_s=_grace,
)
