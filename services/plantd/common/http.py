"""The HTTP side of every plantd process: ``/healthz``, ``/readyz`` and ``/metrics``.

- ``GET /healthz`` (liveness): 200 while every liveness check passes, else 503. Keep these to
  "is the process wedged" (a dead worker thread), never dependencies: a failed liveness probe
  restarts the pod.
- ``GET /readyz`` (readiness): 200 when every readiness check passes, else 503 with the failing
  names; also 503 once shutdown has begun, so Kubernetes stops routing to a stopping pod.
- ``GET /metrics``: the Prometheus registry, rendered in a worker thread because custom collectors
  may block briefly (e.g. asking the broker thread for its stats).

Checks are ``() -> bool`` or ``async () -> bool``; an exception or a result later than
``check_timeout`` counts as failing and its text appears in the JSON body.

Run it inside an existing asyncio loop (``await server.start()`` / ``await server.stop()``) or,
for synchronous programs, in its own thread (``server.start_in_thread()`` /
``server.stop_thread()``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder

from plantd import __version__
from plantd.common import contract

log = logging.getLogger("plantd.http")

Check = Callable[[], bool | Awaitable[bool]]


class HealthServer:
    """aiohttp server for health, readiness and metrics of one process."""

    def __init__(
        self,
        port: int,
        host: str = "0.0.0.0",
        *,
        registry: CollectorRegistry | None = None,
        component: str = "plantd",
        check_timeout: float = 1.0,
    ) -> None:
        self.host = host
        self.requested_port = port
        self.registry = registry if registry is not None else REGISTRY
        self.component = component
        self.check_timeout = check_timeout
        self._liveness: dict[str, Check] = {}
        self._readiness: dict[str, Check] = {}
        self._stopping = False
        self._started_at = time.monotonic()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None

    # -- checks ---------------------------------------------------------------------------

    def add_liveness(self, name: str, check: Check) -> None:
        self._liveness[name] = check

    def add_readiness(self, name: str, check: Check) -> None:
        self._readiness[name] = check

    def set_stopping(self) -> None:
        """Report not-ready from now on (shutdown has begun)."""
        self._stopping = True

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (useful with port 0); raises before start()."""
        if self._port is None:
            raise RuntimeError("HealthServer is not started")
        return self._port

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Bind and serve in the running loop. Raises OSError naming the port if it is taken."""
        app = web.Application()
        app.router.add_get(contract.PATH_HEALTHZ, self._healthz)
        app.router.add_get(contract.PATH_READYZ, self._readyz)
        app.router.add_get(contract.PATH_METRICS, self._metrics)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.host, self.requested_port, reuse_address=True)
        try:
            await self._site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise OSError(
                exc.errno,
                f"cannot serve HTTP on {self.host}:{self.requested_port} ({exc.strerror}); "
                "choose another --http-port or stop the process using it",
            ) from None
        server = self._site._server  # aiohttp keeps the asyncio server here
        sockets = getattr(server, "sockets", None) or []
        self._port = int(sockets[0].getsockname()[1]) if sockets else self.requested_port
        log.info("http serving", extra={"url": self.url})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def start_in_thread(self, timeout: float = 10.0) -> None:
        """Serve from a daemon thread with its own loop; returns once bound (or raises)."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._thread_loop = loop
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # handed to the caller below
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.stop())
                loop.close()

        self._thread = threading.Thread(target=run, name="plantd-http", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError(f"HTTP server did not start within {timeout} s")
        if failure:
            raise failure[0]

    def stop_thread(self, timeout: float = 5.0) -> None:
        loop, thread = self._thread_loop, self._thread
        if loop is None or thread is None:
            return
        if loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._thread = self._thread_loop = None

    # -- handlers -------------------------------------------------------------------------

    async def _run_checks(self, checks: dict[str, Check]) -> tuple[bool, dict[str, Any]]:
        results: dict[str, Any] = {}
        for name, check in list(checks.items()):
            try:
                value = check()
                if inspect.isawaitable(value):
                    value = await asyncio.wait_for(value, self.check_timeout)
                results[name] = bool(value)
            except TimeoutError:
                results[name] = f"timed out after {self.check_timeout} s"
            except Exception as exc:  # a broken check must not break the endpoint
                results[name] = f"error: {type(exc).__name__}: {exc}"
        return all(v is True for v in results.values()), results

    async def _healthz(self, request: web.Request) -> web.Response:
        ok, checks = await self._run_checks(self._liveness)
        body = {
            "status": "ok" if ok else "failing",
            "component": self.component,
            "version": __version__,
            "uptime_s": round(time.monotonic() - self._started_at, 3),
            "checks": checks,
        }
        return web.json_response(body, status=200 if ok else 503)

    async def _readyz(self, request: web.Request) -> web.Response:
        ok, checks = await self._run_checks(self._readiness)
        if self._stopping:
            ok = False
            checks["shutting_down"] = False
        body = {"status": "ready" if ok else "not ready", "checks": checks}
        return web.json_response(body, status=200 if ok else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        payload = await asyncio.to_thread(encoder, self.registry)
        resp = web.Response(body=payload)
        resp.headers["Content-Type"] = content_type
        return resp
