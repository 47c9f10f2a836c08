"""The runner every plantd service process uses.

A service is one coroutine, ``main(ctx)``: it starts its sockets and threads, registers readiness
checks, waits for ``ctx.stopping``, then shuts down in order and returns. The runner does the
rest, the same way for every process:

1. logging in the configured format (first, so every later line is structured),
2. one startup line with the effective settings (no secrets live in settings),
3. a warning for ``PLANTD_<COMPONENT>_*`` variables that match no setting (typos),
4. the HTTP server (``/healthz``, ``/readyz``, ``/metrics``) on a fresh Prometheus registry,
5. SIGTERM/SIGINT: the first one sets ``ctx.stopping`` and makes ``/readyz`` answer 503; a second
   one, or ``main`` outliving ``grace_s``, cancels ``main``,
6. exit status: 0 after a clean stop, 1 if ``main`` failed or had to be cancelled, 2 if the
   HTTP port could not be bound, 4 if CURVE is on and the key directory is writable by group
   or others (checked before anything starts, the same check ``plant`` and ``plantd up`` make).

Example (the echo module, :mod:`plantd.echo.main`, is a complete one)::

    async def main(ctx: ServiceContext) -> None:
        worker = start_my_worker(ctx.settings)
        ctx.add_readiness("worker", worker.is_connected)
        await ctx.stopping.wait()
        await worker.close()

    sys.exit(run_service(settings, main))

:func:`plantd.common.options.service_command` wraps this in a click command with a flag for
every setting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from plantd import __version__
from plantd.common.config import ServiceSettings
from plantd.common.http import Check, HealthServer
from plantd.common.keys import InsecureKeysDirError, check_keys_dir
from plantd.common.logging import setup_logging

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_HTTP = 2
EXIT_CONFIG = 4  # the CLIs' ExitCode.CONFIG


class ServiceError(RuntimeError):
    """An expected failure (port taken, keys missing): logged as its message, no traceback."""


class ServiceConfigError(ServiceError):
    """An expected failure the configuration must fix (a missing key file): exit code 4."""


@dataclass
class ServiceContext:
    """What a service's ``main`` gets from the runner."""

    settings: ServiceSettings
    log: logging.Logger
    registry: CollectorRegistry
    http: HealthServer | None
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def add_readiness(self, name: str, check: Check) -> None:
        """``/readyz`` answers 200 only while every readiness check returns True."""
        if self.http is not None:
            self.http.add_readiness(name, check)

    def add_liveness(self, name: str, check: Check) -> None:
        """``/healthz`` answers 503 when a liveness check fails (the pod gets restarted)."""
        if self.http is not None:
            self.http.add_liveness(name, check)

    def request_stop(self, reason: str = "requested") -> None:
        """Begin a graceful stop, as SIGTERM would (safe to call more than once)."""
        if not self.stopping.is_set():
            self.log.info("stopping", extra={"reason": reason})
            if self.http is not None:
                self.http.set_stopping()
            self.stopping.set()


ServiceMain = Callable[[ServiceContext], Awaitable[None]]
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def new_registry() -> CollectorRegistry:
    """A registry with the standard process, platform and GC collectors."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def run_service(
    settings: ServiceSettings,
    main: ServiceMain,
    *,
    grace_s: float = 10.0,
    registry: CollectorRegistry | None = None,
    loop_factory: LoopFactory | None = None,
) -> int:
    """Run ``main`` until it returns or a signal stops it; return the exit status.

    ``loop_factory`` makes the event loop (e.g. ``uvloop.new_event_loop``); None: asyncio's."""
    setup_logging(settings.log_level, settings.log_format)
    log = logging.getLogger(f"plantd.{settings.component}")
    log.info(
        "starting",
        extra={
            "component": settings.component,
            "version": __version__,
            "settings": settings.public_dict(),
        },
    )
    for name in type(settings).unknown_env():
        log.warning("ignoring unknown setting", extra={"env": name, "hint": "check the spelling"})
    if settings.curve:
        try:
            check_keys_dir(settings.curve_keys)
        except InsecureKeysDirError as exc:
            log.error("insecure CURVE key directory", extra={"error": str(exc)})
            return EXIT_CONFIG
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(_run(settings, main, log, grace_s, registry or new_registry()))
    except KeyboardInterrupt:  # SIGINT before the handlers were installed
        return EXIT_FAILED


async def _run(
    settings: ServiceSettings,
    main: ServiceMain,
    log: logging.Logger,
    grace_s: float,
    registry: CollectorRegistry,
) -> int:
    http: HealthServer | None = None
    if settings.http_port:
        http = HealthServer(
            settings.http_port, settings.http_host, registry=registry, component=settings.component
        )
        try:
            await http.start()
        except OSError as exc:
            log.error("cannot start the HTTP server", extra={"error": str(exc)})
            return EXIT_HTTP
    ctx = ServiceContext(settings=settings, log=log, registry=registry, http=http)
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(main(ctx))
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        name = signal.Signals(signum).name
        if signals == 1:
            ctx.request_stop(f"signal {name}")
        else:
            log.warning("second signal: cancelling", extra={"signal": name})
            task.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    status = EXIT_OK
    try:
        status = await _supervise(task, ctx, grace_s, log)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if http is not None:
            await http.stop()
    log.info("stopped", extra={"exit_status": status})
    return status


async def _supervise(
    task: asyncio.Future[None], ctx: ServiceContext, grace_s: float, log: logging.Logger
) -> int:
    """Wait for ``main``; after a stop request give it ``grace_s`` before cancelling it."""
    stop_wait: asyncio.Future[None] = asyncio.ensure_future(_wait_event(ctx.stopping))
    try:
        await asyncio.wait({task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            done, _ = await asyncio.wait({task}, timeout=grace_s)
            if not done:
                log.error("did not stop in time: cancelling", extra={"grace_s": grace_s})
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                return EXIT_FAILED
        if task.cancelled():
            return EXIT_FAILED
        exc = task.exception()
        if isinstance(exc, ServiceError):
            log.error("service failed", extra={"error": str(exc)})
            return EXIT_CONFIG if isinstance(exc, ServiceConfigError) else EXIT_FAILED
        if exc is not None:
            log.error("service failed", exc_info=exc)
            return EXIT_FAILED
        return EXIT_OK
    finally:
        stop_wait.cancel()


async def _wait_event(event: asyncio.Event) -> None:
    await event.wait()
