"""``plantd gateway``: the plantd.v1 services over gRPC (and REST), translated onto the MDP bus.

``cli`` is the click command the ``plantd`` launcher registers (``plantd.gateway.main:cli``);
it also runs alone with ``python -m plantd.gateway``. What it serves: docs/api.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Callable
from typing import Final

import grpc
import zmq
import zmq.asyncio
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from plantd import __version__
from plantd.bus import AsyncSubscriber, Publisher, follow_brokers
from plantd.common import contract
from plantd.common.auth import NotBeforeMap, Verifier
from plantd.common.auth.keeper import KeyKeeper, cancel_all
from plantd.common.breaker import Breakers
from plantd.common.config import ServiceSettings
from plantd.common.curve import CurveClient
from plantd.common.keys import KeysError, load_client
from plantd.common.options import service_command
from plantd.common.redis_conn import RedisSetupError, client_for
from plantd.common.service import LoopFactory, ServiceContext, ServiceError
from plantd.gateway.auth import Authenticator
from plantd.gateway.bus_servicer import SERVICE_NAME as BUS_SERVICE_NAME
from plantd.gateway.bus_servicer import BusServicer
from plantd.gateway.calls import CallGate, Limiter, RouteClass, RpcMetrics, StreamSlots
from plantd.gateway.fanout import Fanout, FanoutCollector
from plantd.gateway.guarded_bus import BreakerMetrics, GuardedBus
from plantd.gateway.health import Readiness
from plantd.gateway.identity_servicer import SERVICE_NAME as IDENTITY_SERVICE_NAME
from plantd.gateway.identity_servicer import BackendHealth, IdentityServicer
from plantd.gateway.ratelimit import LocalLimiter, Policies, Policy
from plantd.gateway.ratelimit_redis import TAKE_ALL, RedisLimiter
from plantd.gateway.reflection import MethodAwarePool
from plantd.gateway.rest.openapi import openapi_document
from plantd.gateway.rest.routes import routes_for
from plantd.gateway.rest.server import EdgeOptions, RestEdge
from plantd.gateway.settings import GatewaySettings
from plantd.gateway.state_servicer import SERVICE_NAME, StateServicer
from plantd.mdp import AsyncClient
from plantd.v1 import bus_pb2_grpc, identity_pb2_grpc, state_pb2_grpc

# Collect young objects after 100,000 net allocations instead of 700. Each stream's update
# allocates a few dozen short-lived objects per watcher, so with thousands of watchers the
# default thresholds ran a collection (and every tenth a scan of the older ones, the sockets
# and tasks of all open streams) in the middle of each fan-out: bench.gateway, 5,000
# WebSocket watchers, p99 per update 600 -> 225 ms, and the periodic 300 ms stalls gone. RSS
# unchanged within noise (256 vs 264 MiB): the cycles freed are few; the
# reference-counted rest is freed as before.
GC_THRESHOLDS: Final = (100_000, 50, 100)


def curve_for(settings: GatewaySettings) -> CurveClient | None:
    if not settings.curve:
        return None
    try:
        return load_client(settings.curve_keys, contract.GATEWAY)
    except KeysError as exc:
        raise ServiceError(str(exc)) from None


def local_limiter(settings: GatewaySettings) -> LocalLimiter:
    """The per-process token buckets the settings describe."""
    per_s = {
        RouteClass.READ: settings.rate_limit_read_per_s,
        RouteClass.WRITE: settings.rate_limit_write_per_s,
        RouteClass.CALL: settings.rate_limit_call_per_s,
        RouteClass.STREAM: settings.rate_limit_stream_per_s,
        RouteClass.LOGIN: settings.rate_limit_login_per_s,
    }

    def policy(rate: float) -> Policy:
        return Policy(rate, max(1.0, rate * settings.rate_limit_burst_s))

    factor = settings.rate_limit_source_factor
    return LocalLimiter(
        Policies(
            subject={route: policy(rate) for route, rate in per_s.items()},
            source={route: policy(rate * factor) for route, rate in per_s.items()},
            login=Policy(settings.rate_limit_login_per_s, settings.rate_limit_login_burst),
        ),
        max_buckets=settings.rate_limit_max_buckets,
    )


def rate_limiter(settings: GatewaySettings, ctx: ServiceContext) -> Limiter:
    """Buckets in this process, or shared through Redis (falling back to these)."""
    local = local_limiter(settings)
    target = settings.rate_limit_redis()
    if target is None:
        return local
    try:
        client = client_for(target)
    except RedisSetupError as exc:
        raise ServiceError(f"rate limits: {exc}") from None
    return RedisLimiter(
        client.register_script(TAKE_ALL),
        local.policies,
        local,
        prefix=settings.rate_limit_redis_prefix,
        timeout_s=settings.rate_limit_redis_timeout_ms / 1000.0,
        registry=ctx.registry,
        close=client.aclose,
    )


def server_options(settings: GatewaySettings) -> list[tuple[str, int]]:
    """grpc core options: message sizes, per-connection streams, keepalive, connection ages."""
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        # One process per port: a stale second gateway must not silently take half the
        # connections (SO_REUSEPORT is on by default on Linux).
        ("grpc.so_reuseport", 0),
        ("grpc.max_concurrent_streams", settings.max_streams_per_connection),
        # gRPC core's server default pings after 2 h: a dead client's watch would hold its
        # stream slot that long.
        ("grpc.keepalive_time_ms", int(settings.keepalive_s * 1000)),
        ("grpc.keepalive_timeout_ms", 10_000),
        # Clients may keep idle connections alive with their own pings, every 10 s at most.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ]
    if settings.max_connection_idle_s > 0:
        options.append(("grpc.max_connection_idle_ms", int(settings.max_connection_idle_s * 1000)))
    if settings.max_connection_age_s > 0:
        options.append(("grpc.max_connection_age_ms", int(settings.max_connection_age_s * 1000)))
        options.append(("grpc.max_connection_age_grace_ms", int(settings.drain_s * 1000)))
    return options


def rest_edge(
    settings: GatewaySettings,
    servicers: dict[str, object],
    registry: CollectorRegistry | None,
    authenticate: Callable[[str], object] | None = None,
) -> RestEdge:
    """The REST edge over the servicers the gRPC server serves (one route table for both the
    routes and /openapi.json)."""
    pool = descriptor_pool.Default()
    routes = routes_for(*(pool.FindServiceByName(name) for name in servicers))
    document = openapi_document(routes, title="plantd.v1", version=__version__)
    options = EdgeOptions(
        max_body_bytes=settings.max_message_bytes,
        cors_origins=tuple(settings.rest_cors_origins),
        forwarded_hops=settings.rest_forwarded_hops,
        auth_required=settings.auth == "identity",
        ws_auth_timeout_s=settings.rest_ws_auth_timeout_s,
        heartbeat_s=settings.rest_heartbeat_s,
        slow_write_s=settings.rest_slow_write_s,
        drain_s=settings.drain_s,
    )
    return RestEdge(routes, servicers, document, options, registry, authenticate)


async def main(ctx: ServiceContext) -> None:
    settings = ctx.settings
    assert isinstance(settings, GatewaySettings)
    # Each Subscribe stream holds one SUB socket (its own prefix filter), each bus request a
    # DEALER and its monitor (two sockets: libzmq's end and ours; plantd.mdp.link): libzmq's
    # default of 1023 sockets per context would refuse them long before the settings' limits.
    # Set before the first socket of the asyncio context is made (libzmq reads it then).
    sockets = settings.max_streams + 3 * settings.max_bus_requests + 1024
    zmq.asyncio.Context.instance().set(zmq.MAX_SOCKETS, sockets)
    gc.set_threshold(*GC_THRESHOLDS)
    curve = curve_for(settings)
    loop = asyncio.get_running_loop()
    keeper: KeyKeeper | None = None
    verifier: Verifier | None = None
    if settings.auth == "identity":
        not_before = NotBeforeMap()
        verifier = Verifier(
            issuer=settings.auth_issuer,
            # The services a verified token may go on to; each call then needs its own.
            audience=list(contract.TOKEN_AUDIENCES),
            not_before=not_before,
            cache_entries=settings.auth_cache_entries,
        )
        keeper = KeyKeeper(  # ServiceError on an unusable --jwks-file
            verifier,
            not_before,
            jwks_file=settings.jwks_file,
            refresh_s=settings.jwks_refresh_s,
            broker_endpoint=settings.broker_endpoint,
            event_sub_endpoint=settings.event_sub_endpoint,
            curve=curve,
            log=ctx.log,
        )
        ctx.add_readiness("jwks", keeper.has_keys)
    else:
        ctx.log.warning(
            "token checks are off (--auth off): calls reach the state service without one, "
            "which then sees the gateway's own CURVE key; use --auth identity"
        )
    bus = AsyncClient(
        settings.broker_endpoint,
        timeout=settings.default_timeout_ms / 1000.0,
        retries=0,
        curve=curve,
        max_sockets=settings.max_bus_requests,
    )
    # The servicers' bus: a circuit breaker per service (readiness probes use the bus itself).
    breaker_metrics = BreakerMetrics(ctx.registry)
    guarded = GuardedBus(
        bus,
        Breakers(
            settings.breaker_policy(),
            on_evict=breaker_metrics.forget,
            on_create=breaker_metrics.closed,
        ),
        min_timeout_s=settings.circuit_min_timeout_ms / 1000.0,
        metrics=breaker_metrics,
    )
    ctx.add_readiness("state_circuit", lambda: guarded.ready(contract.SERVICE_STATE))
    server = grpc.aio.server(
        options=server_options(settings), maximum_concurrent_rpcs=settings.max_concurrent_rpcs
    )
    limiter = rate_limiter(settings, ctx) if settings.rate_limits else None
    gate = CallGate(
        Authenticator(verifier),
        RpcMetrics(ctx.registry),
        default_timeout_s=settings.default_timeout_ms / 1000.0,
        max_timeout_s=settings.max_timeout_ms / 1000.0,
        limiter=limiter,
        streams=StreamSlots(settings.max_streams_per_subject, settings.max_streams),
    )
    # Every watch shares one state-bus SUB socket (fanout.py); a scope's topic is subscribed
    # while at least one watch follows it.
    watches = Fanout(
        AsyncSubscriber(settings.state_sub_endpoint, (), curve=curve),
        buffer_messages=settings.watch_buffer_messages,
        buffer_bytes=settings.watch_buffer_bytes,
    )
    ctx.registry.register(FanoutCollector(watches))
    servicer = StateServicer(
        guarded,
        gate,
        subscribe=watches.subscribe,
        resync_s=settings.watch_resync_ms / 1000.0,
    )
    state_pb2_grpc.add_StateServiceServicer_to_server(servicer, server)
    sub_endpoints = {
        "state": settings.state_sub_endpoint,
        "event": settings.event_sub_endpoint,
        "metric": settings.metric_sub_endpoint,
    }
    # One XPUB per bus for the process (publishing never blocks: PUB drops at the HWM).
    publishers = {
        "event": Publisher(settings.event_pub_endpoint, curve=curve),
        "metric": Publisher(settings.metric_pub_endpoint, curve=curve),
    }
    bus_servicer = BusServicer(
        guarded,
        gate,
        subscribe=lambda name, prefixes: AsyncSubscriber(
            sub_endpoints[name], prefixes or (b"",), curve=curve
        ),
        publishers=dict(publishers),
        max_reply_bytes=settings.max_message_bytes,
        max_batch_calls=settings.max_batch_calls,
        batch_concurrency=settings.batch_concurrency,
        buffer_messages=settings.subscribe_buffer_messages,
        buffer_bytes=settings.subscribe_buffer_bytes,
    )
    bus_pb2_grpc.add_BusServiceServicer_to_server(bus_servicer, server)
    identity_servicer = IdentityServicer(guarded, gate)
    identity_pb2_grpc.add_IdentityServiceServicer_to_server(identity_servicer, server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (
            SERVICE_NAME,
            BUS_SERVICE_NAME,
            IDENTITY_SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
        pool=MethodAwarePool(),
    )
    readiness = Readiness(
        health, bus, (SERVICE_NAME,), interval_s=settings.health_interval_ms / 1000.0
    )
    ctx.add_readiness("state", lambda: readiness.ready)
    bus_health = Readiness(
        health,
        bus,
        (BUS_SERVICE_NAME,),
        interval_s=settings.health_interval_ms / 1000.0,
        backend=None,
    )
    # SERVING while an identity worker answers; not part of /readyz (tied to state only).
    identity_health = BackendHealth(
        health,
        bus,
        (IDENTITY_SERVICE_NAME,),
        interval_s=settings.health_interval_ms / 1000.0,
        backend=contract.SERVICE_IDENTITY,
    )
    try:
        port = server.add_insecure_port(settings.grpc_address())
    except RuntimeError as exc:
        raise ServiceError(f"cannot listen on {settings.grpc_address()}: {exc}") from None
    if port == 0:
        raise ServiceError(
            f"cannot listen on {settings.grpc_address()} (in use? set --grpc-port or "
            f"{settings.env_name('grpc_port')})"
        )
    served: dict[str, object] = {
        SERVICE_NAME: servicer,
        BUS_SERVICE_NAME: bus_servicer,
        IDENTITY_SERVICE_NAME: identity_servicer,
    }
    edge = rest_edge(settings, served, ctx.registry, gate.auth.check) if settings.rest else None
    tasks: list[asyncio.Task[None]] = []
    await readiness.start()
    await bus_health.start()
    await identity_health.start()
    await server.start()
    rest_port = await edge.start(settings.rest_bind(), settings.rest_port) if edge else None
    try:
        tasks += [loop.create_task(readiness.run()), loop.create_task(bus_health.run())]
        tasks.append(loop.create_task(identity_health.run()))
        tasks.append(loop.create_task(follow_brokers(publishers.values())))
        if keeper is not None:
            tasks += [loop.create_task(job()) for job in keeper.jobs()]
        ctx.log.info(
            "serving gRPC",
            extra={
                "grpc": f"{settings.grpc_host}:{port}",
                "rest": f"{settings.rest_host}:{rest_port}" if rest_port is not None else None,
                "auth": settings.auth,
                "loop": type(loop).__module__.split(".")[0],  # uvloop or asyncio (tested)
                "jwks": keeper.source() if keeper is not None else None,
            },
        )
        await ctx.stopping.wait()
    finally:
        # Health first (clients and probes move away), then let in-flight calls finish.
        await readiness.shutdown()
        await asyncio.gather(server.stop(settings.drain_s), edge.stop() if edge else _nothing())
        await cancel_all(tasks)
        await watches.close()
        if isinstance(limiter, RedisLimiter):
            await limiter.close()
        if keeper is not None:
            await keeper.close()
        for publisher in publishers.values():
            publisher.close()
        with contextlib.suppress(Exception):
            await bus.close()
        ctx.log.info("gateway stopped")


async def _nothing() -> None:
    return None


def _grace(settings: ServiceSettings) -> float:
    assert isinstance(settings, GatewaySettings)
    return settings.drain_s + 5.0


def _loop(settings: ServiceSettings) -> LoopFactory | None:
    assert isinstance(settings, GatewaySettings)
    if settings.event_loop == "uvloop":
        import uvloop  # a dependency; imported here so --help stays fast

        return uvloop.new_event_loop
    return None


cli = service_command(
    GatewaySettings,
    main,
    name="gateway",
    help=(
        f"Run the gRPC gateway: plantd.v1.StateService (each call one {contract.SERVICE_STATE} "
        "request on the bus; WatchEntries follows the state bus, gap-free), "
        "plantd.v1.BusService (generic calls, the service directory, Subscribe and Publish on "
        "the buses, authorized here: bus:call:<service>, bus:subscribe:<bus>, ...), grpc.health.v1 "
        "and server reflection on --grpc-host:--grpc-port "
        "(loopback:50051 by default). Every call needs `authorization: Bearer <access token>` "
        "(--auth identity, the default), verified here offline against the JWKS (--jwks-file, "
        "or fetched from org.plantd.Identity) and forwarded to the state service, which checks "
        "the permission. Deadlines become bus timeouts; errors are google.rpc.Status with "
        "ErrorInfo{domain: plantd.io, reason: CODE}. /healthz, /readyz (state has a worker, "
        "keys loaded) and /metrics on --http-port. CURVE key: gateway.key_secret in "
        "--curve-keys. Docs: docs/api.md."
    ),
    grace_s=_grace,
    loop_factory=_loop,
)
