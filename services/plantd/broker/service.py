"""The broker service: the MDP broker, the pub/sub buses and the broker's own worker, together.

Everything shares one ZeroMQ context, so one ZAP handler enforces the CURVE allow-list on the
MDP ROUTER and on every bus socket. The ``org.plantd.Broker`` worker runs on the service's
asyncio loop and reaches the broker over an inproc endpoint the broker also binds (inproc never
leaves the process, so it needs no CURVE).

Rights (docs/security.md "Machine identities"): with CURVE on, a registry of machine
identities (or, without one, the "no registry" mode) decides which key may register which
service names and publish which bus topics; :meth:`BrokerService.reload` swaps them without
touching a connection (``registry_poll_ms`` and SIGHUP). With ``identity_registry`` the
identities enrolled in org.plantd.Identity are merged in too (:mod:`plantd.broker.enrolled`
asks identity over the inproc endpoint every ``identity_registry_poll_s``). Refused READYs are
audited on the event bus (topic ``audit``) by an in-process publisher on the bus's inproc
endpoint.

Shutdown order (SIGTERM): the broker stops taking requests (new ones get ``SHUTTING_DOWN``),
in-flight requests may finish for ``shutdown_grace_ms``, the rest fail with ``SHUTTING_DOWN``;
it closes once no client request came for ``shutdown_quiet_ms`` (each was refused, so the
clients moved to another broker; closing loses what was just sent) or at the grace deadline;
then the internal worker, then the buses, then the context.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

import zmq
from prometheus_client import CollectorRegistry

from plantd.broker import queries
from plantd.broker.enrolled import EnrolledCollector, EnrolledFetcher
from plantd.broker.metrics import BrokerCollector
from plantd.broker.rights import RightsSource
from plantd.bus.proxy import BusLimits, BusProxy, BusStats, bus_endpoints
from plantd.common import contract
from plantd.common.audit import AuditEvent, Auditor
from plantd.common.config import BrokerSettings
from plantd.common.curve import CurveServer
from plantd.common.keys import load_server
from plantd.common.registry import Registry, RegistryError, Rights
from plantd.mdp import AsyncWorker, Broker
from plantd.mdp.budgets import Limits

log = logging.getLogger("plantd.broker")

INTERNAL_ENDPOINT = "inproc://plantd.broker.internal"
BUS_ZAP_DOMAIN = b"plantd.bus"  # separate from the MDP domain, so each can be released alone
AUDIT_BUS = "event"


def local_bus_endpoint(name: str) -> str:
    """The in-process publisher endpoint of bus ``name`` (no CURVE: never leaves the process)."""
    return f"inproc://plantd.bus.{name}.local"


class _BusSink:
    """Publishes ``[topic, payload]`` on a bus from the broker's loop thread (never blocks)."""

    def __init__(self, sock: zmq.Socket[bytes]) -> None:
        self.sock = sock

    def publish(self, topic: str | bytes, payload: bytes) -> None:
        t = topic.encode() if isinstance(topic, str) else topic
        # PUB drops at its HWM anyway; the log line stands.
        with contextlib.suppress(zmq.Again):
            self.sock.send_multipart([t, payload], zmq.NOBLOCK)


class BrokerService:
    """Owns the sockets and threads of ``plantd broker``. ``start()``, then ``stop()``."""

    def __init__(
        self, settings: BrokerSettings, *, registry: CollectorRegistry | None = None
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.broker: Broker | None = None
        self.buses: dict[str, BusProxy] = {}
        self.worker: AsyncWorker | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self._collector: BrokerCollector | None = None
        self._curve: CurveServer | None = None
        self._bus_curve: CurveServer | None = None
        self._rights_source: RightsSource | None = None
        self.rights: Rights | None = None
        self.enrolled: EnrolledFetcher | None = None
        self._enrolled_task: asyncio.Task[None] | None = None
        self._enrolled_collector: EnrolledCollector | None = None
        self._audit_sock: zmq.Socket[bytes] | None = None
        self.auditor: Auditor | None = None
        self._started = False

    # ------------------------------------------------------------------ lifecycle

    def _load_curve(self) -> None:
        s = self.settings
        if not s.curve:
            log.warning(
                "CURVE IS OFF: the broker and buses accept unauthenticated plaintext from anyone "
                "who can reach them. Use only for local development.",
                extra={"endpoint": s.endpoint, "bus_bind": s.bus_bind},
            )
            return
        server = load_server(s.curve_keys)
        if not server.allowed:
            log.warning(
                "CURVE allow-list is empty: every client and worker will be refused",
                extra={"curve_keys": str(s.curve_keys), "hint": "add NAME.key files"},
            )
        self._curve = server
        self._bus_curve = CurveServer(
            server.secret, server.public, set(server.allowed), domain=BUS_ZAP_DOMAIN
        )
        log.info(
            "CURVE on",
            extra={
                "server_public_key": server.public.decode(),
                "allowed_keys": len(server.allowed),
                "curve_keys": str(s.curve_keys),
            },
        )

    def _load_rights(self) -> None:
        s = self.settings
        if self._curve is None:
            if s.registry or s.identity_registry:
                what = f"--registry {s.registry}" if s.registry else "--identity-registry"
                raise RegistryError(
                    f"{what} needs CURVE (without it no peer has a key to check); drop "
                    "--no-curve, or drop --registry and --identity-registry"
                )
            return
        self._rights_source = src = RightsSource(
            s.curve_keys, s.registry, identity_registry=s.identity_registry
        )
        self.rights = rights = src.initial()
        self._admit(rights)
        if s.identity_registry:
            log.info(
                "registry of machine identities loaded; enrolments from identity are merged "
                "in as they arrive",
                extra={**src.describe(rights), "identity_service": s.identity_service},
            )
        elif rights.registry is None:
            log.warning(
                "no registry of machine identities: org.plantd.* names are reserved for "
                "plantd's own keys in the key directory, every other name and every bus topic "
                "is open to any allowed key; write a registry (plant module enroll) to close them",
                extra=src.describe(rights),
            )
        else:
            log.info("registry of machine identities loaded", extra=src.describe(rights))

    def reload(self, *, force: bool = False) -> bool:
        """Re-read the registry if it changed (``force``: always, as on SIGHUP); True when new
        rights are in use. Connections stay; workers that lost their name get DISCONNECT."""
        src = self._rights_source
        if src is None:
            return False
        rights = src.poll(force=force)
        if rights is None:
            return False
        self._use(rights, "registry reloaded")
        return True

    def apply_enrolled(self, enrolled: Registry) -> bool:
        """Merge identity's enrolments (an unchanged answer changes nothing); True when new
        rights are in use. A revoked module's workers get DISCONNECT, as on a file reload."""
        src = self._rights_source
        if src is None:
            return False
        rights = src.set_enrolled(enrolled)
        if rights is None:
            return False
        self._use(rights, "enrolments from identity merged")
        return True

    def _use(self, rights: Rights, what: str) -> None:
        src = self._rights_source
        assert src is not None
        self.rights = rights
        self._admit(rights)
        revoked = self.broker.set_rights(rights) if self.broker is not None else 0
        for bus in self.buses.values():
            bus.rights = rights
        log.info(what, extra={**src.describe(rights), "revoked_workers": revoked})

    def _admit(self, rights: Rights) -> None:
        """Every identity of the registry is admitted by CURVE too (enrolling a module is all
        it needs to connect, no key file); a revoked key is refused at its next handshake."""
        keys = (
            {i.public_key.encode("ascii") for i in rights.registry.identities()}
            if rights.registry is not None
            else set()
        )
        for server in (self._curve, self._bus_curve):
            if server is not None:
                server.admit(keys)

    def reload_now(self) -> None:
        """SIGHUP: re-read the registry even if its signature looks unchanged."""
        self.reload(force=True)

    def _start_audit(self) -> None:
        broker = self.broker
        if broker is None or AUDIT_BUS not in self.buses:
            return
        sock = self.context.socket(zmq.PUB)
        sock.linger = 0
        sock.sndhwm = 1000
        sock.connect(local_bus_endpoint(AUDIT_BUS))
        self._audit_sock = sock
        auditor = self.auditor = Auditor(contract.BROKER, _BusSink(sock))

        def emit(records: list[dict[str, str]]) -> None:
            for r in records:
                auditor.emit(AuditEvent(**r))  # type: ignore[arg-type]

        # From here on the socket belongs to the loop thread (handed over under its lock).
        broker.on_audit(emit)

    def start(self) -> None:
        """Bind everything (raises OSError, BusError, KeysError or RegistryError naming what
        failed)."""
        s = self.settings
        self._load_curve()
        self._load_rights()
        broker = Broker(
            [s.endpoint, INTERNAL_ENDPOINT],
            heartbeat_ms=s.heartbeat_ms,
            liveness=s.heartbeat_liveness,
            request_timeout=s.request_timeout_ms / 1000.0,
            orphan_timeout=s.orphan_wait_ms / 1000.0 if s.orphan_wait_ms else None,
            limits=Limits(
                max_frame_size=s.max_frame_bytes,
                max_message_size=s.max_message_bytes,
                max_frames=s.max_frames,
                max_queue=s.max_queue,
                max_queue_bytes=s.max_queue_bytes,
                max_client_requests=s.max_client_requests,
                max_client_bytes=s.max_client_bytes,
                max_queued_bytes=s.max_queued_bytes,
                max_services=s.max_services,
                max_workers=s.max_workers,
                max_names_per_peer=s.max_names_per_peer,
                service_ttl=s.service_ttl_ms / 1000.0,
                metrics_top_services=s.metrics_top_services,
            ),
            send_hwm=s.send_hwm,
            curve=self._curve,
            rights=self.rights,
            context=self.context,
        )
        try:
            broker.start()
            self.broker = broker
            for name, ports in s.buses.items():
                front, back = bus_endpoints(s.bus_bind, ports)
                bus = BusProxy(
                    name,
                    front,
                    back,
                    context=self.context,
                    curve=self._bus_curve,
                    limits=BusLimits(s.bus_max_message_bytes, s.bus_max_frames, s.bus_hwm),
                    rights=self.rights,
                    local=[local_bus_endpoint(name)],
                )
                bus.start()
                self.buses[name] = bus
            self._start_audit()
        except BaseException:
            self.stop(drain_timeout=0.0)
            raise
        log.info("broker listening", extra={"endpoints": broker.endpoints})
        if self.registry is not None:
            self._collector = BrokerCollector(broker.stats, self.bus_stats)
            self.registry.register(self._collector)
        self._started = True

    def start_worker(self) -> asyncio.Task[None]:
        """Run ``org.plantd.Broker`` on the current loop (call after start())."""
        broker = self.broker
        if broker is None:
            raise RuntimeError("start() the broker before its worker")

        async def handle(frames: list[bytes]) -> list[bytes]:
            return queries.handle(frames, broker.snapshot, self.registry_status)

        self.worker = AsyncWorker(
            INTERNAL_ENDPOINT,
            contract.SERVICE_BROKER,
            handle,
            heartbeat_ms=self.settings.heartbeat_ms,
            liveness=self.settings.heartbeat_liveness,
            context=self.context,
        )
        self._worker_task = asyncio.get_running_loop().create_task(self.worker.run())
        self._start_enrolled()
        return self._worker_task

    def _start_enrolled(self) -> None:
        """Poll identity for enrolments (``identity_registry``; on the current loop)."""
        s = self.settings
        src = self._rights_source
        if not s.identity_registry or src is None:
            return
        self.enrolled = fetcher = EnrolledFetcher(
            self.context,
            INTERNAL_ENDPOINT,
            s.identity_service,
            self.apply_enrolled,
            every_s=s.identity_registry_poll_s,
        )
        if self.registry is not None:
            self._enrolled_collector = EnrolledCollector(fetcher, lambda: len(src.ignored))
            self.registry.register(self._enrolled_collector)
        self._enrolled_task = asyncio.get_running_loop().create_task(fetcher.run())

    def registry_status(self) -> dict[str, object] | None:
        """Where the rights come from, for ``org.plantd.Broker``'s ``broker`` answer."""
        src, rights = self._rights_source, self.rights
        if src is None or rights is None:
            return None
        out = src.describe(rights)
        if self.enrolled is not None:
            out["identity"] = self.enrolled.describe()
        return out

    async def stop_async(self) -> None:
        """Graceful stop from the service loop: drain the broker, then the rest."""
        grace = self.settings.shutdown_grace_ms / 1000.0
        if self._enrolled_task is not None:
            self._enrolled_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._enrolled_task
            self._enrolled_task = None
        if self.broker is not None:
            # Blocking join of the broker thread; off the loop so the internal worker keeps
            # answering in-flight org.plantd.Broker requests while the broker drains.
            quiet = self.settings.shutdown_quiet_ms / 1000.0
            await asyncio.to_thread(self.broker.stop, grace, quiet)
        if self.worker is not None:
            await self.worker.stop(timeout=1.0)
        if self._worker_task is not None:
            try:
                await asyncio.wait_for(self._worker_task, 3.0)
            except (TimeoutError, asyncio.CancelledError):
                self._worker_task.cancel()
            self._worker_task = None
        self.stop(drain_timeout=0.0)

    def stop(self, drain_timeout: float = 0.0) -> None:
        """Stop whatever is still running and release the context (idempotent)."""
        if self._enrolled_task is not None:  # stop_async awaits it; here it just ends
            self._enrolled_task.cancel()
            self._enrolled_task = None
        if self.broker is not None:
            self.broker.stop(drain_timeout)
            self.broker = None
        if self._audit_sock is not None:  # the loop thread has ended: ours again
            self._audit_sock.close(0)
            self._audit_sock = None
        for bus in self.buses.values():
            bus.stop()
        if self._bus_curve is not None:
            self._bus_curve.release()
            self._bus_curve = None
        if self._collector is not None and self.registry is not None:
            self.registry.unregister(self._collector)
            self._collector = None
        if self._enrolled_collector is not None and self.registry is not None:
            self.registry.unregister(self._enrolled_collector)
            self._enrolled_collector = None
        self.context.destroy(linger=0)
        self._started = False

    # ------------------------------------------------------------------ health

    def bus_stats(self) -> Mapping[str, BusStats]:
        return {name: bus.stats() for name, bus in self.buses.items()}

    def alive(self) -> bool:
        """The broker loop and every bus proxy are still running."""
        broker = self.broker
        if broker is None or broker.wait_stopped(0):
            return False
        return all(bus.running for bus in self.buses.values())

    def ready(self) -> bool:
        return self._started and self.alive()

    def registered_services(self) -> list[str]:
        """Services with at least one worker registered at this broker now."""
        broker = self.broker
        if broker is None:
            return []
        return [s.name for s in broker.snapshot().services if s.workers > 0]
