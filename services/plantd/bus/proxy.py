"""One pub/sub bus: an XSUB frontend for publishers and an XPUB backend for subscribers.

The original plantd bound a *SUB* frontend, which never forwards subscriptions upstream, so no
message ever crossed its buses. Here the frontend is XSUB: a subscriber's SUBSCRIBE travels
subscriber -> XPUB -> proxy -> XSUB -> every publisher, and publishers then send only matching
messages (ZeroMQ filters on the publisher side over TCP).

Forwarding runs in libzmq's C proxy (``zmq.proxy_steerable``) on its own thread, with the GIL
released, so the bus costs no Python time per message. Counts come from the proxy's
``STATISTICS`` command (frames and bytes per direction), asked for at scrape time over an inproc
control socket; with plantd's two-frame ``[topic, payload]`` messages, messages = frames / 2.

Delivery is best effort, as with any ZeroMQ PUB/SUB:

- *Slow joiners*: a message published before a subscriber's subscription has reached the
  publisher is dropped. :meth:`plantd.bus.Publisher.wait_for_subscriber` waits until one has.
- *High-water marks*: each hop queues up to ``hwm`` messages per peer; past that, messages for the
  slow peer are dropped (publishers never block). The proxy uses a large HWM so bursts survive.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass
from typing import Final

import zmq

from plantd.common.curve import CurveServer, HandshakeMonitor

log = logging.getLogger("plantd.bus")

DEFAULT_PROXY_HWM: Final = 100_000
_STAT_TIMEOUT_MS: Final = 1000


class BusError(RuntimeError):
    """A bus could not start (e.g. its port is taken); the message names the endpoint."""


@dataclass(frozen=True, slots=True)
class BusStats:
    """Counters since the bus started (frames and bytes as libzmq's proxy counts them)."""

    frames_in: int  # from publishers into the proxy
    bytes_in: int
    frames_out: int  # from the proxy to subscribers (before per-subscriber filtering)
    bytes_out: int
    subscription_frames: int  # subscribe/unsubscribe frames from subscribers
    handshake_failures: int  # CURVE handshakes refused on either socket


def bus_endpoints(host: str, ports: tuple[int, int]) -> tuple[str, str]:
    """``(publisher endpoint, subscriber endpoint)`` for a bus on ``host``."""
    return f"tcp://{host}:{ports[0]}", f"tcp://{host}:{ports[1]}"


class BusProxy:
    """An XSUB/XPUB forwarder; ``start()`` binds and forwards until ``stop()``."""

    def __init__(
        self,
        name: str,
        frontend: str,
        backend: str,
        *,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        curve: CurveServer | None = None,
        hwm: int = DEFAULT_PROXY_HWM,
    ) -> None:
        self.name = name
        self.frontend_endpoint = frontend
        self.backend_endpoint = backend
        self.context = context if context is not None else zmq.Context.instance()
        self.curve = curve
        self.hwm = hwm
        self._thread: threading.Thread | None = None
        self._control: zmq.Socket[bytes] | None = None
        self._lock = threading.Lock()  # serialises use of the control and monitor sockets
        self._monitors: list[HandshakeMonitor] = []
        self._last = BusStats(0, 0, 0, 0, 0, 0)
        self._error: BaseException | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Bind both sockets and start forwarding. Raises :class:`BusError` if a bind fails."""
        if self._thread is not None:
            raise RuntimeError(f"bus {self.name} already started")
        ctx = self.context
        frontend = ctx.socket(zmq.XSUB)
        backend = ctx.socket(zmq.XPUB)
        sockets = [frontend, backend]
        try:
            pairs = ((frontend, self.frontend_endpoint), (backend, self.backend_endpoint))
            for sock, endpoint in pairs:
                sock.linger = 0
                sock.rcvhwm = self.hwm
                sock.sndhwm = self.hwm
                if self.curve is not None:
                    self.curve.apply(sock)
                    self._monitors.append(HandshakeMonitor(sock))
                try:
                    sock.bind(endpoint)
                except zmq.ZMQError as exc:
                    raise BusError(
                        f"bus {self.name}: cannot bind {endpoint} ({exc.strerror}); "
                        "is another broker running, or pick other ports with --buses"
                    ) from None
            control_addr = f"inproc://plantd.bus.{self.name}.{id(self):x}"
            control = ctx.socket(zmq.PAIR)
            control.linger = 0
            control.bind(control_addr)
            proxy_control = ctx.socket(zmq.PAIR)
            proxy_control.linger = 0
            proxy_control.connect(control_addr)
            sockets += [proxy_control]
        except BaseException:
            self._close_monitors()
            for sock in sockets:
                sock.close(0)
            raise
        self._control = control
        self._thread = threading.Thread(
            target=self._run,
            args=(frontend, backend, proxy_control),
            name=f"plantd-bus-{self.name}",
            daemon=True,
        )
        self._thread.start()
        log.info(
            "bus started",
            extra={
                "bus": self.name,
                "publishers": self.frontend_endpoint,
                "subscribers": self.backend_endpoint,
                "curve": self.curve is not None,
            },
        )

    def _run(
        self,
        frontend: zmq.Socket[bytes],
        backend: zmq.Socket[bytes],
        control: zmq.Socket[bytes],
    ) -> None:
        try:
            zmq.proxy_steerable(frontend, backend, None, control)
        except zmq.ContextTerminated:
            pass
        except zmq.ZMQError as exc:  # kept for stats()/liveness; the broker logs it
            self._error = exc
            log.error("bus proxy failed", extra={"bus": self.name, "error": str(exc)})
        finally:
            for sock in (frontend, backend, control):
                sock.close(0)

    def stats(self) -> BusStats:
        """Current counters (the last known ones once the proxy has stopped)."""
        with self._lock:
            control = self._control
            if control is None or not self.running:
                return self._last
            for mon in self._monitors:
                mon.drain()
            failures = sum(m.auth_failed + m.protocol_failed + m.no_detail for m in self._monitors)
            try:
                control.send(b"STATISTICS")
                if not control.poll(_STAT_TIMEOUT_MS):
                    return self._last
                frames = control.recv_multipart()
            except zmq.ZMQError:
                return self._last
            if len(frames) != 8:
                return self._last
            v = [int.from_bytes(f, "little") for f in frames]
            # Frontend: v0/v1 in from publishers. Backend: v4/v5 in (subscriptions), v6/v7 out.
            self._last = BusStats(
                frames_in=v[0],
                bytes_in=v[1],
                frames_out=v[6],
                bytes_out=v[7],
                subscription_frames=v[4],
                handshake_failures=failures,
            )
            return self._last

    def stop(self, timeout: float = 2.0) -> None:
        """Stop forwarding and close the sockets (idempotent)."""
        thread = self._thread
        if thread is None:
            return
        self.stats()  # keep the final counts readable after stop
        with self._lock:
            if self._control is not None:
                with contextlib.suppress(zmq.ZMQError):
                    self._control.send(b"TERMINATE", zmq.NOBLOCK)
            thread.join(timeout)
            if self._control is not None:
                self._control.close(0)
                self._control = None
            self._close_monitors()
        if thread.is_alive():
            log.warning("bus proxy did not stop in time", extra={"bus": self.name})
        self._thread = None

    def _close_monitors(self) -> None:
        for mon in self._monitors:
            with contextlib.suppress(zmq.ZMQError):
                mon.socket.close(0)
        self._monitors = []
