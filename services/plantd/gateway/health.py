"""``grpc.health.v1`` answers (docs/api.md "Health").

- ``""`` and ``liveness``: SERVING while the process runs (never tied to the broker, or a
  broker outage would restart every gateway);
- ``readiness`` and ``plantd.v1.StateService``: SERVING only while the broker answers and
  ``org.plantd.State`` has a worker (``mmi.service`` says 200), checked every interval;
- ``plantd.v1.BusService``: SERVING while the broker answers (a second :class:`Readiness`
  with no backend: its calls go to whichever worker they name).

On SIGTERM :meth:`Readiness.shutdown` turns everything NOT_SERVING before the server drains.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Final, Protocol

from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio

from plantd.common import contract
from plantd.mdp.errors import MDPError

LIVENESS: Final = ("", contract.HEALTH_LIVENESS)
SERVING: Final = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING: Final = health_pb2.HealthCheckResponse.NOT_SERVING

log = logging.getLogger("plantd.gateway.health")


class MmiBus(Protocol):
    async def mmi(
        self,
        name: str,
        *args: bytes | str,
        timeout: float | None = None,  # noqa: ASYNC109 - the probe's own bound
    ) -> list[bytes]: ...


def has_worker(frames: Sequence[bytes]) -> bool:
    """``mmi.service``'s answer: the request with its last frame replaced by 200 or 404."""
    return bool(frames) and frames[-1] == b"200"


class Readiness:
    """Keeps the per-service health names in step with the bus."""

    def __init__(
        self,
        servicer: health_aio.HealthServicer,
        bus: MmiBus,
        services: Sequence[str],
        *,
        interval_s: float,
        backend: str | None = contract.SERVICE_STATE,
    ) -> None:
        self.servicer = servicer
        self.bus = bus
        self.names = (
            (contract.HEALTH_READINESS, *services) if backend is not None else tuple(services)
        )
        self.interval_s = interval_s
        self.backend = backend
        self.ready = False
        self.checks = 0

    async def start(self) -> None:
        if self.backend is None:  # the bus's names only; LIVENESS belongs to the state one
            for name in self.names:
                await self.servicer.set(name, NOT_SERVING)
            return
        for name in LIVENESS:
            await self.servicer.set(name, SERVING)
        for name in self.names:
            await self.servicer.set(name, NOT_SERVING)

    async def probe(self) -> bool:
        # No backend: any mmi answer means the broker is there.
        service = self.backend if self.backend is not None else contract.SERVICE_BROKER
        try:
            frames = await self.bus.mmi("mmi.service", service, timeout=min(self.interval_s, 1.0))
        except MDPError:
            return False
        return self.backend is None or has_worker(frames)

    async def run(self) -> None:
        while True:
            ready = await self.probe()
            self.checks += 1
            if ready != self.ready:
                self.ready = ready
                status = SERVING if ready else NOT_SERVING
                for name in self.names:
                    await self.servicer.set(name, status)
                log.info(
                    "backend %s", "ready" if ready else "not ready", extra={"service": self.backend}
                )
            await asyncio.sleep(self.interval_s)

    async def shutdown(self) -> None:
        self.ready = False
        await self.servicer.enter_graceful_shutdown()
