"""The MDP broker: one ROUTER for clients and workers, a synchronous poll loop in its own thread.

Why synchronous: a plain pyzmq loop forwards ~3x more than the same loop on zmq.asyncio here
(reference perf-anchors §2.2). Each wake-up drains every ready message (NOBLOCK) before timers
run. The hot path does no logging and keeps per-message allocations to the outgoing frame list.

Sends are queued during a wake-up and written together at its end (in order; at most
``_FLUSH_AT`` wait). Why: every message libzmq's I/O thread finds on an idle pipe costs a
wake-up of that thread and a TCP write of its own, which cost more than the Python work per
message; written back to back they share wake-ups and TCP writes, here and in every peer that
reads them. Measured: ~20% less CPU per round trip over broker, worker and client together.

Dispatch: per-service FIFO of requests and a deque of workers with spare credit (LRU). A
standard worker has credit 1 (one request at a time, as RFC 7/18); our own workers may announce
``credit=N`` in READY and get up to N requests at once. Such a worker keeps the requests of one
wake-up (up to its credit) and goes to the back of the list after it, so a burst reaches it as
one batch rather than spread one by one over every worker. See docs/protocol.md.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Final

import zmq

from plantd.common.contract import DEFAULT_BROKER_BIND, HEARTBEAT_LIVENESS, HEARTBEAT_MS
from plantd.common.curve import CurveServer, HandshakeMonitor
from plantd.mdp import codec, mmi
from plantd.mdp._wire import recv_multipart, send_multipart, send_routed
from plantd.mdp.codec import (
    MMI_PREFIX,
    Dialect,
    Disconnect,
    Heartbeat,
    Ready,
    Request,
    WorkerReply,
    client_reply_prefix,
    decode_inbound,
    encode_broker_disconnect,
    encode_broker_heartbeat,
    worker_request_prefix,
)
from plantd.mdp.errors import ErrorCode, ProtocolError, error_body
from plantd.mdp.stats import (
    LATENCY_BUCKETS,
    BrokerSnapshot,
    BrokerStats,
    HistogramSnapshot,
    LatencyHistogram,
    ServiceInfo,
    WorkerInfo,
)

log = logging.getLogger(__name__)

_NOBLOCK: Final = int(zmq.NOBLOCK)
_DRAIN_BATCH: Final = 2048  # messages per wake-up before timers get a look
_FLUSH_AT: Final = 256  # queued sends written out even in the middle of a wake-up
_TICK_S: Final = 0.05  # queue deadlines are checked this often
_LOG_EVERY_S: Final = 10.0  # rate limit for malformed-input warnings
_N_DIALECTS: Final = len(Dialect)
_D02: Final = Dialect.MDP02
_MDPW02: Final = codec.MDPW02
_MDPC02: Final = codec.MDPC02
_W_FINAL: Final = codec.W02_FINAL
_C_REQUEST: Final = codec.C02_REQUEST
# ``_Req.pbuf`` of a request already failed mid-stream: its remaining parts are swallowed, and
# its FINAL only returns the worker's credit.
_FAILED: Final[list[bytes]] = []

# Reply prefixes indexed [dialect][delimited]; MDP/0.1 has no PARTIAL (buffered instead).
_FINAL_PREFIX: Final = tuple(
    (client_reply_prefix(d, True, False), client_reply_prefix(d, True, True)) for d in Dialect
)
_PARTIAL_PREFIX: Final = tuple(
    (
        (client_reply_prefix(d, False, False), client_reply_prefix(d, False, True))
        if d is not Dialect.MDP01
        else ((), ())
    )
    for d in Dialect
)


# A queued send: send_routed's arguments, or a whole message.
_Outgoing = tuple[bytes, tuple[bytes, ...], bytes, list[bytes], bool] | list[bytes]


class _Req:
    """One client request, from arrival until its FINAL (or error) is sent."""

    __slots__ = (
        "body",
        "client",
        "deadline",
        "dialect",
        "fp",
        "pbuf",
        "pp",
        "psize",
        "service",
        "t0",
    )

    def __init__(
        self, client: bytes, service: bytes, body: list[bytes], dialect: Dialect, delim: bool
    ) -> None:
        self.client = client
        self.service = service
        self.body = body
        self.dialect = dialect
        self.fp = _FINAL_PREFIX[dialect][delim]
        self.pp = _PARTIAL_PREFIX[dialect][delim]
        self.t0 = 0.0
        self.deadline = 0.0
        self.pbuf: list[bytes] | None = None  # MDP/0.1 clients: PARTIAL bodies kept for FINAL
        # self.psize (bytes in pbuf) is set with pbuf, off the per-request path.
        self.psize: int


class _Worker:
    __slots__ = (
        "credit",
        "delimited",
        "dialect",
        "expiry",
        "hb",
        "ident",
        "in_ready",
        "inflight",
        "load",
        "prefix",
        "service",
    )

    def __init__(
        self, ident: bytes, service: _Service, dialect: Dialect, delimited: bool, credit: int
    ) -> None:
        self.ident = ident
        self.service = service
        self.dialect = dialect
        self.delimited = delimited
        self.credit = credit
        self.load = 0
        self.in_ready = False
        self.expiry = 0.0
        self.prefix = worker_request_prefix(dialect, delimited)
        self.hb = [ident, *encode_broker_heartbeat(dialect, delimited)]
        self.inflight: dict[bytes, list[_Req]] = {}


class _Service:
    __slots__ = (
        "errors",
        "had_worker",
        "name",
        "partials",
        "queue",
        "ready",
        "replies",
        "requests",
        "sticky",
        "workers",
    )

    def __init__(self, name: bytes) -> None:
        self.name = name
        self.queue: deque[_Req] = deque()
        self.ready: deque[_Worker] = deque()
        self.workers: dict[bytes, _Worker] = {}
        self.had_worker = False
        self.sticky = False  # its front worker keeps this wake-up's requests
        self.requests = [0] * _N_DIALECTS
        self.replies = [0] * _N_DIALECTS
        self.partials = [0] * _N_DIALECTS
        # Error replies by the client's dialect, then code (off the hot path: errors only).
        self.errors: list[dict[str, int]] = [{} for _ in range(_N_DIALECTS)]


class Broker:
    """An MDP broker (MDP/0.2 native; MDP/0.1 and legacy plantd peers answered in kind).

    Use :meth:`start` to run it in a background thread (or :meth:`run` in the current one) and
    :meth:`stop` to drain and shut down. :meth:`stats` and :meth:`snapshot` are thread-safe.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str] = DEFAULT_BROKER_BIND,
        *,
        heartbeat_ms: int = HEARTBEAT_MS,
        liveness: int = HEARTBEAT_LIVENESS,
        request_timeout: float = 5.0,
        max_queue: int = 10_000,
        max_services: int = 10_000,
        max_workers: int = 50_000,
        max_frame_size: int = 16 * 1024 * 1024,
        max_message_size: int = 64 * 1024 * 1024,
        hwm: int = 100_000,
        backlog: int = 4096,
        curve: CurveServer | None = None,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
    ) -> None:
        if heartbeat_ms <= 0 or liveness <= 0:
            raise ValueError("heartbeat_ms and liveness must be positive")
        if request_timeout <= 0:
            raise ValueError("request_timeout must be positive (seconds)")
        if max_frame_size <= 0 or max_message_size < max_frame_size:
            raise ValueError("need 0 < max_frame_size <= max_message_size")
        self._bind_to = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not self._bind_to:
            raise ValueError("Broker needs at least one endpoint to bind")
        self.heartbeat_s = heartbeat_ms / 1000.0
        self.liveness = liveness
        self.expiry_s = self.heartbeat_s * liveness
        self.request_timeout = request_timeout
        self.max_queue = max_queue
        self.max_services = max_services
        self.max_workers = max_workers
        self.max_frame_size = max_frame_size
        self.max_message_size = max_message_size
        # Total size is only summed when frames * max_frame could exceed the message limit.
        self._size_check_frames = max_message_size // max_frame_size
        self.hwm = hwm
        self.backlog = backlog
        self.curve = curve
        self._own_context = context is None
        self.context: zmq.Context[zmq.Socket[bytes]] = context or zmq.Context()
        self.endpoints: list[str] = []

        self._services: dict[bytes, _Service] = {}
        self._sticky: list[_Service] = []
        # Sends of this wake-up, in order: (to, head, addr, body, delimit) or whole frame lists.
        self._out: list[_Outgoing] = []
        self._workers: dict[bytes, _Worker] = {}
        self._malformed: dict[str, int] = {}
        self._malformed_logged: dict[str, float] = {}
        # Errors of services not in the table, by dialect then code.
        self._untracked_errors: list[dict[str, int]] = [{} for _ in range(_N_DIALECTS)]
        self._hist = LatencyHistogram()
        self._lock = threading.Lock()
        self._started_at = time.monotonic()
        self._sock: zmq.Socket[bytes] | None = None
        self._wake_r: zmq.Socket[bytes] | None = None
        self._wake_w: zmq.Socket[bytes] | None = None
        self._monitor: HandshakeMonitor | None = None
        self._thread: threading.Thread | None = None
        self._stop_requested = threading.Event()
        self._stopped = threading.Event()
        self._drain_timeout = 0.0
        self._draining = False
        self._drain_deadline = 0.0
        self._now = time.monotonic()

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
        sock.sndhwm = self.hwm
        sock.rcvhwm = self.hwm
        sock.setsockopt(zmq.MAXMSGSIZE, self.max_frame_size)
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

    def request_stop(self, drain_timeout: float = 5.0) -> None:
        """Ask the loop to drain and stop, without waiting (safe from signal handlers)."""
        self._drain_timeout = max(0.0, drain_timeout)
        self._stop_requested.set()
        if self._wake_w is not None:
            with contextlib.suppress(zmq.ZMQError):
                self._wake_w.send(b"", _NOBLOCK)

    def stop(self, drain_timeout: float = 5.0) -> None:
        """Stop accepting requests (``SHUTTING_DOWN``), let in-flight ones finish for up to
        ``drain_timeout`` seconds, fail the rest, DISCONNECT every worker, close the sockets."""
        if self._sock is None and self._thread is None:
            self._stopped.set()
            return
        self.request_stop(drain_timeout)
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
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        if self._monitor is not None:
            poller.register(self._monitor.socket, zmq.POLLIN)
        lock = self._lock
        now = time.monotonic()
        next_tick = now + _TICK_S
        next_hb = now + self.heartbeat_s
        try:
            while True:
                with lock:
                    self._now = now = time.monotonic()
                    n = self._drain(sock)
                    if now >= next_tick:
                        if self._monitor is not None:
                            self._monitor.drain()
                        self._expire_queues(now)
                        if now >= next_hb:
                            self._heartbeat(now)
                            next_hb = now + self.heartbeat_s
                        next_tick = now + _TICK_S
                        if self._stop_requested.is_set() and self._drain_step(now):
                            self._flush()
                            break
                    if self._out:
                        self._flush()
                if n == 0:
                    timeout = max(0.0, next_tick - time.monotonic())
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
                self._fail_everything(ErrorCode.SHUTTING_DOWN, "broker failed internally")
                with contextlib.suppress(Exception):
                    self._flush()
            raise
        finally:
            self._close_sockets()
            self._stopped.set()

    def _drain(self, sock: zmq.Socket[bytes]) -> int:
        # One zmq.Again per wake-up is cheaper than testing ZMQ_EVENTS before every message.
        recv = recv_multipart
        handle = self._handle
        out = self._out
        n = 0
        try:
            while n < _DRAIN_BATCH:
                frames = recv(sock, _NOBLOCK)
                n += 1
                handle(frames)
                if len(out) >= _FLUSH_AT:
                    self._flush()
                    out = self._out
        except zmq.Again:
            pass
        if self._sticky:
            for svc in self._sticky:
                svc.sticky = False
                if len(svc.ready) > 1:
                    svc.ready.rotate(-1)
            self._sticky.clear()
        return n

    def _flush(self) -> None:
        """Write the queued sends, in order (see the module docstring for why they wait)."""
        out, self._out = self._out, []
        sock = self._sock
        assert sock is not None
        for m in out:
            try:
                if isinstance(m, list):
                    send_multipart(sock, m, _NOBLOCK)
                else:
                    to, head, addr, body, delimit = m
                    send_routed(sock, to, head, addr, body, _NOBLOCK, delimit)
            except zmq.Again:
                self._count("send_dropped")

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

    # ------------------------------------------------------------------ message handling

    def _handle(self, frames: list[bytes]) -> None:
        if len(frames) < 2:
            self._drop("truncated", "message without payload")
            return
        ident = frames[0]
        if len(frames) > self._size_check_frames:
            size = 0
            for f in frames:
                size += len(f)
            if size > self.max_message_size:
                self._too_large(ident, frames, size)
                return
        # Fast path for the two hottest messages, MDP/0.2 worker FINAL and client REQUEST, in
        # exactly the layout codec.decode_inbound accepts; everything else goes through it.
        n = len(frames)
        if n >= 5:
            h = frames[1]
            if h == _MDPW02:
                if frames[2] == _W_FINAL and n >= 5 and frames[3] and not frames[4]:
                    self._on_worker_reply(ident, frames[3], frames[5:], True, None)
                    return
            elif h == _MDPC02 and frames[2] == _C_REQUEST and frames[3]:
                self._on_request(ident, frames[3], frames[4:], _D02, False)
                return
        try:
            msg = decode_inbound(frames[1:])
        except ProtocolError as exc:
            self._drop(exc.reason, exc.detail)
            return
        cls = msg.__class__
        if cls is WorkerReply:
            r: WorkerReply = msg  # type: ignore[assignment]
            self._on_worker_reply(ident, r.client, r.body, r.final, r)
        elif cls is Request:
            q: Request = msg  # type: ignore[assignment]
            self._on_request(ident, q.service, q.body, q.dialect, q.delimited)
        elif cls is Heartbeat:
            w = self._workers.get(ident)
            if w is None:
                # Unknown (e.g. we restarted): tell it to re-register.
                self._send(ident, encode_broker_disconnect(msg.dialect, msg.delimited))
            else:
                w.expiry = self._now + self.expiry_s
        elif cls is Ready:
            self._on_ready(ident, msg)  # type: ignore[arg-type]
        elif cls is Disconnect:
            w = self._workers.get(ident)
            if w is not None:
                self._remove_worker(w, "worker disconnected", send_disconnect=False)

    def _send(self, ident: bytes, frames: list[bytes]) -> None:
        self._out.append([ident, *frames])

    def _on_request(
        self, ident: bytes, name: bytes, body: list[bytes], dialect: Dialect, delimited: bool
    ) -> None:
        req = _Req(ident, name, body, dialect, delimited)
        req.t0 = now = self._now
        if self._draining:
            self._reply_error(req, None, ErrorCode.SHUTTING_DOWN, "broker is shutting down")
            return
        if name.startswith(MMI_PREFIX):
            self._reply(req, mmi.answer(self, name, body))
            return
        svc = self._services.get(name)
        if svc is None:
            if len(self._services) >= self.max_services:
                self._reply_error(
                    req, None, ErrorCode.QUEUE_FULL, "broker service table is full; retry later"
                )
                return
            svc = self._services[name] = _Service(name)
        svc.requests[dialect] += 1
        ready = svc.ready
        if ready and not svc.queue:
            w = ready[0]
            self._assign(w, req)
            if w.load >= w.credit:
                ready.popleft()
                w.in_ready = False
            elif len(ready) > 1 and not svc.sticky:
                svc.sticky = True  # rotated once, at the end of this wake-up
                self._sticky.append(svc)
            return
        if len(svc.queue) >= self.max_queue:
            self._reply_error(
                req, svc, ErrorCode.QUEUE_FULL, f"queue of {self.max_queue} requests is full"
            )
            return
        req.deadline = now + self.request_timeout
        svc.queue.append(req)
        if ready:
            self._dispatch(svc)

    def _assign(self, w: _Worker, req: _Req) -> None:
        # A ROUTER without ROUTER_MANDATORY never refuses a send (a full peer drops it), so the
        # request is the worker's from here on.
        self._out.append((w.ident, w.prefix, req.client, req.body, True))
        w.load += 1
        lst = w.inflight.get(req.client)
        if lst is None:
            w.inflight[req.client] = [req]
        else:
            lst.append(req)

    def _dispatch(self, svc: _Service) -> None:
        q = svc.queue
        ready = svc.ready
        while q and ready:
            w = ready.popleft()
            self._assign(w, q.popleft())
            if w.load < w.credit:
                ready.append(w)
            else:
                w.in_ready = False

    def _on_worker_reply(
        self, ident: bytes, client: bytes, body: list[bytes], final: bool, msg: WorkerReply | None
    ) -> None:
        w = self._workers.get(ident)
        if w is None:
            self._count("unknown_worker")
            d, delim = (msg.dialect, msg.delimited) if msg is not None else (Dialect.MDP02, False)
            self._send(ident, encode_broker_disconnect(d, delim))
            return
        now = self._now
        w.expiry = now + self.expiry_s
        lst = w.inflight.get(client)
        if lst is None:
            self._count("unexpected_reply")
            return
        svc = w.service
        if not final:
            req = lst[0]
            pbuf = req.pbuf
            if pbuf is _FAILED:
                return
            svc.partials[req.dialect] += 1
            if req.pp:
                self._send_to(client, req.pp, req.service, body)
                return
            # MDP/0.1 client: keep the parts for the one REPLY, bounded as it grows.
            if pbuf is None:
                pbuf = req.pbuf = []
                req.psize = 0
            pbuf.extend(body)
            req.psize += sum(map(len, body))
            if req.psize > self.max_message_size:
                self._fail_stream(req, svc, "streamed reply exceeds the size limit")
            return
        req = lst.pop(0)
        if not lst:
            del w.inflight[client]
        if req.pbuf is not None:
            if req.pbuf is _FAILED:
                self._release(w, svc)
                return
            size = req.psize + sum(map(len, body))
            body = req.pbuf + body
            if size > self.max_message_size:
                self._release(w, svc)
                self._reply_error(
                    req, svc, ErrorCode.MESSAGE_TOO_LARGE, "streamed reply exceeds the size limit"
                )
                return
        self._send_to(client, req.fp, req.service, body)
        svc.replies[req.dialect] += 1
        self._hist.observe(now - req.t0)
        self._release(w, svc)

    def _fail_stream(self, req: _Req, svc: _Service, why: str) -> None:
        """Fail a request whose worker is still streaming: the client gets the error now; the
        request stays in flight (as failed) until the worker's FINAL returns its credit."""
        req.pbuf = _FAILED
        self._reply_error(req, svc, ErrorCode.MESSAGE_TOO_LARGE, why)

    def _release(self, w: _Worker, svc: _Service) -> None:
        w.load -= 1
        if not w.in_ready:
            w.in_ready = True
            svc.ready.append(w)
        if svc.queue:
            self._dispatch(svc)

    def _send_to(
        self, client: bytes, head: tuple[bytes, ...], service: bytes, body: list[bytes]
    ) -> None:
        """``[client, *head, service, *body]``, the reply layout (queued, not built)."""
        self._out.append((client, head, service, body, False))

    def _send_raw(self, frames: list[bytes]) -> None:
        self._out.append(frames)

    def _on_ready(self, ident: bytes, msg: Ready) -> None:
        old = self._workers.get(ident)
        if old is not None:
            # RFC 7/18: a valid but unexpected command gets DISCONNECT.
            self._remove_worker(old, "worker sent READY twice", send_disconnect=True)
            return
        disc = encode_broker_disconnect(msg.dialect, msg.delimited)
        if msg.service.startswith(MMI_PREFIX):
            self._count("reserved_service")
            self._send(ident, disc)
            return
        if len(self._workers) >= self.max_workers:
            self._count("too_many_workers")
            self._send(ident, disc)
            return
        svc = self._services.get(msg.service)
        if svc is None:
            if len(self._services) >= self.max_services:
                self._count("too_many_services")
                self._send(ident, disc)
                return
            svc = self._services[msg.service] = _Service(msg.service)
        w = _Worker(ident, svc, msg.dialect, msg.delimited, msg.credit)
        w.expiry = self._now + self.expiry_s
        self._workers[ident] = w
        svc.workers[ident] = w
        svc.had_worker = True
        w.in_ready = True
        svc.ready.append(w)
        # Answer READY at once, so the worker knows it is registered without waiting a whole
        # heartbeat interval (its readiness probe and `plantd up` depend on that).
        self._send_raw(w.hb)
        if svc.queue:
            self._dispatch(svc)

    def _remove_worker(self, w: _Worker, why: str, *, send_disconnect: bool) -> None:
        self._workers.pop(w.ident, None)
        svc = w.service
        svc.workers.pop(w.ident, None)
        if w.in_ready:
            with contextlib.suppress(ValueError):
                svc.ready.remove(w)
            w.in_ready = False
        if send_disconnect:
            self._send(w.ident, encode_broker_disconnect(w.dialect, w.delimited))
        for reqs in w.inflight.values():
            for req in reqs:
                if req.pbuf is not _FAILED:  # those clients have had their error
                    self._reply_error(req, svc, ErrorCode.WORKER_LOST, why)
        w.inflight.clear()
        w.load = 0

    # ------------------------------------------------------------------ replies and errors

    def _reply(self, req: _Req, body: list[bytes]) -> None:
        self._send_to(req.client, req.fp, req.service, body)

    def _reply_error(self, req: _Req, svc: _Service | None, code: str, message: str) -> None:
        if svc is None:
            # Services we do not track (mmi, table full, shutdown) share one entry.
            svc = self._services.get(req.service)
        errors = (svc.errors if svc is not None else self._untracked_errors)[req.dialect]
        errors[code] = errors.get(code, 0) + 1
        self._send_to(req.client, req.fp, req.service, error_body(code, message))

    def _too_large(self, ident: bytes, frames: list[bytes], size: int) -> None:
        self._count("message_too_large")
        try:
            msg = decode_inbound(frames[1:])
        except ProtocolError:
            return
        if isinstance(msg, Request):
            req = _Req(ident, msg.service, [], msg.dialect, msg.delimited)
            self._reply_error(
                req,
                self._services.get(msg.service),
                ErrorCode.MESSAGE_TOO_LARGE,
                f"request of {size} bytes exceeds the broker limit of {self.max_message_size}",
            )
        elif isinstance(msg, WorkerReply):
            w = self._workers.get(ident)
            lst = w.inflight.get(msg.client) if w is not None else None
            if w is None or not lst:
                return
            w.expiry = self._now + self.expiry_s
            req = lst[0]
            if req.pbuf is not _FAILED:
                what = "reply" if msg.final else "streamed reply part"
                self._fail_stream(
                    req,
                    w.service,
                    f"{what} of {size} bytes exceeds the broker limit of {self.max_message_size}",
                )
            if msg.final:
                lst.pop(0)
                if not lst:
                    del w.inflight[msg.client]
                self._release(w, w.service)

    def _count(self, reason: str) -> None:
        self._malformed[reason] = self._malformed.get(reason, 0) + 1

    def _drop(self, reason: str, detail: str) -> None:
        n = self._malformed.get(reason, 0) + 1
        self._malformed[reason] = n
        last = self._malformed_logged.get(reason, 0.0)
        if self._now - last >= _LOG_EVERY_S:
            self._malformed_logged[reason] = self._now
            log.warning("dropped malformed MDP message (%s): %s [%d so far]", reason, detail, n)

    # ------------------------------------------------------------------ timers

    def _expire_queues(self, now: float) -> None:
        for name, svc in list(self._services.items()):
            q = svc.queue
            while q and q[0].deadline <= now:
                req = q.popleft()
                if svc.workers:
                    self._reply_error(
                        req,
                        svc,
                        ErrorCode.DEADLINE_EXCEEDED,
                        f"request waited {self.request_timeout:g}s in the queue; all workers busy",
                    )
                else:
                    self._reply_error(
                        req,
                        svc,
                        ErrorCode.SERVICE_UNAVAILABLE,
                        f"no worker for {name.decode(errors='replace')!r} within "
                        f"{self.request_timeout:g}s",
                    )
            if not q and not svc.workers and not svc.had_worker:
                # Names only clients mentioned are forgotten, so junk names cannot pile up.
                self._fold_errors(svc)
                del self._services[name]

    def _fold_errors(self, svc: _Service) -> None:
        for into, errors in zip(self._untracked_errors, svc.errors, strict=True):
            for code, n in errors.items():
                into[code] = into.get(code, 0) + n

    def _heartbeat(self, now: float) -> None:
        expired = [w for w in self._workers.values() if w.expiry < now]
        for w in expired:
            self._remove_worker(w, "worker expired (no heartbeat)", send_disconnect=True)
        # Every worker, busy or idle, so a worker running a long handler keeps its broker.
        self._out += [w.hb for w in self._workers.values()]

    def _drain_step(self, now: float) -> bool:
        """One step of graceful shutdown; True when the loop may exit."""
        if not self._draining:
            self._draining = True
            self._drain_deadline = now + self._drain_timeout
            for svc in self._services.values():
                if not svc.workers:
                    while svc.queue:
                        self._reply_error(
                            svc.queue.popleft(),
                            svc,
                            ErrorCode.SHUTTING_DOWN,
                            "broker is shutting down",
                        )
        pending = any(w.load for w in self._workers.values()) or any(
            s.queue for s in self._services.values()
        )
        if pending and now < self._drain_deadline:
            return False
        self._fail_everything(ErrorCode.SHUTTING_DOWN, "broker shut down before the reply")
        return True

    def _fail_everything(self, code: str, why: str) -> None:
        for svc in self._services.values():
            while svc.queue:
                self._reply_error(svc.queue.popleft(), svc, code, why)
        for w in list(self._workers.values()):
            for reqs in w.inflight.values():
                for req in reqs:
                    if req.pbuf is not _FAILED:
                        self._reply_error(req, w.service, code, why)
            w.inflight.clear()
            with contextlib.suppress(Exception):
                self._send(w.ident, encode_broker_disconnect(w.dialect, w.delimited))
        self._workers.clear()
        for svc in self._services.values():
            svc.workers.clear()
            svc.ready.clear()

    # ------------------------------------------------------------------ introspection

    @property
    def uptime(self) -> float:
        return time.monotonic() - self._started_at

    def stats(self) -> BrokerStats:
        """A consistent copy of every counter (thread-safe; costs the loop one lock hand-off)."""
        with self._lock:
            requests: dict[tuple[str, str], int] = {}
            replies: dict[tuple[str, str], int] = {}
            partials: dict[tuple[str, str], int] = {}
            errors: dict[tuple[str, str], int] = {}
            dialect_errors: dict[tuple[str, str, str], int] = {}
            depth: dict[str, int] = {}
            workers: dict[str, int] = {}
            busy: dict[str, int] = {}
            for name_b, svc in self._services.items():
                name = name_b.decode(errors="replace")
                for d in Dialect:
                    if svc.requests[d]:
                        requests[name, d.label] = svc.requests[d]
                    if svc.replies[d]:
                        replies[name, d.label] = svc.replies[d]
                    if svc.partials[d]:
                        partials[name, d.label] = svc.partials[d]
                _add_errors(errors, dialect_errors, name, svc.errors)
                depth[name] = len(svc.queue)
                workers[name] = len(svc.workers)
                busy[name] = sum(1 for w in svc.workers.values() if w.load)
            _add_errors(errors, dialect_errors, "", self._untracked_errors)
            hist = HistogramSnapshot(
                LATENCY_BUCKETS, tuple(self._hist.cumulative()), self._hist.sum, self._hist.count
            )
            handshakes = self._monitor.counts() if self._monitor is not None else {}
            return BrokerStats(
                uptime_s=self.uptime,
                requests=requests,
                replies=replies,
                partials=partials,
                errors=errors,
                malformed={k: v for k, v in self._malformed.items() if v},
                queue_depth=depth,
                workers=workers,
                busy_workers=busy,
                handshakes=handshakes,
                latency=hist,
                dialect_errors=dialect_errors,
            )

    def snapshot(self) -> BrokerSnapshot:
        """Services and workers right now (thread-safe)."""
        with self._lock:
            now = time.monotonic()
            services = tuple(
                ServiceInfo(
                    name=n.decode(errors="replace"),
                    workers=len(s.workers),
                    idle=sum(1 for w in s.workers.values() if not w.load),
                    queued=len(s.queue),
                    in_flight=sum(w.load for w in s.workers.values()),
                )
                for n, s in sorted(self._services.items())
            )
            workers = tuple(
                WorkerInfo(
                    identity=w.ident.hex(),
                    service=w.service.name.decode(errors="replace"),
                    dialect=w.dialect.label,
                    credit=w.credit,
                    in_flight=w.load,
                    expires_in_s=max(0.0, w.expiry - now),
                )
                for w in self._workers.values()
            )
            return BrokerSnapshot(
                endpoints=tuple(self.endpoints),
                uptime_s=self.uptime,
                draining=self._draining,
                services=services,
                workers=workers,
            )

    # Read by plantd.mdp.mmi from inside the loop (no lock needed there).
    def _mmi_services(self) -> dict[bytes, _Service]:
        return self._services

    def _mmi_workers(self) -> dict[bytes, _Worker]:
        return self._workers


def _add_errors(
    by_code: dict[tuple[str, str], int],
    by_dialect: dict[tuple[str, str, str], int],
    service: str,
    errors: list[dict[str, int]],
) -> None:
    for d, per_code in zip(Dialect, errors, strict=True):
        for code, n in per_code.items():
            by_code[service, code] = by_code.get((service, code), 0) + n
            by_dialect[service, d.label, code] = n
