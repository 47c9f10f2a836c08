"""The operator's HTTP endpoint: /healthz (liveness), /readyz and /metrics on one port."""

from __future__ import annotations

import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from plantd.common import contract
from plantd_operator.metrics import Metrics


class Probe:
    """Liveness is the event loop answering; readiness says the replica can do its job.

    Roles: ``starting``; ``standby`` (talks to the API server, waits for the Lease: ready, so a
    rolling update can proceed and it can take over at once); ``leader`` or ``single`` (kopf
    is running and acting).
    """

    def __init__(self) -> None:
        self.started = time.time()
        self.role = "starting"

    @property
    def ready(self) -> bool:
        return self.role != "starting"

    def set_role(self, role: str) -> None:
        self.role = role


def app(metrics: Metrics, probe: Probe) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "uptime": round(time.time() - probe.started)})

    async def readyz(_: web.Request) -> web.Response:
        if not probe.ready:
            return web.json_response({"status": "starting", "role": probe.role}, status=503)
        return web.json_response({"status": "ready", "role": probe.role})

    async def metrics_view(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    application = web.Application()
    application.router.add_get(contract.PATH_HEALTHZ, healthz)
    application.router.add_get(contract.PATH_READYZ, readyz)
    application.router.add_get(contract.PATH_METRICS, metrics_view)
    return application


async def serve(metrics: Metrics, probe: Probe, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app(metrics, probe), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
