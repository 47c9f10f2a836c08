"""``plantd broker``: the command that runs the broker service.

``cli`` is the click command the ``plantd`` launcher registers (``plantd.broker.main:cli``); it
also runs alone with ``python -m plantd.broker``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable

from plantd.broker.ready_gate import ReadyGate
from plantd.broker.service import BrokerService
from plantd.bus.proxy import BusError
from plantd.common.config import BrokerSettings, ServiceSettings
from plantd.common.keys import KeysError
from plantd.common.options import service_command
from plantd.common.registry import RegistryError
from plantd.common.service import ServiceContext, ServiceError

log = logging.getLogger("plantd.broker")


async def main(ctx: ServiceContext) -> None:
    settings = ctx.settings
    assert isinstance(settings, BrokerSettings)
    service = BrokerService(settings, registry=ctx.registry)
    try:
        service.start()
    except (OSError, BusError, KeysError, RegistryError) as exc:
        raise ServiceError(str(exc)) from None
    ctx.add_liveness("broker", service.alive)
    ctx.add_readiness("broker", service.ready)
    if settings.ready_services:
        ctx.add_readiness("workers", _workers_gate(settings, service))
    service.start_worker()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, service.reload_now)
    watcher = loop.create_task(_watch(service, settings.registry_poll_ms / 1000.0))
    try:
        await ctx.stopping.wait()
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await service.stop_async()


async def _watch(service: BrokerService, every: float) -> None:
    """Reload the registry when its file (or an own key file) changes."""
    while True:
        await asyncio.sleep(every)
        service.reload()


def _workers_gate(settings: BrokerSettings, service: BrokerService) -> Callable[[], bool]:
    """The readiness check of ``ready_services`` (plantd.broker.ready_gate), logged once."""
    gate = ReadyGate(
        settings.ready_services, settings.ready_services_wait_ms / 1000.0, time.monotonic()
    )

    def check() -> bool:
        if gate.open:
            return True
        if not gate.check(time.monotonic(), service.registered_services):
            return False
        if gate.timed_out:
            log.warning(
                "ready without workers for %s after %d ms (ready_services_wait_ms)",
                ", ".join(sorted(gate.missing)),
                settings.ready_services_wait_ms,
            )
        else:
            log.info("ready: every service in ready_services has a worker here")
        return True

    return check


def _grace(settings: ServiceSettings) -> float:
    # The runner cancels main only well after the broker's own drain deadline.
    assert isinstance(settings, BrokerSettings)
    return settings.shutdown_grace_ms / 1000.0 + 10.0


cli = service_command(
    BrokerSettings,
    main,
    name="broker",
    help=(
        "Run the plantd broker: the MDP request/reply broker (clients and workers connect to "
        "--endpoint), the state, event and metric pub/sub buses (publishers connect to the first "
        "port of each bus, subscribers to the second), the org.plantd.Broker service (answers "
        "'service' and 'services' queries), and /healthz, /readyz, /metrics on --http-port. "
        "CURVE is on by default: keys come from --curve-keys (see docs/security.md); --no-curve "
        "is for development only."
    ),
    grace_s=_grace,
)
