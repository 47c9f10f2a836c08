"""The broker's heart without sockets: frames in, frames to send out. No I/O, no clock.

:class:`Dispatcher` holds services, workers, credits, queues, deadlines, budgets and fairness.
The caller (``plantd.mdp.broker.Broker``, the socket shell; or a unit test) passes each
received message to :meth:`Dispatcher.handle` with the time, calls :meth:`Dispatcher.tick`
every ~50 ms, and writes :attr:`Dispatcher.out` to the ROUTER in order, then empties it.

Dispatch: per service, a least-recently-used deque of workers with spare credit and, per
client, a FIFO of queued requests; the queue is served by deficit round-robin over clients, by
bytes, so one client with thousands of queued requests delays another by about one quantum
(2 KiB) per client ahead of it (issue 7 item 5: FIFO let 1,500 clients starve echo ~27 s).
A standard worker has credit 1; ours may announce ``credit=N`` (at most ``max_credit``). Such
a worker keeps the requests of one wake-up and goes to the back of the list after it
(``end_wakeup``), so a burst reaches it as one batch. See docs/protocol.md.

Budgets (docs/protocol.md "Limits and budgets"): frames and bytes per message, requests and
bytes per client (routing id, or its CURVE key), queued requests and bytes per service and in
total, names per worker peer, services and workers in the table. Every refusal is an error
reply with a documented code, or DISCONNECT to a worker, and is counted.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Iterable
from typing import Final

from plantd.common.registry import Rights
from plantd.mdp import caller, codec, mmi
from plantd.mdp.budgets import Limits
from plantd.mdp.codec import (
    FAST_FINAL,
    MMI_PREFIX,
    Dialect,
    Disconnect,
    Heartbeat,
    Ready,
    Request,
    WorkerReply,
    broker_fast_inbound,
    client_reply_prefix,
    decode_inbound,
    encode_broker_disconnect,
    encode_broker_heartbeat,
    error_reply_body,
    worker_request_prefix,
)
from plantd.mdp.errors import ERROR_MARKER, ErrorCode, ProtocolError
from plantd.mdp.stats import (
    LATENCY_BUCKETS,
    BrokerStats,
    HistogramSnapshot,
    LatencyHistogram,
    ServiceInfo,
    WorkerInfo,
    top_names,
)

log = logging.getLogger("plantd.mdp.broker")

_LOG_EVERY_S: Final = 10.0  # rate limit for malformed-input warnings
_N_DIALECTS: Final = len(Dialect)
_D02: Final = Dialect.MDP02
_DLEG: Final = Dialect.LEGACY
OTHER: Final = "other"  # the metrics label shared by services outside the top N

# Deficit round-robin (see Dispatcher._pop_next): bytes of credit per visit, and what every
# request costs on top of its bytes (a message's fixed cost through broker and worker is about
# that of copying 1 KiB here), so small requests alternate about one per visit.
_QUANTUM: Final = 2048
_COST: Final = 1024

# Audit events for denied READYs: a token bucket, so a peer sending thousands of forbidden
# READYs a second costs the event bus at most this many (the rest are counted).
_AUDIT_RATE: Final = 20.0  # per second
_AUDIT_BURST: Final = 50
_MAX_CALLERS: Final = 65_536  # cached caller identity frames, cleared when full
_CALLER: Final = caller.MARKER

# ``_Req.parts`` of a request already failed mid-stream: its remaining parts are swallowed, and
# its FINAL only returns the worker's credit.
_FAILED: Final[list[bytes]] = []
_NOBODY: Final[list[bytes]] = []

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

# A send: ``send_routed`` arguments (to, head, addr, body, delimit), or a whole message. The
# shell writes them without building a frame list per message (measured ~20% CPU per round
# trip, see plantd.mdp.broker).
Outgoing = tuple[bytes, tuple[bytes, ...], bytes, list[bytes], bool] | list[bytes]


class _Req:
    """One client request, from arrival until its FINAL (or error) is sent."""

    __slots__ = (
        "body",
        "client",
        "deadline",
        "dialect",
        "final_prefix",
        "key",
        "owner",
        "partial_prefix",
        "parts",
        "parts_size",
        "service",
        "size",
        "t0",
    )

    def __init__(
        self, client: bytes, service: bytes, body: list[bytes], dialect: Dialect, delim: bool
    ) -> None:
        self.client = client
        self.service = service
        self.body = body
        self.dialect = dialect
        self.final_prefix = _FINAL_PREFIX[dialect][delim]
        self.partial_prefix = _PARTIAL_PREFIX[dialect][delim]
        self.t0 = 0.0
        self.deadline = 0.0
        self.key = client  # the budget and fairness key (routing id, or CURVE key)
        self.size = 0
        self.owner: _Client | None = None  # whose budget it counts in, until answered
        self.parts: list[bytes] | None = None  # MDP/0.1 clients: PARTIAL bodies kept for FINAL
        # self.parts_size (bytes in parts) is set with parts, off the per-request path.
        self.parts_size: int


class _Client:
    """What one client has outstanding (entries exist only while it has something)."""

    __slots__ = ("nbytes", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.nbytes = 0


class _Worker:
    __slots__ = (
        "caller",
        "credit",
        "delimited",
        "dialect",
        "expiry",
        "hb",
        "ident",
        "in_ready",
        "inflight",
        "load",
        "peer",
        "prefix",
        "service",
    )

    def __init__(
        self,
        ident: bytes,
        peer: bytes,
        service: _Service,
        dialect: Dialect,
        delimited: bool,
        credit: int,
        wants_caller: bool = False,
    ) -> None:
        self.ident = ident
        self.caller = wants_caller
        self.peer = peer
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
        "deficit",
        "errors",
        "had_worker",
        "name",
        "partials",
        "qbytes",
        "queued",
        "queues",
        "ready",
        "registrants",
        "replies",
        "requests",
        "rr",
        "sticky",
        "workers",
    )

    def __init__(self, name: bytes) -> None:
        self.name = name
        self.queues: dict[bytes, deque[_Req]] = {}  # per client key, FIFO
        self.rr: deque[bytes] = deque()  # client keys with queued requests, round-robin order
        self.deficit: dict[bytes, int] = {}  # per client key in rr: bytes it may send now
        self.queued = 0
        self.qbytes = 0
        self.ready: deque[_Worker] = deque()
        self.workers: dict[bytes, _Worker] = {}
        self.registrants: set[bytes] = set()  # worker peers that registered this name
        self.had_worker = False
        self.sticky = False  # its front worker keeps this wake-up's requests
        self.requests = [0] * _N_DIALECTS
        self.replies = [0] * _N_DIALECTS
        self.partials = [0] * _N_DIALECTS
        # Error replies by the client's dialect, then code (off the hot path: errors only).
        self.errors: list[dict[str, int]] = [{} for _ in range(_N_DIALECTS)]


class Dispatcher:
    """Socket-free MDP dispatch. Single-threaded: the caller serialises every call."""

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        heartbeat_s: float = 2.5,
        liveness: int = 3,
        request_timeout: float = 5.0,
        orphan_timeout: float | None = None,
        max_credit: int = codec.MAX_CREDIT,
        now: float = 0.0,
    ) -> None:
        if heartbeat_s <= 0 or liveness <= 0:
            raise ValueError("heartbeat and liveness must be positive")
        if request_timeout <= 0:
            raise ValueError("request_timeout must be positive (seconds)")
        if orphan_timeout is not None and orphan_timeout <= 0:
            raise ValueError("orphan_timeout must be positive (seconds) or None")
        self.limits = lim = limits or Limits()
        self.heartbeat_s = heartbeat_s
        self.liveness = liveness
        self.expiry_s = heartbeat_s * liveness
        self.request_timeout = request_timeout
        # How long a request waits for a service whose workers all left this broker (it had
        # some): with several brokers they may be registered with another one, where a client
        # should go instead (SERVICE_UNAVAILABLE is refused unrun; our clients send it again).
        # None: as long as any request (request_timeout).
        self.orphan_timeout = orphan_timeout
        self.max_credit = max(1, max_credit)
        # Total size is only summed when frames * max_frame could exceed the message limit
        # (most messages have fewer frames, and then cannot be over it).
        self._size_check_frames = lim.max_message_size // lim.max_frame_size
        # Hot-path copies of limits (an attribute chain per request costs ~50 ns each).
        self._max_frames = lim.max_frames + 1  # + the routing id
        self._max_message_size = lim.max_message_size
        self._max_client_requests = lim.max_client_requests
        self._max_client_bytes = lim.max_client_bytes
        self.out: list[Outgoing] = []
        # Routing id -> CURVE public key, filled by the shell when CURVE is on (clients and
        # worker peers are budgeted by key: one key opening many sockets is still one peer).
        self.peer_keys: dict[bytes, bytes] = {}
        # Bytes the shell holds for a peer whose pipe is at its HWM (routing id -> bytes), and
        # their sum: maintained by the shell, read by the budgets.
        self.held: dict[bytes, int] = {}
        self.held_total = 0
        self.now = now
        self.started_at = now
        self.draining = False
        self._drain_deadline = 0.0
        self._quiet_from = 0.0  # drain start or the last refusal since, whichever is later
        self._next_hb = now + heartbeat_s

        self._services: dict[bytes, _Service] = {}
        self._workers: dict[bytes, _Worker] = {}
        self._clients: dict[bytes, _Client] = {}
        self._peer_names: dict[bytes, set[bytes]] = {}
        self._queued: set[_Service] = set()  # services with queued requests (deadline checks)
        self._idle: dict[bytes, float] = {}  # services with no worker and no queue -> since
        self._queued_bytes = 0
        self._sticky: list[_Service] = []
        self._malformed: dict[str, int] = {}
        self._malformed_logged: dict[str, float] = {}
        # Errors of services not in the table, by dialect then code.
        self._untracked_errors: list[dict[str, int]] = [{} for _ in range(_N_DIALECTS)]
        # Counters of services that left the table (reported as "other").
        self._gone = ([0] * _N_DIALECTS, [0] * _N_DIALECTS, [0] * _N_DIALECTS)
        self._hist = LatencyHistogram()
        # Who may serve which name (plantd.common.registry.Rights); None: anyone (no CURVE).
        self.rights: Rights | None = None
        # Denials for the audit log, drained by the shell (bounded by a token bucket).
        self.audit: list[dict[str, str]] = []
        self._audit_tokens = float(_AUDIT_BURST)
        self._audit_at = now
        self._callers: dict[bytes | None, bytes] = {}  # caller identity frames by CURVE key

    # ------------------------------------------------------------------ input

    def handle(self, frames: list[bytes], now: float) -> None:
        """One message from the ROUTER: ``frames[0]`` is the peer's routing id."""
        self.now = now
        n = len(frames)
        if n < 2:
            self._drop("truncated", "message without payload")
            return
        ident = frames[0]
        if n > self._size_check_frames:
            if n > self._max_frames:
                self.too_large(ident, frames[:8], n - 1, -1)
                return
            size = sum(map(len, frames))  # C-level: ~3x a Python loop over 5-6 frames
            if size > self._max_message_size:
                self.too_large(ident, frames[:8], n - 1, size)
                return
        fast = broker_fast_inbound(frames, 1)
        if fast is not None:
            kind, addr, body = fast
            if kind == FAST_FINAL:
                self._on_worker_reply(ident, addr, body, True, None)
            else:
                self._on_request(ident, addr, body, _D02, False)
            return
        try:
            msg = decode_inbound(frames[1:])
        except ProtocolError as exc:
            self._drop(exc.reason, exc.detail)
            return
        match msg:
            case WorkerReply():
                self._on_worker_reply(ident, msg.client, msg.body, msg.final, msg)
            case Request():
                self._on_request(ident, msg.service, msg.body, msg.dialect, msg.delimited)
            case Heartbeat():
                w = self._workers.get(ident)
                if w is None:
                    # Unknown (e.g. we restarted): tell it to re-register.
                    self._send(ident, encode_broker_disconnect(msg.dialect, msg.delimited))
                else:
                    w.expiry = now + self.expiry_s
            case Ready():
                self._on_ready(ident, msg)
            case Disconnect():
                w = self._workers.get(ident)
                if w is not None:
                    self._remove_worker(w, "worker disconnected", send_disconnect=False)

    def too_large(self, ident: bytes, head: list[bytes], frames: int, size: int) -> None:
        """A message over the frame-count (``size`` < 0) or byte limit, of which ``head`` is
        the first few frames (identity first): the sender gets MESSAGE_TOO_LARGE if it can be
        told, nothing is kept."""
        lim = self.limits
        self._count("message_too_large")
        if size < 0:
            why = f"of {frames} frames exceeds the broker limit of {lim.max_frames} frames"
        else:
            why = f"of {size} bytes exceeds the broker limit of {lim.max_message_size}"
        try:
            msg = decode_inbound(head[1:])
        except ProtocolError:
            return
        if isinstance(msg, Request):
            req = _Req(ident, msg.service, _NOBODY, msg.dialect, msg.delimited)
            self._reply_error(
                req, self._services.get(msg.service), ErrorCode.MESSAGE_TOO_LARGE, "request " + why
            )
        elif isinstance(msg, WorkerReply):
            w = self._workers.get(ident)
            lst = w.inflight.get(msg.client) if w is not None else None
            if w is None or not lst:
                return
            w.expiry = self.now + self.expiry_s
            req = lst[0]
            if req.parts is not _FAILED:
                what = "reply" if msg.final else "streamed reply part"
                self._fail_stream(req, w.service, f"{what} {why}")
            if msg.final:
                lst.pop(0)
                if not lst:
                    del w.inflight[msg.client]
                self._release(w, w.service)

    def end_wakeup(self) -> None:
        """After a batch of :meth:`handle` calls: credit workers that kept this wake-up's
        requests go to the back of their service's worker list."""
        if self._sticky:
            for svc in self._sticky:
                svc.sticky = False
                if len(svc.ready) > 1:
                    svc.ready.rotate(-1)
            self._sticky.clear()

    def heard_all(self, now: float) -> None:
        """The caller could not read for a while (e.g. discarding a huge message): no worker
        is blamed for heartbeats it could not deliver."""
        fresh = now + self.expiry_s
        for w in self._workers.values():
            w.expiry = max(w.expiry, fresh)

    # ------------------------------------------------------------------ requests

    def _send(self, ident: bytes, frames: list[bytes]) -> None:
        self.out.append([ident, *frames])

    def _on_request(
        self, ident: bytes, name: bytes, body: list[bytes], dialect: Dialect, delimited: bool
    ) -> None:
        req = _Req(ident, name, body, dialect, delimited)
        req.t0 = self.now
        if body and body[0] == _CALLER:
            # Only the broker writes the caller identity frame: a client's would be believed.
            self._reply_error(
                req,
                None,
                ErrorCode.BAD_REQUEST,
                "a request body may not start with the reserved frame 'plantd.caller' "
                "(the broker adds it for workers that ask for the caller's identity)",
            )
            return
        if self.draining:
            self._quiet_from = self.now
            self._reply_error(req, None, ErrorCode.SHUTTING_DOWN, "broker is shutting down")
            return
        if name.startswith(MMI_PREFIX):
            self._reply(req, mmi.answer(self, name, body))
            return
        size = sum(map(len, body))
        key = self.peer_keys.get(ident, ident) if self.peer_keys else ident
        client = self._clients.get(key)
        if client is None:
            # Kept while idle until the next tick: a client with one request at a time would
            # otherwise cost an object and two dict writes per request.
            client = self._clients[key] = _Client()
        # Replies the shell holds because this peer does not read them count as outstanding:
        # that is what bounds a slow consumer in bytes (see plantd.mdp.broker).
        held = self.held.get(ident, 0) if self.held else 0
        outstanding = client.requests
        if (outstanding or held) and (
            outstanding >= self._max_client_requests
            or client.nbytes + held + size > self._max_client_bytes
        ):
            self._too_many(req, client, held)
            return
        svc = self._services.get(name)
        if svc is None:
            if len(self._services) >= self.limits.max_services:
                self._reply_error(
                    req, None, ErrorCode.QUEUE_FULL, "broker service table is full; retry later"
                )
                return
            svc = self._services[name] = _Service(name)
        svc.requests[dialect] += 1
        req.key = key
        req.size = size
        ready = svc.ready
        if ready and not svc.queued:
            client.requests = outstanding + 1
            client.nbytes += size
            req.owner = client
            w = ready[0]
            self._assign(w, req)
            if w.load >= w.credit:
                ready.popleft()
                w.in_ready = False
            elif len(ready) > 1 and not svc.sticky:
                svc.sticky = True  # rotated once, at the end of this wake-up
                self._sticky.append(svc)
            return
        if not self._may_queue(req, svc, not outstanding and not held):
            return
        client.requests = outstanding + 1
        client.nbytes += size
        req.owner = client
        req.deadline = self.now + self._queue_wait(svc)
        self._enqueue(svc, req)
        if ready:
            self._dispatch(svc)

    def _queue_wait(self, svc: _Service) -> float:
        """How long a request queued for ``svc`` now may wait for a worker."""
        orphan = self.orphan_timeout
        if orphan is not None and svc.had_worker and not svc.workers:
            return min(orphan, self.request_timeout)
        return self.request_timeout

    def _too_many(self, req: _Req, client: _Client, held: int) -> None:
        lim = self.limits
        self._reply_error(
            req,
            None,
            ErrorCode.TOO_MANY_REQUESTS,
            f"this client has {client.requests} requests ({client.nbytes} bytes) outstanding "
            f"and {held} bytes of replies it has not read; the limits are "
            f"{lim.max_client_requests} requests and {lim.max_client_bytes} bytes: "
            "read your replies, then retry",
        )

    def _may_queue(self, req: _Req, svc: _Service, idle_client: bool) -> bool:
        """The service's and the broker's budgets for one more queued request; False when it
        was refused (and answered). A client with nothing outstanding may always queue one
        small request past the byte budgets (not the count: that bounds what newcomers add)."""
        lim = self.limits
        size = req.size
        newcomer = idle_client and size <= lim.newcomer_bytes
        if svc.queued >= lim.max_queue or (
            not newcomer and svc.qbytes + size > lim.max_queue_bytes
        ):
            self._reply_error(
                req,
                svc,
                ErrorCode.QUEUE_FULL,
                f"queue of {svc.queued} requests ({svc.qbytes} bytes) is at its budget "
                f"({lim.max_queue} requests, {lim.max_queue_bytes} bytes); retry later",
            )
            return False
        if not newcomer and self._queued_bytes + self.held_total + size > lim.max_queued_bytes:
            self._reply_error(
                req,
                svc,
                ErrorCode.OVERLOADED,
                f"the broker holds {self._queued_bytes} bytes of queued requests and "
                f"{self.held_total} of unsent replies (budget {lim.max_queued_bytes}); "
                "retry later",
            )
            return False
        return True

    def _answered(self, req: _Req) -> None:
        """The client has its reply or error: the request leaves its budget."""
        client = req.owner
        if client is not None:
            req.owner = None
            client.requests -= 1
            client.nbytes -= req.size

    def _sweep_clients(self) -> None:
        idle = [k for k, c in self._clients.items() if not c.requests]
        for k in idle:
            del self._clients[k]

    def _enqueue(self, svc: _Service, req: _Req) -> None:
        q = svc.queues.get(req.key)
        if q is None:
            q = svc.queues[req.key] = deque()
            svc.rr.append(req.key)
            svc.deficit[req.key] = _QUANTUM
        q.append(req)
        if not svc.queued:
            self._queued.add(svc)
            self._idle.pop(svc.name, None)
        svc.queued += 1
        svc.qbytes += req.size
        self._queued_bytes += req.size

    def _pop_next(self, svc: _Service) -> _Req:
        """The next request of ``svc``: deficit round-robin by bytes over its clients.

        Each client in the round earns ``_QUANTUM`` bytes of credit per visit and is served
        when its credit covers its next request (+ ``_COST``, so empty requests are not free).
        Why bytes, not requests: a newcomer's small request waits for ~one quantum per client
        ahead of it, not one whole request each (1,500 clients x 64 KiB: ~47 requests ahead
        instead of 1,500). Work per call: the clients skipped, at most one full round before
        every deficit is topped up at once.
        """
        rr = svc.rr
        deficit = svc.deficit
        spins = 0
        while True:
            key = rr[0]
            q = svc.queues[key]
            cost = q[0].size + _COST
            have = deficit[key]
            if have >= cost:
                break
            spins += 1
            if spins > len(rr):
                # A whole round and nobody could go: give everyone the rounds the cheapest needs.
                need = min(svc.queues[k][0].size + _COST - deficit[k] for k in rr)
                bonus = -(-need // _QUANTUM) * _QUANTUM
                for k in rr:
                    deficit[k] += bonus
                spins = 0
                continue
            deficit[key] = have + _QUANTUM
            rr.rotate(-1)
        req = q.popleft()
        if q:
            deficit[key] = have - cost
        else:
            rr.popleft()
            del svc.queues[key]
            del deficit[key]
        self._unqueued(svc, req)
        return req

    def _unqueued(self, svc: _Service, req: _Req) -> None:
        svc.queued -= 1
        svc.qbytes -= req.size
        self._queued_bytes -= req.size
        if not svc.queued:
            self._queued.discard(svc)

    def _assign(self, w: _Worker, req: _Req) -> None:
        # The shell never drops it (ROUTER_MANDATORY: a full pipe's messages are held and
        # retried, in order), so the request is the worker's from here on.
        if w.caller:
            self.out.append(
                (
                    w.ident,
                    w.prefix,
                    req.client,
                    [_CALLER, self._caller(req.client), *req.body],
                    True,
                )
            )
        else:
            self.out.append((w.ident, w.prefix, req.client, req.body, True))
        req.body = _NOBODY  # the outbox holds it until it is written; we need it no longer
        w.load += 1
        lst = w.inflight.get(req.client)
        if lst is None:
            w.inflight[req.client] = [req]
        else:
            lst.append(req)

    def _dispatch(self, svc: _Service) -> None:
        ready = svc.ready
        while svc.queued and ready:
            w = ready.popleft()
            self._assign(w, self._pop_next(svc))
            if w.load < w.credit:
                ready.append(w)
            else:
                w.in_ready = False

    # ------------------------------------------------------------------ replies

    def _on_worker_reply(
        self, ident: bytes, client: bytes, body: list[bytes], final: bool, msg: WorkerReply | None
    ) -> None:
        w = self._workers.get(ident)
        if w is None:
            self._count("unknown_worker")
            d, delim = (msg.dialect, msg.delimited) if msg is not None else (_D02, False)
            self._send(ident, encode_broker_disconnect(d, delim))
            return
        now = self.now
        w.expiry = now + self.expiry_s
        lst = w.inflight.get(client)
        if lst is None:
            self._count("unexpected_reply")
            return
        svc = w.service
        if not final:
            req = lst[0]
            parts = req.parts
            if parts is _FAILED:
                return
            svc.partials[req.dialect] += 1
            if req.partial_prefix:
                self.out.append((client, req.partial_prefix, req.service, body, False))
                return
            # MDP/0.1 client: keep the parts for the one REPLY, bounded as it grows.
            if parts is None:
                parts = req.parts = []
                req.parts_size = 0
            parts.extend(body)
            req.parts_size += sum(map(len, body))
            if req.parts_size > self.limits.max_message_size:
                self._fail_stream(req, svc, "streamed reply exceeds the size limit")
            return
        req = lst.pop(0)
        if not lst:
            del w.inflight[client]
        if req.parts is not None:
            if req.parts is _FAILED:
                self._release(w, svc)
                return
            size = req.parts_size + sum(map(len, body))
            body = req.parts + body
            if size > self.limits.max_message_size:
                self._release(w, svc)
                self._reply_error(
                    req, svc, ErrorCode.MESSAGE_TOO_LARGE, "streamed reply exceeds the size limit"
                )
                return
        if req.dialect is _DLEG and body and body[0] == ERROR_MARKER:
            # A worker's error (e.g. HANDLER_ERROR) in the envelope a legacy client can read.
            body = _legacy_error(body)
        self.out.append((client, req.final_prefix, req.service, body, False))
        svc.replies[req.dialect] += 1
        self._hist.observe(now - req.t0)
        owner = req.owner
        if owner is not None:  # _answered, inlined: once per reply
            req.owner = None
            owner.requests -= 1
            owner.nbytes -= req.size
        self._release(w, svc)

    def _fail_stream(self, req: _Req, svc: _Service, why: str) -> None:
        """Fail a request whose worker is still streaming: the client gets the error now; the
        request stays in flight (as failed) until the worker's FINAL returns its credit."""
        req.parts = _FAILED
        self._reply_error(req, svc, ErrorCode.MESSAGE_TOO_LARGE, why)

    def _release(self, w: _Worker, svc: _Service) -> None:
        w.load -= 1
        if not w.in_ready:
            w.in_ready = True
            svc.ready.append(w)
        if svc.queued:
            self._dispatch(svc)

    def _reply(self, req: _Req, body: list[bytes]) -> None:
        self.out.append((req.client, req.final_prefix, req.service, body, False))

    def _reply_error(self, req: _Req, svc: _Service | None, code: str, message: str) -> None:
        if svc is None:
            # Services we do not track (mmi, table full, shutdown) share one entry.
            svc = self._services.get(req.service)
        errors = (svc.errors if svc is not None else self._untracked_errors)[req.dialect]
        errors[code] = errors.get(code, 0) + 1
        body = error_reply_body(req.dialect, code, message)
        self.out.append((req.client, req.final_prefix, req.service, body, False))
        self._answered(req)

    # ------------------------------------------------------------------ workers

    def _on_ready(self, ident: bytes, msg: Ready) -> None:
        old = self._workers.get(ident)
        if old is not None:
            # RFC 7/18: a valid but unexpected command gets DISCONNECT.
            self._remove_worker(old, "worker sent READY twice", send_disconnect=True)
            return
        lim = self.limits
        disc = encode_broker_disconnect(msg.dialect, msg.delimited)
        name = msg.service
        if name.startswith(MMI_PREFIX):
            self._count("reserved_service")
            self._send(ident, disc)
            return
        if len(self._workers) >= lim.max_workers:
            self._count("too_many_workers")
            self._send(ident, disc)
            return
        rights = self.rights
        if rights is not None:
            key_b = self.peer_keys.get(ident)
            key = key_b.decode("ascii", "replace") if key_b is not None else None
            if not rights.may_serve(key, name.decode("utf-8", "replace")):
                self._deny_ready(ident, key, name, "service_not_allowed")
                self._send(ident, disc)
                return
        peer = self.peer_keys.get(ident, ident)
        names = self._peer_names.get(peer)
        if names is not None and name not in names and len(names) >= lim.max_names_per_peer:
            self._count("too_many_names")
            self._send(ident, disc)
            return
        svc = self._services.get(name)
        if svc is None:
            if len(self._services) >= lim.max_services:
                self._count("too_many_services")
                self._send(ident, disc)
                return
            svc = self._services[name] = _Service(name)
        if names is None:
            names = self._peer_names[peer] = set()
        names.add(name)
        svc.registrants.add(peer)
        self._idle.pop(name, None)
        w = _Worker(
            ident,
            peer,
            svc,
            msg.dialect,
            msg.delimited,
            min(msg.credit, self.max_credit),
            msg.caller,
        )
        w.expiry = self.now + self.expiry_s
        self._workers[ident] = w
        svc.workers[ident] = w
        svc.had_worker = True
        w.in_ready = True
        svc.ready.append(w)
        # Answer READY at once, so the worker knows it is registered without waiting a whole
        # heartbeat interval (its readiness probe and `plantd up` depend on that).
        self.out.append(w.hb)
        if svc.queued:
            self._dispatch(svc)

    # ------------------------------------------------------------------ rights

    def set_rights(self, rights: Rights | None) -> int:
        """Use ``rights`` from now on (a registry reload): workers whose key may no longer
        serve their name get DISCONNECT (counted ``revoked``, audited); the rest stay, with
        their connections. Returns how many were disconnected."""
        self.rights = rights
        self._callers.clear()  # names and kinds may have changed
        if rights is None:
            return 0
        revoked = []
        for w in self._workers.values():
            key_b = self.peer_keys.get(w.ident)
            key = key_b.decode("ascii", "replace") if key_b is not None else None
            if not rights.may_serve(key, w.service.name.decode("utf-8", "replace")):
                revoked.append((w, key))
        for w, key in revoked:
            self._deny_ready(w.ident, key, w.service.name, "revoked")
            self._remove_worker(
                w, "the worker's key may no longer serve this name", send_disconnect=True
            )
        return len(revoked)

    def peer_changed(self, ident: bytes) -> None:
        """The connection behind routing id ``ident`` now has another key (a peer chose a
        departed peer's routing id): a worker registered under the old key is forgotten, so
        the newcomer inherits neither its name nor its requests."""
        w = self._workers.get(ident)
        if w is not None:
            self._count("peer_key_changed")
            self._remove_worker(w, "the worker's connection changed keys", send_disconnect=False)

    def _deny_ready(self, ident: bytes, key: str | None, name: bytes, reason: str) -> None:
        """Count, log (rate-limited) and audit (token bucket) a refused registration."""
        service = name.decode("utf-8", "replace")
        reserved = service.startswith("org.plantd.")
        rights = self.rights
        who = rights.identity(key) if rights is not None else None
        self._drop(
            reason,
            f"key {key} ({who.name if who else 'not in the registry'}) may not serve "
            f"{service!r}{' (reserved for plantd)' if reserved else ''}"
            f"{'' if rights is None else f' [{rights.mode} mode]'}",
            warn=True,
        )
        now = self.now
        self._audit_tokens = min(
            float(_AUDIT_BURST), self._audit_tokens + (now - self._audit_at) * _AUDIT_RATE
        )
        self._audit_at = now
        if self._audit_tokens < 1.0:
            self._count("audit_suppressed")
            return
        self._audit_tokens -= 1.0
        self.audit.append(
            {
                "action": "bus.register" if reason != "revoked" else "bus.revoke",
                "decision": "deny",
                "reason": "RESERVED_SERVICE" if reserved else "SERVICE_NOT_ALLOWED",
                "actor": who.name if who is not None else "",
                "target": service,
                "source": key or "",
            }
        )

    def _caller(self, client: bytes) -> bytes:
        """The caller identity frame of a client routing id (cached per CURVE key)."""
        key_b = self.peer_keys.get(client)
        frame = self._callers.get(key_b)
        if frame is None:
            if len(self._callers) >= _MAX_CALLERS:
                self._callers.clear()
            key = key_b.decode("ascii", "replace") if key_b is not None else None
            rights = self.rights
            who = rights.identity(key) if rights is not None else None
            frame = self._callers[key_b] = caller.encode(
                key,
                who.name if who else None,
                who.kind if who else None,
                who.permissions if who else None,
            )
        return frame

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
                if req.parts is not _FAILED:  # those clients have had their error
                    self._reply_error(req, svc, ErrorCode.WORKER_LOST, why)
        w.inflight.clear()
        w.load = 0
        if not svc.workers and not svc.queued:
            self._mark_idle(svc.name, self.now)
        elif not svc.workers and self.orphan_timeout is not None:
            # The last worker left with requests queued: they wait no longer than new ones
            # would. min() with one bound keeps each queue in deadline order (_expire_queue).
            cap = self.now + self._queue_wait(svc)
            for q in svc.queues.values():
                for req in q:
                    req.deadline = min(req.deadline, cap)

    # ------------------------------------------------------------------ timers

    def tick(self, now: float, *, expire_workers: bool = True) -> None:
        """Deadlines of queued requests, forgotten services and (every heartbeat interval)
        heartbeats. Work is proportional to queued requests and idle services, not the table."""
        self.now = now
        for svc in list(self._queued):
            self._expire_queue(svc, now)
        self._expire_services(now)
        self._sweep_clients()
        if now >= self._next_hb:
            self._heartbeat(now, expire_workers)
            self._next_hb = now + self.heartbeat_s

    def _expire_queue(self, svc: _Service, now: float) -> None:
        emptied = False
        for key in list(svc.rr):
            q = svc.queues[key]
            while q and q[0].deadline <= now:
                req = q.popleft()
                self._unqueued(svc, req)
                if svc.workers:
                    self._reply_error(
                        req,
                        svc,
                        ErrorCode.DEADLINE_EXCEEDED,
                        f"request waited {self.request_timeout:g}s in the queue; all workers busy",
                    )
                elif svc.had_worker and self.orphan_timeout is not None:
                    self._reply_error(
                        req,
                        svc,
                        ErrorCode.SERVICE_UNAVAILABLE,
                        f"the workers of {svc.name.decode(errors='replace')!r} left this "
                        f"broker and none came back within {self._queue_wait(svc):g}s; not "
                        "run: another broker may have them",
                    )
                else:
                    self._reply_error(
                        req,
                        svc,
                        ErrorCode.SERVICE_UNAVAILABLE,
                        f"no worker for {svc.name.decode(errors='replace')!r} within "
                        f"{self.request_timeout:g}s",
                    )
            if not q:
                del svc.queues[key]
                del svc.deficit[key]
                emptied = True
        if emptied:
            svc.rr = deque(k for k in svc.rr if k in svc.queues)
        if not svc.queued and not svc.workers:
            if svc.had_worker:
                self._mark_idle(svc.name, now)
            else:
                # Names only clients mentioned are forgotten at once, so junk cannot pile up.
                self._forget(svc)

    def _mark_idle(self, name: bytes, now: float) -> None:
        # Re-inserted, so the dict stays ordered by time and expiry can stop at the first
        # entry that is still young.
        self._idle.pop(name, None)
        self._idle[name] = now

    def _expire_services(self, now: float) -> None:
        ttl = self.limits.service_ttl
        idle = self._idle
        while idle:
            name, since = next(iter(idle.items()))
            if since + ttl > now:
                break
            del idle[name]
            svc = self._services.get(name)
            if svc is not None and not svc.workers and not svc.queued:
                self._forget(svc)

    def _forget(self, svc: _Service) -> None:
        del self._services[svc.name]
        self._idle.pop(svc.name, None)
        for into, errors in zip(self._untracked_errors, svc.errors, strict=True):
            for code, n in errors.items():
                into[code] = into.get(code, 0) + n
        for into_counts, counts in zip(
            self._gone, (svc.requests, svc.replies, svc.partials), strict=True
        ):
            for d in range(_N_DIALECTS):
                into_counts[d] += counts[d]
        for peer in svc.registrants:
            names = self._peer_names.get(peer)
            if names is not None:
                names.discard(svc.name)
                if not names:
                    del self._peer_names[peer]

    def _heartbeat(self, now: float, expire: bool) -> None:
        if expire:
            expired = [w for w in self._workers.values() if w.expiry < now]
            for w in expired:
                self._remove_worker(w, "worker expired (no heartbeat)", send_disconnect=True)
        # Every worker, busy or idle, so a worker running a long handler keeps its broker.
        self.out += [w.hb for w in self._workers.values()]

    # ------------------------------------------------------------------ shutdown

    def drain_step(self, now: float, drain_timeout: float, quiet: float = 0.0) -> bool:
        """One step of graceful shutdown; True when the caller may stop (close the socket).

        That is once no worker holds a request, nothing is queued, and no client request came
        (each was refused) for ``quiet`` seconds; or at the drain deadline. The quiet period
        exists because closing loses whatever a client has just sent (it is on the wire or in
        the socket's queue): a client still sending here gets refusals and moves to another
        broker, and the broker closes only once nobody is sending to it.
        """
        self.now = now
        if not self.draining:
            self.draining = True
            self._drain_deadline = now + drain_timeout
            self._quiet_from = now
            for svc in list(self._queued):
                if not svc.workers:
                    self._fail_queue(svc, ErrorCode.SHUTTING_DOWN, "broker is shutting down")
        pending = any(w.load for w in self._workers.values()) or bool(self._queued)
        busy = pending or now < self._quiet_from + quiet
        if busy and now < self._drain_deadline:
            return False
        self.fail_everything("broker shut down before the reply")
        return True

    def _fail_queue(self, svc: _Service, code: str, why: str) -> None:
        while svc.queued:
            self._reply_error(self._pop_next(svc), svc, code, why)

    def fail_everything(self, why: str) -> None:
        """The broker is going: queued requests were never run (``SHUTTING_DOWN``, safe to
        send again, e.g. to another broker); those with a worker may have been
        (``WORKER_LOST``, as when a worker dies mid-request)."""
        for svc in list(self._queued):
            self._fail_queue(svc, ErrorCode.SHUTTING_DOWN, why)
        for w in list(self._workers.values()):
            for reqs in w.inflight.values():
                for req in reqs:
                    if req.parts is not _FAILED:
                        self._reply_error(req, w.service, ErrorCode.WORKER_LOST, why)
            w.inflight.clear()
            self._send(w.ident, encode_broker_disconnect(w.dialect, w.delimited))
        self._workers.clear()
        for svc in self._services.values():
            svc.workers.clear()
            svc.ready.clear()

    # ------------------------------------------------------------------ counting

    def _count(self, reason: str) -> None:
        self._malformed[reason] = self._malformed.get(reason, 0) + 1

    def _drop(self, reason: str, detail: str, *, warn: bool = False) -> None:
        n = self._malformed.get(reason, 0) + 1
        self._malformed[reason] = n
        last = self._malformed_logged.get(reason, -_LOG_EVERY_S)
        if self.now - last >= _LOG_EVERY_S:
            self._malformed_logged[reason] = self.now
            if warn:
                log.warning("refused worker READY (%s): %s [%d so far]", reason, detail, n)
            else:
                log.warning("dropped malformed MDP message (%s): %s [%d so far]", reason, detail, n)

    def count(self, reason: str, n: int = 1) -> None:
        """Count a drop the shell saw (e.g. ``send_dropped``)."""
        self._malformed[reason] = self._malformed.get(reason, 0) + n

    # ------------------------------------------------------------------ read-only view
    # What MMI, the stats export and tests may read (plantd.mdp.mmi.BrokerView).

    @property
    def uptime_s(self) -> float:
        return self.now - self.started_at

    def is_worker(self, ident: bytes) -> bool:
        return ident in self._workers

    @property
    def worker_count(self) -> int:
        return len(self._workers)

    @property
    def service_count(self) -> int:
        return len(self._services)

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    @property
    def malformed(self) -> dict[str, int]:
        return dict(self._malformed)

    def client_usage(self, key: bytes) -> tuple[int, int]:
        """(requests, bytes) a client key has outstanding."""
        c = self._clients.get(key)
        return (c.requests, c.nbytes) if c is not None else (0, 0)

    def service_info(self, name: bytes) -> ServiceInfo | None:
        svc = self._services.get(name)
        return _info(svc) if svc is not None else None

    def service_infos(self) -> list[ServiceInfo]:
        return [_info(s) for _, s in sorted(self._services.items())]

    def live_service_names(self) -> list[bytes]:
        return sorted(n for n, s in self._services.items() if s.workers)

    def totals(self) -> dict[str, int]:
        services = self._services.values()
        gone_req, gone_rep, _ = self._gone
        return {
            "services": sum(1 for s in services if s.workers),
            "workers": len(self._workers),
            "queued": sum(s.queued for s in services),
            "requests": sum(sum(s.requests) for s in services) + sum(gone_req),
            "replies": sum(sum(s.replies) for s in services) + sum(gone_rep),
        }

    def worker_infos(self) -> list[WorkerInfo]:
        now = self.now
        return [
            WorkerInfo(
                identity=w.ident.hex(),
                service=w.service.name.decode(errors="replace"),
                dialect=w.dialect.label,
                credit=w.credit,
                in_flight=w.load,
                expires_in_s=max(0.0, w.expiry - now),
            )
            for w in self._workers.values()
        ]

    def stats(self, handshakes: dict[str, int] | None = None) -> BrokerStats:
        """Every counter, with at most ``metrics_top_services`` service labels (by requests)
        plus ``"other"``, so a flood of names cannot grow the exported series."""
        services = self._services
        traffic = {n: sum(s.requests) for n, s in services.items()}
        top = top_names(traffic, self.limits.metrics_top_services)
        requests: dict[tuple[str, str], int] = {}
        replies: dict[tuple[str, str], int] = {}
        partials: dict[tuple[str, str], int] = {}
        errors: dict[tuple[str, str], int] = {}
        dialect_errors: dict[tuple[str, str, str], int] = {}
        depth: dict[str, int] = {}
        workers: dict[str, int] = {}
        busy: dict[str, int] = {}
        other_errors: list[dict[str, int]] = [{} for _ in range(_N_DIALECTS)]
        other = [list(g) for g in self._gone]
        for name_b, svc in services.items():
            if name_b not in top:
                for into_counts, counts in zip(
                    other, (svc.requests, svc.replies, svc.partials), strict=True
                ):
                    for d in range(_N_DIALECTS):
                        into_counts[d] += counts[d]
                for into, errs in zip(other_errors, svc.errors, strict=True):
                    for code, n in errs.items():
                        into[code] = into.get(code, 0) + n
                _add(depth, OTHER, svc.queued)
                _add(workers, OTHER, len(svc.workers))
                _add(busy, OTHER, sum(1 for w in svc.workers.values() if w.load))
                continue
            name = name_b.decode(errors="replace")
            _put_dialects(requests, name, svc.requests)
            _put_dialects(replies, name, svc.replies)
            _put_dialects(partials, name, svc.partials)
            _add_errors(errors, dialect_errors, name, svc.errors)
            depth[name] = svc.queued
            workers[name] = len(svc.workers)
            busy[name] = sum(1 for w in svc.workers.values() if w.load)
        _put_dialects(requests, OTHER, other[0])
        _put_dialects(replies, OTHER, other[1])
        _put_dialects(partials, OTHER, other[2])
        _add_errors(errors, dialect_errors, OTHER, other_errors)
        _add_errors(errors, dialect_errors, "", self._untracked_errors)
        hist = HistogramSnapshot(
            LATENCY_BUCKETS, tuple(self._hist.cumulative()), self._hist.sum, self._hist.count
        )
        return BrokerStats(
            uptime_s=self.uptime_s,
            requests=requests,
            replies=replies,
            partials=partials,
            errors=errors,
            malformed={k: v for k, v in self._malformed.items() if v},
            queue_depth=depth,
            workers=workers,
            busy_workers=busy,
            handshakes=dict(handshakes or {}),
            latency=hist,
            dialect_errors=dialect_errors,
            queued_bytes=self._queued_bytes,
            clients=sum(1 for c in self._clients.values() if c.requests),
            services_known=len(services),
        )


def _legacy_error(body: list[bytes]) -> list[bytes]:
    """A worker's ``plantd.error`` FINAL, re-encoded for a legacy client (its JSON envelope)."""
    code = body[1].decode("ascii", "replace") if len(body) > 1 else ErrorCode.HANDLER_ERROR
    message = body[2].decode("utf-8", "replace") if len(body) > 2 else ""
    return error_reply_body(Dialect.LEGACY, code, message)


def _info(s: _Service) -> ServiceInfo:
    loads = [w.load for w in s.workers.values()]
    return ServiceInfo(
        name=s.name.decode(errors="replace"),
        workers=len(loads),
        idle=sum(1 for x in loads if not x),
        queued=s.queued,
        in_flight=sum(loads),
    )


def _add(into: dict[str, int], key: str, n: int) -> None:
    into[key] = into.get(key, 0) + n


def _put_dialects(into: dict[tuple[str, str], int], name: str, counts: Iterable[int]) -> None:
    for d, n in zip(Dialect, counts, strict=True):
        if n:
            into[name, d.label] = into.get((name, d.label), 0) + n


def _add_errors(
    by_code: dict[tuple[str, str], int],
    by_dialect: dict[tuple[str, str, str], int],
    service: str,
    errors: list[dict[str, int]],
) -> None:
    for d, per_code in zip(Dialect, errors, strict=True):
        for code, n in per_code.items():
            by_code[service, code] = by_code.get((service, code), 0) + n
            by_dialect[service, d.label, code] = by_dialect.get((service, d.label, code), 0) + n
