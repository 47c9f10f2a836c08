"""The MDP broker's socket shell: thread, wake pair, poller, ROUTER, flush, stats export.

Everything MDP is decided by :class:`plantd.mdp.dispatcher.Dispatcher` (socket-free, unit
tested without sockets); this module only moves frames between it and the ROUTER.

Why synchronous: a plain pyzmq loop forwards ~3x more than the same loop on zmq.asyncio here
(reference perf-anchors §2.2). Each wake-up drains every ready message (NOBLOCK) before timers
run. The hot path does no logging and keeps per-message allocations to the outgoing frame list.

Sends are queued during a wake-up (``Dispatcher.out``) and written together at its end (in
order; at most ``_FLUSH_AT`` wait). Why: every message libzmq's I/O thread finds on an idle
pipe costs a wake-up of that thread and a TCP write of its own, which cost more than the Python
work per message; written back to back they share wake-ups and TCP writes, here and in every
peer that reads them. Measured: ~20% less CPU per round trip over broker, worker and client.

Frames per message are bounded while receiving (``Limits.max_frames``): past the limit the rest
of the message is read and thrown away, ``_DISCARD_CHUNK`` frames per wake-up, so the loop's
memory stays flat and its timers and sends keep running (libzmq hands a multipart message over
only whole, so the frames must still be read: measured ~1-8 us each on this 2-core box).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Final

import zmq

from plantd.common.contract import DEFAULT_BROKER_BIND, HEARTBEAT_LIVENESS, HEARTBEAT_MS
from plantd.common.curve import CurveServer, HandshakeMonitor
from plantd.common.registry import Rights
from plantd.mdp._wire import _recv, send_multipart, send_routed
from plantd.mdp.budgets import Limits
from plantd.mdp.dispatcher import Dispatcher, Outgoing
from plantd.mdp.stats import BrokerSnapshot, BrokerStats

log = logging.getLogger(__name__)

_NOBLOCK: Final = int(zmq.NOBLOCK)
_DRAIN_BATCH: Final = 2048  # messages per wake-up before timers get a look
_FLUSH_AT: Final = 256  # queued sends written out even in the middle of a wake-up
_TICK_S: Final = 0.05  # queue deadlines are checked this often
_DISCARD_CHUNK: Final = 50_000  # frames of an oversized message thrown away per wake-up
_HEAD: Final = 8  # frames kept of an oversized message, enough to decode its header
_MAX_PEER_KEYS: Final = 65_536  # routing id -> CURVE key cache, cleared when full
_UNSEEN: Final = object()


# Held sends are retried per peer with backoff: libzmq tells a writer its pipe has room only
# after the reader consumed half the HWM, so a reading peer is usually ready within a
# millisecond; one that does not read backs off to one zmq.Again per 50 ms. Measured: a retry
# only at the 50 ms tick cut 100-in-flight throughput from ~18,000 to ~5,000 req/s.
_RETRY_FIRST_S: Final = 0.0005
_RETRY_MAX_S: Final = 0.05


def _send(sock: zmq.Socket[bytes], m: Outgoing) -> None:
    if isinstance(m, list):
        send_multipart(sock, m, _NOBLOCK)
    else:
        to, head, addr, body, delimit = m
        send_routed(sock, to, head, addr, body, _NOBLOCK, delimit)


def _size(m: Outgoing) -> int:
    frames = m if isinstance(m, list) else m[3]
    return sum(map(len, frames))


class _Discard:
    """An over-long message being read and thrown away."""

    __slots__ = ("frames", "head", "size")

    def __init__(self, head: list[bytes], frames: int, size: int) -> None:
        self.head = head
        self.frames = frames
        self.size = size


class Broker:
    """An MDP broker (MDP/0.2 native; MDP/0.1 and legacy plantd peers answered in kind).

    Use :meth:`start` to run it in a background thread (or :meth:`run` in the current one) and
    :meth:`stop` to drain and shut down. :meth:`stats` and :meth:`snapshot` are thread-safe.
    Limits: pass ``limits=Limits(...)`` or any of its fields as a keyword (docs/protocol.md).
    """

    def __init__(
        self,
        endpoints: str | Sequence[str] = DEFAULT_BROKER_BIND,
        *,
        heartbeat_ms: int = HEARTBEAT_MS,
        liveness: int = HEARTBEAT_LIVENESS,
        request_timeout: float = 5.0,
        orphan_timeout: float | None = None,
        limits: Limits | None = None,
        hwm: int = 100_000,
        send_hwm: int = 256,
        backlog: int = 4096,
        curve: CurveServer | None = None,
        rights: Rights | None = None,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        **limit_fields: Any,
    ) -> None:
        if heartbeat_ms <= 0 or liveness <= 0:
            raise ValueError("heartbeat_ms and liveness must be positive")
        if send_hwm < 2 or hwm < 1:
            raise ValueError("need send_hwm >= 2 and hwm >= 1")
        try:
            self.limits = dataclasses.replace(limits or Limits(), **limit_fields)
        except TypeError as exc:
            raise TypeError(
                f"Broker: unknown limit ({exc}); see plantd.mdp.budgets.Limits"
            ) from None
        self._bind_to = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not self._bind_to:
            raise ValueError("Broker needs at least one endpoint to bind")
        self.heartbeat_s = heartbeat_ms / 1000.0
        self.liveness = liveness
        self.request_timeout = request_timeout
        self.hwm = hwm
        # Per-pipe send HWM, in messages (libzmq cannot count bytes): a peer that never reads
        # holds at most this many in libzmq; past it the send fails (ROUTER_MANDATORY) and the
        # shell holds the rest, in bytes, charged to that client's budget. 256 (was 100,000,
        # which let 400 x 1 MiB replies to a slow consumer take ~475 MB): libzmq tells a writer
        # about room only after the reader consumed half the HWM, so a pipe has at least 128
        # free slots for a reading peer, above the bench's 100 requests in flight per socket
        # and a credit-100 worker's burst (measured: 128 held sends at 100 in flight and cut
        # the 1-worker/100-in-flight bench from 0.61 to 0.37 of raw pyzmq).
        self.send_hwm = send_hwm
        self.backlog = backlog
        self.curve = curve
        self._own_context = context is None
        self.context: zmq.Context[zmq.Socket[bytes]] = context or zmq.Context()
        self.endpoints: list[str] = []
        self._started_at = time.monotonic()
        self.dispatcher = Dispatcher(
            self.limits,
            heartbeat_s=self.heartbeat_s,
            liveness=liveness,
            request_timeout=request_timeout,
            orphan_timeout=orphan_timeout,
            now=self._started_at,
        )
        if rights is not None and curve is None:
            raise ValueError(
                "service rights need CURVE (without it no peer has a key to check); "
                "pass curve= or drop rights="
            )
        self.dispatcher.rights = rights
        # Called in the loop thread with the dispatcher's denial records (plantd.common.audit).
        self._on_audit: Callable[[list[dict[str, str]]], None] | None = None
        self._lock = threading.Lock()
        self._sock: zmq.Socket[bytes] | None = None
        self._wake_r: zmq.Socket[bytes] | None = None
        self._wake_w: zmq.Socket[bytes] | None = None
        self._monitor: HandshakeMonitor | None = None
        self._thread: threading.Thread | None = None
        self._stop_requested = threading.Event()
        self._stopped = threading.Event()
        self._drain_timeout = 0.0
        self._drain_quiet = 0.0
        self._discard: _Discard | None = None
        # Sends to peers whose pipe is at its HWM, in order, per routing id.
        self._held: dict[bytes, deque[Outgoing]] = {}
        self._users: dict[bytes, str | None] = {}  # routing id -> ZAP User-Id last seen
        self._retry: dict[bytes, tuple[float, float]] = {}  # peer -> (when, backoff)
        self._next_retry = float("inf")

    # Shorthands kept for callers of the old shell.
    @property
    def max_queue(self) -> int:
        return self.limits.max_queue

    @property
    def expiry_s(self) -> float:
        return self.dispatcher.expiry_s

    # ------------------------------------------------------------------ lifecycle

    def bind(self, endpoint: str) -> str:
        """Bind one more endpoint (before start); returns the resolved endpoint."""
        if self._sock is None:
            self._bind_to.append(endpoint)
            return endpoint
        if self._thread is not None:
            raise RuntimeError("bind extra endpoints before start(), or pass them to Broker()")
        return self._bind_one(endpoint)

    def _bind_one(self, endpoint: str) -> str:
        assert self._sock is not None
        try:
            self._sock.bind(endpoint)
        except zmq.ZMQError as exc:
            raise OSError(
                f"broker cannot bind {endpoint}: {exc}; is another broker using it? "
                "Choose another endpoint (PLANTD_BROKER_ENDPOINT)"
            ) from exc
        actual = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.endpoints.append(actual)
        return actual

    def _open(self) -> None:
        sock = self.context.socket(zmq.ROUTER)
        sock.linger = 500
        sock.sndhwm = self.send_hwm
        sock.rcvhwm = self.hwm
        # A full pipe refuses a send (zmq.Again) instead of dropping it silently, and a gone
        # peer raises EHOSTUNREACH: nothing is lost without being counted.
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.MAXMSGSIZE, self.limits.max_frame_size)
        # libzmq's default listen backlog (100) drops SYNs when thousands of peers connect at
        # once (a reconnect storm after a restart); they then retry after 1, 3, 7, 15 s...
        sock.setsockopt(zmq.BACKLOG, self.backlog)
        if self.curve is not None:
            self.curve.apply(sock)
            self._monitor = HandshakeMonitor(sock)
        self._sock = sock
        try:
            for ep in self._bind_to:
                self._bind_one(ep)
        except OSError:
            self._close_sockets()
            raise
        wake = f"inproc://plantd-broker-wake-{id(self):x}"
        self._wake_r = self.context.socket(zmq.PAIR)
        self._wake_r.bind(wake)
        self._wake_w = self.context.socket(zmq.PAIR)
        self._wake_w.connect(wake)
        self._started_at = time.monotonic()

    def start(self) -> Broker:
        """Bind and run the loop in a background thread; returns self."""
        if self._thread is not None or self._sock is not None:
            raise RuntimeError("broker already started")
        self._open()
        self._thread = threading.Thread(target=self._run_loop, name="plantd-broker", daemon=True)
        self._thread.start()
        return self

    def run(self) -> None:
        """Bind and run the loop in the calling thread until :meth:`stop` is called."""
        if self._sock is None:
            self._open()
        self._run_loop()

    def request_stop(self, drain_timeout: float = 5.0, quiet: float = 0.0) -> None:
        """Ask the loop to drain and stop, without waiting (safe from signal handlers).
        ``quiet``: also keep refusing until no client request came for this long (within
        ``drain_timeout``; see :meth:`Dispatcher.drain_step`)."""
        self._drain_timeout = max(0.0, drain_timeout)
        self._drain_quiet = max(0.0, quiet)
        self._stop_requested.set()
        if self._wake_w is not None:
            with contextlib.suppress(zmq.ZMQError):
                self._wake_w.send(b"", _NOBLOCK)

    def stop(self, drain_timeout: float = 5.0, quiet: float = 0.0) -> None:
        """Stop accepting requests (``SHUTTING_DOWN``), let in-flight ones finish for up to
        ``drain_timeout`` seconds (and, with ``quiet``, refuse until clients stopped sending),
        fail the rest, DISCONNECT every worker, close the sockets."""
        if self._sock is None and self._thread is None:
            self._stopped.set()
            return
        self.request_stop(drain_timeout, quiet)
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(drain_timeout + 5.0)
            if t.is_alive():
                log.error("broker thread did not stop within %.1fs", drain_timeout + 5.0)

    def wait_stopped(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)

    def __enter__(self) -> Broker:
        if self._sock is None:
            self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop(drain_timeout=1.0)

    # ------------------------------------------------------------------ loop

    def _run_loop(self) -> None:
        sock = self._sock
        assert sock is not None and self._wake_r is not None
        d = self.dispatcher
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        if self._monitor is not None:
            poller.register(self._monitor.socket, zmq.POLLIN)
        lock = self._lock
        next_tick = time.monotonic() + _TICK_S
        try:
            while True:
                with lock:
                    now = time.monotonic()
                    if now >= self._next_retry:
                        self._retry_held(now)
                    n = self._drain(sock, now)
                    if now >= next_tick:
                        if self._monitor is not None:
                            self._monitor.drain()
                        d.tick(now, expire_workers=self._discard is None)
                        next_tick = now + _TICK_S
                        if self._stop_requested.is_set() and d.drain_step(
                            now, self._drain_timeout, self._drain_quiet
                        ):
                            self._flush()
                            break
                    if d.out:
                        self._flush()
                    if d.audit:
                        self._emit_audit()
                if n == 0:
                    timeout = max(0.0, next_tick - time.monotonic())
                    if self._held:
                        timeout = max(0.0, min(timeout, self._next_retry - time.monotonic()))
                    events = poller.poll(int(timeout * 1000) + 1)
                    for s, _ in events:
                        if s is self._wake_r:
                            with contextlib.suppress(zmq.Again):
                                while True:
                                    self._wake_r.recv(_NOBLOCK)
                            next_tick = 0.0  # run timers now (stop request)
                        elif self._monitor is not None and s is self._monitor.socket:
                            with lock:  # read now, or poll() would spin until the next tick
                                self._monitor.drain()
        except Exception:
            log.exception("broker loop crashed; failing every pending request")
            with lock:
                d.fail_everything("broker failed internally")
                with contextlib.suppress(Exception):
                    self._flush()
            raise
        finally:
            self._close_sockets()
            self._stopped.set()

    def _drain(self, sock: zmq.Socket[bytes], now: float) -> int:
        """Read and dispatch what is ready (at most ``_DRAIN_BATCH`` messages)."""
        d = self.dispatcher
        if self._discard is not None and not self._discard_some(sock, now):
            return 1  # still discarding: let timers and sends run, then continue
        handle = d.handle
        out = d.out
        recv = _recv
        limit = self.limits.max_frames + 1  # + the routing id
        curve = self.curve is not None
        n = 0
        # One zmq.Again per wake-up is cheaper than testing ZMQ_EVENTS before every message.
        try:
            while n < _DRAIN_BATCH:
                # recv_multipart inlined, with the frame bound: Frame.more is a plain attribute
                # (getsockopt(RCVMORE) resolves an enum per call, ~2x slower).
                f = recv(sock, _NOBLOCK, False)
                frames = [f.bytes]
                if f.more:
                    f = recv(sock, _NOBLOCK, False)
                    if curve:
                        self._learn_key(frames[0], f)
                    frames.append(f.bytes)
                    while f.more:
                        if len(frames) > limit:
                            self._discard = _Discard(frames[:_HEAD], len(frames) - 1, 0)
                            n += 1
                            if not self._discard_some(sock, now):
                                d.end_wakeup()
                                return n
                            break
                        f = recv(sock, _NOBLOCK, False)
                        frames.append(f.bytes)
                    else:
                        n += 1
                        handle(frames, now)
                        if len(out) >= _FLUSH_AT:
                            self._flush()
                        continue
                    continue
                n += 1
                handle(frames, now)
        except zmq.Again:
            pass
        d.end_wakeup()
        return n

    def _discard_some(self, sock: zmq.Socket[bytes], now: float) -> bool:
        """Throw away up to ``_DISCARD_CHUNK`` frames of the oversized message; True when
        it is gone (its sender then gets MESSAGE_TOO_LARGE)."""
        st = self._discard
        assert st is not None
        recv = _recv
        for _ in range(_DISCARD_CHUNK):
            f = recv(sock, _NOBLOCK, False)
            st.frames += 1
            if not f.more:
                self._discard = None
                d = self.dispatcher
                d.too_large(st.head[0], st.head, st.frames, -1)
                d.heard_all(time.monotonic())
                return True
        return False

    def _learn_key(self, ident: bytes, frame: Any) -> None:
        """Budget, rights and the caller frame go by the CURVE public key ZAP set as the
        connection's User-Id. Read on every message, not cached by routing id: a peer may
        choose its routing id (ZMQ_ROUTING_ID), and one reusing a departed peer's id must not
        inherit that peer's key. A peer without a User-Id came over inproc (in-process)."""
        try:
            user = frame.get("User-Id")
        except (zmq.ZMQError, KeyError, UnicodeError):
            user = None
        users = self._users
        prev = users.get(ident, _UNSEEN)
        if prev == user:
            return
        if prev is not _UNSEEN:  # another connection took this routing id
            self.dispatcher.peer_changed(ident)
        keys = self.dispatcher.peer_keys
        if len(users) >= _MAX_PEER_KEYS:
            users.clear()
            keys.clear()
        users[ident] = user
        if user:
            keys[ident] = user.encode() if isinstance(user, str) else bytes(user)
        else:
            keys.pop(ident, None)

    def set_rights(self, rights: Rights | None) -> int:
        """Swap the service rights (a registry reload; thread-safe). Workers that may no longer
        serve their name get DISCONNECT; every connection stays. Returns how many lost it."""
        if rights is not None and self.curve is None:
            raise ValueError("service rights need CURVE")
        with self._lock:  # the DISCONNECTs go out with the loop's next pass (<= _TICK_S)
            return self.dispatcher.set_rights(rights)

    def on_audit(self, hook: Callable[[list[dict[str, str]]], None] | None) -> None:
        """Receive denial records in the loop thread (keep it quick: it holds the loop)."""
        with self._lock:
            self._on_audit = hook

    def _emit_audit(self) -> None:
        d = self.dispatcher
        records, d.audit = d.audit, []
        hook = self._on_audit
        if hook is not None:
            try:
                hook(records)
            except Exception:  # auditing is best effort; the dispatcher logged the refusal
                log.exception("audit hook failed")

    def _flush(self) -> None:
        """Write the queued sends, in order (see the module docstring for why they wait)."""
        d = self.dispatcher
        out, d.out = d.out, []
        sock = self._sock
        assert sock is not None
        held = self._held
        for m in out:
            if held and m[0] in held:
                self._hold(m)  # behind what is already held for this peer: keeps the order
                continue
            try:
                _send(sock, m)
            except zmq.Again:
                self._hold(m)
            except zmq.ZMQError:
                d.count("send_unroutable")  # the peer is gone (EHOSTUNREACH)

    def _hold(self, m: Outgoing) -> None:
        to = m[0]
        q = self._held.get(to)
        if q is None:
            q = self._held[to] = deque()
            when = time.monotonic() + _RETRY_FIRST_S
            self._retry[to] = (when, _RETRY_FIRST_S)
            self._next_retry = min(self._next_retry, when)
        q.append(m)
        n = _size(m)
        d = self.dispatcher
        d.held[to] = d.held.get(to, 0) + n
        d.held_total += n
        d.count("send_held")

    def _retry_held(self, now: float) -> None:
        """Send what is held for each peer that is due, in order, until its pipe is full
        again; a peer still full backs off (doubling, up to ``_RETRY_MAX_S``)."""
        sock = self._sock
        assert sock is not None
        d = self.dispatcher
        retry = self._retry
        for to, q in list(self._held.items()):
            when, backoff = retry[to]
            if when > now:
                continue
            while q:
                try:
                    _send(sock, q[0])
                except zmq.Again:
                    break
                except zmq.ZMQError:
                    d.count("send_unroutable", len(q))  # the peer is gone
                    q.clear()
                    break
                n = _size(q.popleft())
                d.held[to] -= n
                d.held_total -= n
            if q:
                backoff = min(backoff * 2, _RETRY_MAX_S)
                retry[to] = (now + backoff, backoff)
            else:
                del self._held[to], retry[to]
                d.held_total -= d.held.pop(to, 0)
        self._next_retry = min((w for w, _ in retry.values()), default=float("inf"))

    def _close_sockets(self) -> None:
        if self._monitor is not None:
            self._monitor.close()
            self._monitor = None
        for s in (self._sock, self._wake_r, self._wake_w):
            if s is not None:
                s.close()
        self._sock = self._wake_r = self._wake_w = None
        if self.curve is not None:
            self.curve.release()
        if self._own_context:
            self.context.term()

    # ------------------------------------------------------------------ introspection

    @property
    def uptime(self) -> float:
        return time.monotonic() - self._started_at

    def stats(self) -> BrokerStats:
        """A consistent copy of every counter (thread-safe; costs the loop one lock hand-off)."""
        with self._lock:
            handshakes = self._monitor.counts() if self._monitor is not None else {}
            s = self.dispatcher.stats(handshakes)
        return dataclasses.replace(s, uptime_s=self.uptime)

    def snapshot(self) -> BrokerSnapshot:
        """Services and workers right now (thread-safe)."""
        with self._lock:
            d = self.dispatcher
            d.now = time.monotonic()
            return BrokerSnapshot(
                endpoints=tuple(self.endpoints),
                uptime_s=self.uptime,
                draining=d.draining,
                services=tuple(d.service_infos()),
                workers=tuple(d.worker_infos()),
            )
