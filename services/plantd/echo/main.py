"""``plantd echo``: the echo module, and a template for writing a plantd module.

A plantd module is an MDP worker that registers a service name with the broker and answers
requests. Writing one takes three pieces, all visible in this file:

1. a settings class (:class:`plantd.common.config.EchoSettings`): broker endpoint, CURVE keys,
   HTTP port, logging; every field is a flag, an env var ``PLANTD_ECHO_*`` and a YAML key;
2. a handler, ``frames -> frames`` (:func:`plantd.echo.handler.handle`); keep it pure so it is
   trivial to test, and let it be ``async`` if it awaits I/O;
3. a ``main(ctx)`` coroutine run by :func:`plantd.common.service.run_service`, which gives you
   logging, ``/healthz``, ``/readyz``, ``/metrics`` and a graceful SIGTERM for free.
"""

from __future__ import annotations

import asyncio

from prometheus_client import Counter

from plantd.common.config import EchoSettings
from plantd.common.keys import KeysError, load_client
from plantd.common.options import service_command
from plantd.common.service import ServiceContext, ServiceError
from plantd.echo.handler import handle
from plantd.mdp import AsyncWorker, CurveClient, Dialect
from plantd.mdp.fleet import WorkerFleet


async def main(ctx: ServiceContext) -> None:
    settings = ctx.settings
    assert isinstance(settings, EchoSettings)

    # CURVE: our key pair (echo.key_secret) and the broker's public key (broker.key). With
    # CURVE on, missing keys stop the process: never fall back to plaintext silently.
    curve: CurveClient | None = None
    if settings.curve:
        try:
            curve = load_client(settings.curve_keys, settings.component)
        except KeysError as exc:
            raise ServiceError(str(exc)) from None
    else:
        ctx.log.warning("CURVE is off: requests and replies travel in plaintext")

    # Metrics: count what the module does; the runner serves them on /metrics.
    handled = Counter("plantd_echo_requests", "Echo requests answered", registry=ctx.registry)

    async def on_request(frames: list[bytes]) -> list[bytes]:
        # An async handler runs on the worker's loop: no thread hop for cheap work like this.
        handled.inc()
        return handle(frames)

    dialect = next(d for d in Dialect if d.label == settings.dialect)

    def on_broker(endpoint: str, credit: int) -> AsyncWorker:
        return AsyncWorker(
            endpoint,
            settings.service,
            on_request,
            credit=credit,
            heartbeat_ms=settings.heartbeat_ms,
            dialect=dialect,
            curve=curve,
        )

    # One worker per broker of the plant (a broker set: docs/ha.md).
    worker = WorkerFleet(settings.broker_endpoint, on_broker, service=settings.service)
    # Ready once a broker has answered us (a worker sets `connected` on its first message).
    ctx.add_readiness("broker", worker.connected.is_set)
    task = asyncio.create_task(worker.run())
    ctx.log.info(
        "echo module serving",
        extra={
            "service": settings.service,
            "broker": settings.broker_endpoint,
            "dialect": settings.dialect,
        },
    )
    try:
        # Wait for SIGTERM (ctx.stopping) or for the worker to fail, whichever comes first.
        stop_wait = asyncio.create_task(ctx.stopping.wait())
        await asyncio.wait({task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
    finally:
        await worker.stop(timeout=5.0)  # finish in-flight requests, then DISCONNECT
        await task  # re-raises if the worker failed


cli = service_command(
    EchoSettings,
    main,
    name="echo",
    help=(
        "Run the echo module: an MDP worker for org.plantd.module.Echo that answers "
        "[echo, part...] with [part...]. Connects to --broker-endpoint (CURVE keys from "
        "--curve-keys: echo.key_secret and broker.key) and serves /healthz, /readyz and "
        "/metrics on --http-port."
    ),
)
