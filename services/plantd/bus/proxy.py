"""One pub/sub bus: an XSUB frontend for publishers and an XPUB backend for subscribers.

The original plantd bound a *SUB* frontend, which never forwards subscriptions upstream, so no
message ever crossed its buses. Here the frontend is XSUB: a subscriber's SUBSCRIBE travels
subscriber -> XPUB -> proxy -> XSUB -> every publisher, and publishers then send only matching
messages (ZeroMQ filters on the publisher side over TCP).

**Limits** (:class:`BusLimits`; issue 7 measured 3 x 200 MiB published to a slow subscriber at
1.85 GB of broker memory). A bus carries small ``[topic, payload]`` messages, so:

- *A frame bigger than* ``max_message_bytes`` is refused by libzmq itself (``ZMQ_MAXMSGSIZE`` on
  the XSUB socket). It is checked from the frame header, before any allocation, so it costs
  nothing, but libzmq cannot drop one message: it **closes that publisher's connection**. The
  publisher's socket reconnects by itself (after ``reconnect_ivl``, 100 ms by default) and sends
  what was still queued in it; what was already on the wire behind the big frame is lost.
  Measured with libzmq 4.3.5: the messages queued after a 2 MiB frame arrived after the
  reconnect. libzmq reports only a disconnect, so these show in ``disconnects``, not ``dropped``.
  (``ZMQ_MAXMSGSIZE`` limits each *frame*, despite its name: two 600 KiB frames pass a 1 MiB
  limit, and so do 5,000 frames of 1 KB.)
- *A message over* ``max_message_bytes`` *in total, or with more than* ``max_frames`` *frames*,
  is dropped by the forwarder, never forwarded, and counted in ``dropped_*``; the publisher's
  connection and every other message are untouched.
- *A slow subscriber* costs at most ``hwm`` messages queued for it (XPUB send high-water mark; past
  it libzmq drops that subscriber's messages, silently), so at most ``hwm x max_message_bytes``
  bytes (1 GiB at the defaults, only if a publisher sends 1 MiB messages to a stalled subscriber;
  lower ``max_message_bytes`` where a plant publishes only small ones; payload buffers are shared by
  all subscribers of a message) plus the kernel's socket buffers; each publisher's receive queue is
  bounded the same way. Measured (tests/integration/bus/test_bus_limits.py): 300 x 1 MiB to a
  subscriber that never reads, ``hwm`` 40, grew the broker's peak RSS by 70 MiB (about both queues
  full); with ``hwm`` 100,000 by 427 MiB. 3 x 200 MiB frames and 5 x 1.2 MiB messages: +2 MiB. What
  a limit cannot bound: libzmq holds a whole multipart message before the forwarder can see any of
  it, so one message of many small frames costs its size (plus about 64 bytes per frame) for as long
  as it takes to drop it.

The forwarder is a Python loop on its own thread, not libzmq's C proxy, because only code that
sees each whole message can drop one and count it. It drains every ready message per wake-up
and sends with :mod:`plantd.mdp._wire`'s fast multipart send. Measured here on the loaded 2-core
VM, 100,000 64-byte messages publisher -> proxy -> subscriber, each in its own process: C proxy
50-63K msg/s at 2-3 us CPU per message, this loop 21-34K msg/s at 9-11 us (one interleaved
probe; the machine was at load 5-6). Buses carry state changes, events and metrics, far below
that; the price is GIL time taken from the broker's loop when a bus is busy.

**Publish rights** (issue 8: any allowed key could publish a forged state change). With a
registry (:class:`plantd.common.registry.Rights` in :attr:`BusProxy.rights`, swapped on
reload), each message's publisher key is read from its first frame (``Frame.get("User-Id")``:
ZAP set it to the Z85 key) and the message is forwarded only if the registry grants that key
the topic on this bus; otherwise it is dropped and counted (``dropped_forbidden``). A peer with
no key is in-process (the broker's own audit publisher on ``inproc``). Without a registry
every allowed key may publish, as before.

Delivery is best effort, as with any ZeroMQ PUB/SUB:

- *Slow joiners*: a message published before a subscriber's subscription has reached the
  publisher is dropped. :meth:`plantd.bus.Publisher.wait_for_subscriber` waits until one has.
- *High-water marks*: each hop queues up to its HWM per peer; past that, messages for the slow
  peer are dropped (publishers never block).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import zmq

from plantd.common.curve import CurveServer, HandshakeMonitor
from plantd.common.registry import Registry, Rights
from plantd.mdp import _wire

log = logging.getLogger("plantd.bus")

# One full state batch-set (max_batch_keys = 1000 keys, one event each) must fit in a subscriber's
# queue while it is momentarily behind; 100 dropped most of such a burst (measured with bench.bus).
DEFAULT_PROXY_HWM: Final = 1000
DEFAULT_MAX_MESSAGE_BYTES: Final = 1024 * 1024
DEFAULT_MAX_FRAMES: Final = 8
# A subscription is one frame: 0x01/0x00 and a topic prefix. Longer ones close the subscriber.
MAX_SUBSCRIPTION_BYTES: Final = 64 * 1024
# Messages moved per direction per wake-up before the other direction and the control socket
# get a turn (a flood on one side must not starve subscriptions or TERMINATE).
_BATCH: Final = 512
_NOBLOCK: Final = int(zmq.NOBLOCK)
_LOG_EVERY_S: Final = 10.0  # forged publications are logged at most this often per bus
_MAX_KEY_CACHE: Final = 4096  # publisher key -> granted prefixes, per forwarding batch


class BusError(RuntimeError):
    """A bus could not start (e.g. its port is taken); the message names the endpoint."""


@dataclass(frozen=True, slots=True)
class BusLimits:
    """What one bus accepts and queues (see the module docstring for what happens past each)."""

    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES  # a published message, all frames
    max_frames: int = DEFAULT_MAX_FRAMES  # frames per published message
    hwm: int = DEFAULT_PROXY_HWM  # messages queued per subscriber and per publisher

    def __post_init__(self) -> None:
        if self.max_message_bytes < 1 or self.max_frames < 1 or self.hwm < 1:
            raise ValueError(f"bus limits must be positive: {self}")


@dataclass(frozen=True, slots=True)
class BusStats:
    """Counters since the bus started."""

    frames_in: int  # from publishers into the proxy (dropped messages included)
    bytes_in: int
    frames_out: int  # from the proxy to subscribers (before per-subscriber filtering)
    bytes_out: int
    subscription_frames: int  # subscribe/unsubscribe frames from subscribers
    handshake_failures: int  # CURVE handshakes refused on either socket
    dropped_too_large: int = 0  # messages over max_message_bytes in total (frames within it)
    dropped_too_many_frames: int = 0  # messages with more than max_frames frames
    dropped_bytes: int = 0  # bytes of the dropped messages (as far as read)
    disconnects: int = 0  # publisher connections closed (an over-limit frame closes one)
    dropped_forbidden: int = 0  # messages on a topic the publisher's key may not publish


def bus_endpoints(host: str, ports: tuple[int, int]) -> tuple[str, str]:
    """``(publisher endpoint, subscriber endpoint)`` for a bus on ``host``."""
    return f"tcp://{host}:{ports[0]}", f"tcp://{host}:{ports[1]}"


class _Counters:
    """Plain ints written by the forwarder thread only; read (racily, monotonic) by stats()."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "disconnects",
        "dropped_bytes",
        "dropped_forbidden",
        "dropped_too_large",
        "dropped_too_many_frames",
        "forbidden_logged",
        "frames_in",
        "frames_out",
        "subscription_frames",
    )

    def __init__(self) -> None:
        self.frames_in = self.bytes_in = self.frames_out = self.bytes_out = 0
        self.subscription_frames = self.disconnects = self.dropped_bytes = 0
        self.dropped_too_large = self.dropped_too_many_frames = self.dropped_forbidden = 0
        self.forbidden_logged = -_LOG_EVERY_S


# (publisher key or None, topic) -> may it publish; None: no check at all.
PublishCheck = Callable[[str | None, bytes], bool]


def publish_check(rights: Rights | None, bus: str) -> PublishCheck | None:
    """The per-message check of ``rights`` on ``bus`` (None when everything may pass)."""
    if rights is None or rights.registry is None:
        return None
    registry: Registry = rights.registry
    cache: dict[str, tuple[bytes, ...]] = {}

    def check(key: str | None, topic: bytes) -> bool:
        if key is None:
            return True  # in-process publisher (inproc has no CURVE)
        prefixes = cache.get(key)
        if prefixes is None:
            if len(cache) >= _MAX_KEY_CACHE:
                cache.clear()
            prefixes = cache[key] = registry.publish_prefixes(key, bus)
        return bool(prefixes) and topic.startswith(prefixes)

    return check


def _user_id(frame: zmq.Frame) -> str | None:
    try:
        user = frame.get("User-Id")
    except (zmq.ZMQError, KeyError, UnicodeError):
        return None
    if not user:
        return None
    return user if isinstance(user, str) else bytes(user).decode("ascii", "replace")


def forward_publications(
    front: zmq.Socket[bytes],
    back: zmq.Socket[bytes],
    limits: BusLimits,
    c: _Counters,
    batch: int = _BATCH,
    check: PublishCheck | None = None,
) -> None:
    """Move up to ``batch`` ready messages from XSUB to XPUB, dropping those over the limits
    and (with ``check``) those the publisher's key may not publish.

    Frames are read one at a time, so a message over a limit stops being kept as soon as it
    passes it (its remaining frames are read and released, never accumulated).
    """
    max_bytes, max_frames = limits.max_message_bytes, limits.max_frames
    for _ in range(batch):
        try:
            frame = front.recv(_NOBLOCK, copy=False)
        except zmq.Again:
            return
        size = len(frame)
        parts = [frame.bytes]
        key = _user_id(frame) if check is not None else None
        count = 1
        while frame.more:
            frame = front.recv(0, copy=False)
            size += len(frame)
            count += 1
            if count <= max_frames and size <= max_bytes:
                parts.append(frame.bytes)
        c.frames_in += count
        c.bytes_in += size
        if count > max_frames:
            c.dropped_too_many_frames += 1
            c.dropped_bytes += size
        elif size > max_bytes:
            c.dropped_too_large += 1
            c.dropped_bytes += size
        elif check is not None and not check(key, parts[0]):
            c.dropped_forbidden += 1
            c.dropped_bytes += size
            now = time.monotonic()
            if now - c.forbidden_logged >= _LOG_EVERY_S:
                c.forbidden_logged = now
                log.warning(
                    "dropped a bus message its publisher's key may not publish",
                    extra={
                        "key": key,
                        "topic": parts[0][:64].decode("utf-8", "replace"),
                        "dropped_forbidden": c.dropped_forbidden,
                        "hint": "grant the topic in the registry's 'publish' of that key",
                    },
                )
        else:
            try:
                _wire.send_multipart(back, parts, _NOBLOCK)
            except zmq.Again:  # XPUB never blocks; kept for safety
                continue
            c.frames_out += count
            c.bytes_out += size


def forward_subscriptions(
    back: zmq.Socket[bytes], front: zmq.Socket[bytes], c: _Counters, batch: int = _BATCH
) -> None:
    """Move subscribe/unsubscribe messages from XPUB to XSUB (to every publisher)."""
    for _ in range(batch):
        try:
            parts = _wire.recv_multipart(back, _NOBLOCK)
        except zmq.Again:
            return
        c.subscription_frames += len(parts)
        with contextlib.suppress(zmq.Again):
            _wire.send_multipart(front, parts, _NOBLOCK)


class BusProxy:
    """An XSUB/XPUB forwarder with limits; ``start()`` binds and forwards until ``stop()``."""

    def __init__(
        self,
        name: str,
        frontend: str,
        backend: str,
        *,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        curve: CurveServer | None = None,
        hwm: int | None = None,
        limits: BusLimits | None = None,
        rights: Rights | None = None,
        local: Sequence[str] = (),
    ) -> None:
        self.name = name
        # Read by the forwarder thread at each wake-up; assign a new value to reload.
        self.rights = rights
        # Extra inproc publisher endpoints (in-process publishers, e.g. the broker's audit).
        self.local_endpoints = tuple(local)
        self.frontend_endpoint = frontend
        self.backend_endpoint = backend
        self.context = context if context is not None else zmq.Context.instance()
        self.curve = curve
        limits = limits or BusLimits()
        if hwm is not None:  # the older keyword, kept for callers that pass only the HWM
            limits = BusLimits(limits.max_message_bytes, limits.max_frames, hwm)
        self.limits = limits
        self.hwm = limits.hwm
        self._thread: threading.Thread | None = None
        self._control: zmq.Socket[bytes] | None = None
        self._lock = threading.Lock()  # serialises use of the control socket
        self._monitors: list[HandshakeMonitor] = []
        self._counters = _Counters()
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
            # Per-frame limits, enforced by libzmq before allocating (see the module docstring).
            frontend.maxmsgsize = self.limits.max_message_bytes
            backend.maxmsgsize = MAX_SUBSCRIPTION_BYTES
            pairs = ((frontend, self.frontend_endpoint), (backend, self.backend_endpoint))
            for sock, endpoint in pairs:
                sock.linger = 0
                sock.rcvhwm = self.hwm
                sock.sndhwm = self.hwm
                if self.curve is not None:
                    self.curve.apply(sock)
                if self.curve is not None or sock is frontend:  # frontend: count disconnects
                    self._monitors.append(HandshakeMonitor(sock, disconnects=sock is frontend))
                try:
                    sock.bind(endpoint)
                except zmq.ZMQError as exc:
                    raise BusError(
                        f"bus {self.name}: cannot bind {endpoint} ({exc.strerror}); "
                        "is another broker running, or pick other ports with --buses"
                    ) from None
            for endpoint in self.local_endpoints:
                frontend.bind(endpoint)
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
                "max_message_bytes": self.limits.max_message_bytes,
                "max_frames": self.limits.max_frames,
                "hwm": self.hwm,
            },
        )

    def _run(
        self, frontend: zmq.Socket[bytes], backend: zmq.Socket[bytes], control: zmq.Socket[bytes]
    ) -> None:
        c, limits = self._counters, self.limits
        monitors = {mon.socket: mon for mon in self._monitors}
        poller = zmq.Poller()
        for sock in (frontend, backend, control, *monitors):
            poller.register(sock, zmq.POLLIN)
        checked_rights: Rights | None = None
        check: PublishCheck | None = None
        try:
            while True:
                ready = dict(poller.poll())
                if frontend in ready:
                    rights = self.rights
                    if rights is not checked_rights:
                        checked_rights, check = rights, publish_check(rights, self.name)
                    forward_publications(frontend, backend, limits, c, _BATCH, check)
                if backend in ready:
                    forward_subscriptions(backend, frontend, c)
                for sock, mon in monitors.items():
                    if sock in ready:
                        mon.drain()
                if control in ready and control.recv() == b"TERMINATE":
                    return
        except zmq.ContextTerminated:
            pass
        except zmq.ZMQError as exc:  # kept for stats()/liveness; the broker logs it
            self._error = exc
            log.error("bus proxy failed", extra={"bus": self.name, "error": str(exc)})
        finally:
            for sock in (frontend, backend):
                with contextlib.suppress(zmq.ZMQError):
                    sock.disable_monitor()
            for sock in (frontend, backend, control):
                sock.close(0)

    def stats(self) -> BusStats:
        """Current counters (plain ints the forwarder thread writes; monotonic)."""
        c, mons = self._counters, self._monitors
        return BusStats(
            frames_in=c.frames_in,
            bytes_in=c.bytes_in,
            frames_out=c.frames_out,
            bytes_out=c.bytes_out,
            subscription_frames=c.subscription_frames,
            handshake_failures=sum(m.auth_failed + m.protocol_failed + m.no_detail for m in mons),
            dropped_too_large=c.dropped_too_large,
            dropped_too_many_frames=c.dropped_too_many_frames,
            dropped_bytes=c.dropped_bytes,
            disconnects=sum(m.disconnected for m in mons),
            dropped_forbidden=c.dropped_forbidden,
        )

    def stop(self, timeout: float = 2.0) -> None:
        """Stop forwarding and close the sockets (idempotent)."""
        thread = self._thread
        if thread is None:
            return
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
        # The monitors' counts stay readable through stats() after stop.
        for mon in self._monitors:
            with contextlib.suppress(zmq.ZMQError):
                mon.socket.close(0)
