"""MDP clients: blocking :class:`Client` and asyncio :class:`AsyncClient`.

MDP has no request id, so a socket can have only one request outstanding and still match replies
to requests. ``Client`` is one DEALER (one request at a time, like RFC 7/18 clients).
``AsyncClient`` keeps a pool of DEALER sockets, one outstanding request each, opening sockets
on demand up to ``max_sockets`` (further callers wait for a free one).

Retries: only when the caller passes ``idempotent=True`` (a retry may run the request twice).
A retry is resent on the *same* socket, so a late reply to an earlier attempt still answers
the call; afterwards the socket is replaced, since its extra replies may still be on the way.
A socket that timed out is also replaced (a new identity), so a stale reply can never be taken
for the answer to a later request; so is one whose request ended in ``DEADLINE_EXCEEDED`` or
``WORKER_LOST`` (the request may still be with a worker), or that has an unread message left.
Other error replies settle the request and keep the socket (and the client's routing id),
except the refusals of a request that never ran: ``SHUTTING_DOWN`` (a broker or worker going
away) and ``SERVICE_UNAVAILABLE`` (no worker for the service at that broker; with the broker's
``orphan_wait_ms``, soon after the service's workers left it, as when a worker is cut off from
one broker of several). ``request`` sends those again, after short jittered pauses, until its
timeout (``SERVICE_UNAVAILABLE`` once only: a name no broker serves fails as before): on the
same socket when it is connected to several brokers (libzmq's round robin sends it to the next
one), else on a new socket, which reaches another broker through a Service (drain-first
rollouts lose no request of such a client; docs/ha.md).

Error replies come as ``plantd.error`` frames or, in the legacy dialect, the original's JSON
envelope; both raise :class:`BrokerError`. A malformed endpoint raises :class:`EndpointError`
when the client is created (libzmq would accept some and then never connect).

Several brokers (docs/ha.md): ``endpoint`` may be a broker set, ``tcp://a:9797,tcp://b:9797``
or ``dns:tcp://NAME:PORT`` (every address of NAME, resolved when a socket is made). Each socket
then connects to all of them with ``ZMQ_IMMEDIATE``, so a request goes to a broker that is
connected now (libzmq's round robin); when one dies, its connection drops and the next request,
or the retry of an idempotent one, goes to another.

A request in flight at a broker that dies: when its connection drops (libzmq's monitor says so
at once when the broker's process dies, within 3 s through ZMTP heartbeats when its machine
does; :mod:`plantd.mdp.link`), the request ends in ``BrokerError(BROKER_LOST)`` (it may have
run) without waiting for its timeout, and an idempotent one is sent again on a new connection,
i.e. to another broker. That needs the drop to be the request's: the socket had one broker
connected when it was sent. With several brokers connected the request may be on one that is
fine, so it waits for its reply or its timeout (``RequestTimeout``), as before.
"""

from __future__ import annotations

import asyncio
import errno
import random
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from typing import Any, Final, NamedTuple, cast

import zmq
import zmq.asyncio

from plantd.common import endpoints
from plantd.common.contract import DEFAULT_BROKER_CONNECT
from plantd.common.curve import CurveClient
from plantd.common.discovery import BrokerSet, resolve_brokers
from plantd.mdp.codec import Dialect, Reply, decode_reply, encode_request, parse_error_reply
from plantd.mdp.errors import (
    BrokerError,
    ClientClosed,
    EndpointError,
    ErrorCode,
    ProtocolError,
    RequestTimeout,
)
from plantd.mdp.link import AsyncLinkWatch, LinkWatch, Sent, configure_heartbeats

DEFAULT_TIMEOUT: Final = 10.0
DEFAULT_RETRIES: Final = 2

Frame = bytes | str


class StreamPart(NamedTuple):
    """One reply part of a stream: its body frames, and whether it is the FINAL."""

    frames: list[bytes]
    final: bool


def _b(x: Frame) -> bytes:
    return x.encode() if isinstance(x, str) else x


def _frames(body: Sequence[Frame]) -> list[bytes]:
    return [x.encode() if isinstance(x, str) else x for x in body]


# Errors after which the request may still be with a worker, so its reply may still come.
_REPLY_MAY_FOLLOW: Final = frozenset((ErrorCode.DEADLINE_EXCEEDED, ErrorCode.WORKER_LOST))


def _final_error(service: bytes, reply: Reply) -> BrokerError | None:
    """The BrokerError a FINAL carries (either error form), or None for a reply."""
    err = parse_error_reply(reply.body)
    if err is None:
        return None
    return BrokerError(err[0], err[1], service.decode(errors="replace"))


def _check_final(service: bytes, reply: Reply) -> list[bytes]:
    error = _final_error(service, reply)
    if error is not None:
        raise error
    return reply.body


# Pauses between sends of a request refused unrun (_UNRUN below, e.g. a draining broker):
# a draining broker turns unready first, and the Service (or the next broker of a set) takes
# the new connection within about a second. The last one ends the loop (the deadline decides).
_REFUSED_PAUSES: Final = (0.05, 0.1, 0.2, 0.4, 0.8, 0.8, 0.8, float("inf"))


# Refusals of a request that never ran: a draining broker or worker (SHUTTING_DOWN), or a
# broker with no worker for the service (SERVICE_UNAVAILABLE: quickly, with orphan_wait_ms,
# when the service's workers left that broker and may be registered with another one).
_UNRUN: Final = frozenset({ErrorCode.SHUTTING_DOWN, ErrorCode.SERVICE_UNAVAILABLE})


def _refused(error: BrokerError | None) -> bool:
    """The request was refused and never ran: sending it again cannot apply it twice."""
    return error is not None and error.code in _UNRUN


class _Refusals:
    """When a request refused unrun is sent again (one policy for both clients): after each
    pause of ``_REFUSED_PAUSES`` while the request's first deadline allows."""

    def __init__(self, timeout: float, rng: Callable[[], float] = random.random) -> None:
        self.deadline = time.monotonic() + timeout
        self._random = rng
        self.refusal: BrokerError | None = None
        self._pauses = iter(_REFUSED_PAUSES)
        self._no_worker_seen = False

    def pause_after(self, error: BrokerError) -> float:
        """Seconds to wait before sending again; raises ``error`` if it may not be sent."""
        # Jitter (50-100 % of each pause): the clients a stopping broker refused together do
        # not all come back in the same instant.
        pause = next(self._pauses) * (0.5 + 0.5 * self._random())
        if not _refused(error) or time.monotonic() + pause >= self.deadline:
            raise error
        if error.code == ErrorCode.SERVICE_UNAVAILABLE:
            # Once: enough to reach a broker that has the workers one broker lost; a name no
            # broker serves (a typo) must not keep the caller waiting for its whole timeout.
            if self._no_worker_seen:
                raise error
            self._no_worker_seen = True
        self.refusal = error
        return pause

    def remaining(self) -> float:
        return max(0.001, self.deadline - time.monotonic())

    def explain(self, timeout: RequestTimeout) -> BrokerError | RequestTimeout:
        """After a refusal, no other broker answering in time: the refusal says more."""
        return self.refusal if self.refusal is not None else timeout


def _settled(error: BrokerError | None) -> bool:
    """False when a later reply to this request may still arrive on the socket: then the
    socket must not serve another request (MDP has no request id to tell the replies apart)."""
    return error is None or error.code not in _REPLY_MAY_FOLLOW


def check_endpoint(endpoint: str) -> str:
    """Return ``endpoint`` if a client or worker can connect to it, else raise EndpointError.

    The grammar is :func:`plantd.common.endpoints.check_endpoint` (one authority for settings,
    clients and workers); this wraps its refusal in the library's own error type.
    """
    try:
        return endpoints.check_endpoint(endpoint, bind=False)
    except endpoints.InvalidEndpoint as exc:
        raise EndpointError(exc.endpoint, exc.reason) from None


def check_brokers(value: str) -> str:
    """Return ``value`` if it names a broker set a client can use, else raise EndpointError."""
    try:
        return endpoints.check_endpoint_set(value)
    except endpoints.InvalidEndpoint as exc:
        raise EndpointError(exc.endpoint, exc.reason) from None


def connect_brokers(sock: zmq.Socket[Any], brokers: list[str]) -> None:
    """Connect ``sock`` to every broker; with more than one, only to those connected now
    (``ZMQ_IMMEDIATE``: a request is never queued for a broker that is down)."""
    if len(brokers) > 1:
        sock.setsockopt(zmq.IMMEDIATE, 1)
        # In a random order: a new socket's first request goes to its first connected broker,
        # and a request refused by a draining broker must not be sent to it again first.
        brokers = random.sample(brokers, len(brokers))
    for endpoint in brokers:
        connect(sock, endpoint)


def connect(sock: zmq.Socket[Any], endpoint: str) -> None:
    """``sock.connect(endpoint)``, with libzmq's refusal as an EndpointError (not a ZMQError)."""
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as exc:
        if exc.errno in (errno.EINVAL, errno.EPROTONOSUPPORT, zmq.ENOCOMPATPROTO):
            raise EndpointError(endpoint, f"libzmq refused it ({exc.strerror})") from exc
        raise


# How often a waiting AsyncClient request looks at its socket's monitor: the bound on how late
# a dropped broker connection is noticed (the blocking Client polls the monitor itself).
_LINK_CHECK_S: Final = 0.2


class _Dropped(Exception):
    """The connection carrying the request dropped before its reply (internal)."""


def _lost(service: bytes) -> BrokerError:
    return BrokerError(
        ErrorCode.BROKER_LOST,
        "the connection to the broker dropped before the reply (the broker stopped or was "
        "cut off); the request may have run: check before sending it again unless it is "
        "idempotent",
        service.decode(errors="replace"),
    )


def _configure(sock: zmq.Socket[Any], curve: CurveClient | None) -> None:
    sock.linger = 0
    sock.sndhwm = 10_000
    sock.rcvhwm = 10_000
    configure_heartbeats(sock)
    if curve is not None:
        curve.apply(sock)


class Client:
    """Blocking MDP client: ``request`` returns the FINAL body; ``stream`` yields each reply part.

    Not thread-safe (one socket); use one Client per thread, or :class:`AsyncClient`.
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_BROKER_CONNECT,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        dialect: Dialect = Dialect.MDP02,
        curve: CurveClient | None = None,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive (seconds)")
        self.endpoint = check_brokers(endpoint)
        self.timeout = timeout
        self.retries = max(0, retries)
        self.dialect = dialect
        self.curve = curve
        self.context = context or zmq.Context.instance()
        self._sock: zmq.Socket[bytes] | None = None
        self._watch: LinkWatch | None = None
        self._poller = zmq.Poller()
        self._closed = False

    def _socket(self) -> zmq.Socket[bytes]:
        if self._closed:
            raise ClientClosed("client is closed")
        if self._sock is None:
            sock = self.context.socket(zmq.DEALER)
            watch = None
            try:
                _configure(sock, self.curve)
                watch = LinkWatch(sock)  # before connecting: every link's events are seen
                connect_brokers(sock, resolve_brokers(self.endpoint))
            except BaseException:
                if watch is not None:
                    watch.close()
                sock.close(0)
                raise
            self._sock, self._watch = sock, watch
            self._poller = zmq.Poller()
            self._poller.register(sock, zmq.POLLIN)
            self._poller.register(watch.socket, zmq.POLLIN)
        return self._sock

    def _reset(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None

    def close(self) -> None:
        self._reset()
        self._closed = True

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _recv(
        self, sock: zmq.Socket[bytes], service: bytes, deadline: float, token: Sent | None
    ) -> Reply | None:
        """Next reply for ``service`` before ``deadline``; None on timeout; raises _Dropped
        when the link that carried the request (``token``) dropped first."""
        watch = self._watch
        assert watch is not None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready = dict(self._poller.poll(max(1, int(left * 1000))))
            if sock not in ready:  # a reply before the drop is still taken first
                if watch.socket in ready and watch.lost(token):
                    raise _Dropped
                continue
            frames = sock.recv_multipart()
            try:
                reply = decode_reply(frames)
            except ProtocolError:
                continue  # garbage from a confused peer: not our reply
            if reply.service == service:
                return reply

    def request(
        self,
        service: Frame,
        *body: Frame,
        timeout: float | None = None,
        idempotent: bool = False,
    ) -> list[bytes]:
        """Send one request and return the FINAL reply body (PARTIAL bodies are discarded).

        A request refused unrun (``SHUTTING_DOWN``: a draining broker or worker;
        ``SERVICE_UNAVAILABLE``: no worker for it at that broker) is sent again, to another
        broker where there is one (module docstring), within its timeout."""
        refusals = _Refusals(self.timeout if timeout is None else timeout)
        while True:
            try:
                last: list[bytes] = []
                for part, final in self._exchange(_b(service), _frames(body), timeout, idempotent):
                    if final:
                        last = part
                return last
            except RequestTimeout as exc:
                raise refusals.explain(exc) from None
            except BrokerError as exc:
                pause = refusals.pause_after(exc)  # re-raises what may not be sent again
                if not self._fans_out():
                    self._reset()  # a new connection: the Service picks another broker
                time.sleep(pause)
                timeout = refusals.remaining()

    def _fans_out(self) -> bool:
        """The socket is connected to several brokers: its next send goes to the next one
        (libzmq's round robin), so a request refused by one reaches another on it."""
        return self._watch is not None and self._watch.links() > 1

    def stream(
        self, service: Frame, *body: Frame, timeout: float | None = None
    ) -> Generator[list[bytes], None, None]:
        """Yield each PARTIAL body and then the FINAL body (each wait gets a full timeout).

        Closing the generator early is safe: the socket is replaced, so parts still on their
        way cannot reach a later request. :meth:`stream_parts` also says which is the FINAL."""
        for part, _ in self._exchange(_b(service), _frames(body), timeout, False):
            yield part

    def stream_parts(
        self, service: Frame, *body: Frame, timeout: float | None = None
    ) -> Generator[StreamPart, None, None]:
        """Like :meth:`stream`, as ``StreamPart(frames, final)``: the last one has
        ``final=True``. A ``plantd.error`` FINAL raises :class:`BrokerError` instead."""
        for part, final in self._exchange(_b(service), _frames(body), timeout, False):
            yield StreamPart(part, final)

    def _exchange(
        self, service: bytes, body: list[bytes], timeout: float | None, idempotent: bool
    ) -> Iterator[tuple[list[bytes], bool]]:
        t = self.timeout if timeout is None else timeout
        attempts = 1 + (self.retries if idempotent else 0)
        msg = encode_request(service, body, self.dialect)
        sent = 0
        sock = self._socket()
        token: Sent | None = None
        got_partial = False
        finished = False
        refused = 0  # refusals read: each attempt gets at most one FINAL
        listen = False  # read the next reply without sending again
        try:
            while True:
                if listen:
                    listen = False
                elif sent < attempts and not got_partial:
                    # Writable at once with one broker (queued until it connects); with a
                    # set, only once one of them is connected.
                    if not sock.poll(max(1, int(t * 1000)), zmq.POLLOUT):
                        self._reset()
                        raise RequestTimeout(service.decode(errors="replace"), t, sent)
                    sock.send_multipart(msg, zmq.NOBLOCK)
                    sent += 1
                    assert self._watch is not None
                    token = self._watch.sent()
                try:
                    reply = self._recv(sock, service, time.monotonic() + t, token)
                except _Dropped:
                    self._reset()
                    if sent < attempts and not got_partial:
                        sock = self._socket()  # a new connection: another broker
                        continue
                    raise _lost(service) from None
                if reply is None:
                    if sent < attempts and not got_partial:
                        continue  # resend on the same socket: a late reply still counts
                    self._reset()
                    raise RequestTimeout(service.decode(errors="replace"), t, sent)
                if not reply.final:
                    got_partial = True  # never resend once a stream has started
                    yield reply.body, False
                    continue
                error = _final_error(service, reply)
                if _refused(error) and refused + 1 < sent:
                    # An earlier attempt's refusal (MDP replies carry no request id): it never
                    # ran, and a later attempt is still out, so wait for that one's reply.
                    refused += 1
                    listen = True
                    continue
                finished = _settled(error)
                if error is not None:
                    raise error
                yield reply.body, True
                return
        finally:
            # Replace the socket when replies may still come: after retries, when a stream
            # was abandoned before its FINAL, or after an error that leaves the request with
            # a worker (the next request must not read them).
            if self._sock is sock and (sent > 1 or not finished or sock.poll(0)):
                self._reset()

    def mmi(self, name: str, *args: Frame, timeout: float | None = None) -> list[bytes]:
        """Ask the broker's management interface, e.g. ``mmi("mmi.service", "org.plantd.State")``
        (a bare name like ``"service"`` gets the ``mmi.`` prefix)."""
        full = name if name.startswith("mmi.") else f"mmi.{name}"
        return self.request(full, *args, timeout=timeout, idempotent=True)


def _readable(sock: zmq.asyncio.Socket) -> bool:
    """A message is already waiting (sync EVENTS check; zmq.asyncio's poll would await)."""
    return bool(cast(int, sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN)


class _Pool:
    """DEALER sockets with no request outstanding, grown on demand up to ``limit``."""

    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        endpoint: str,
        curve: CurveClient | None,
        limit: int,
    ) -> None:
        self._ctx = ctx
        # A name that stops resolving keeps its last answer: a DNS hiccup must not leave a
        # new socket connected to no broker at all.
        self._brokers = BrokerSet(endpoint)
        self._curve = curve
        self._idle: list[zmq.asyncio.Socket] = []
        self._watches: dict[zmq.asyncio.Socket, AsyncLinkWatch] = {}
        self._open = 0
        self._limit = limit
        self._free = asyncio.Condition()
        self.closed = False

    async def acquire(self) -> zmq.asyncio.Socket:
        async with self._free:
            while not self._idle and self._open >= self._limit:
                if self.closed:
                    raise ClientClosed("client is closed")
                await self._free.wait()
            if self.closed:
                raise ClientClosed("client is closed")
            if self._idle:
                return self._idle.pop()
            self._open += 1  # counted before the await: the limit holds while we resolve
        try:
            brokers = await self._brokers.resolve()
            sock = self._ctx.socket(zmq.DEALER)
            try:
                _configure(sock, self._curve)
                self._watches[sock] = AsyncLinkWatch(sock)  # before connecting (see Client)
                connect_brokers(sock, brokers)
            except BaseException:
                self._discard(sock)
                raise
        except BaseException:
            async with self._free:
                self._open -= 1
                self._free.notify()
            raise
        return sock

    def watch(self, sock: zmq.asyncio.Socket) -> AsyncLinkWatch:
        return self._watches[sock]

    def _discard(self, sock: zmq.asyncio.Socket) -> None:
        watch = self._watches.pop(sock, None)
        if watch is not None:
            watch.close()
        sock.close(0)

    async def release(self, sock: zmq.asyncio.Socket, reusable: bool) -> None:
        async with self._free:
            if reusable and not self.closed:
                self._idle.append(sock)
            else:
                self._discard(sock)
                self._open -= 1
            self._free.notify()

    async def close(self) -> None:
        async with self._free:
            self.closed = True
            for s in self._idle:
                self._discard(s)
            self._open -= len(self._idle)
            self._idle.clear()
            self._free.notify_all()

    @property
    def size(self) -> int:
        return self._open


class AsyncClient:
    """asyncio MDP client; many requests may be in flight at once (one socket per request)."""

    def __init__(
        self,
        endpoint: str = DEFAULT_BROKER_CONNECT,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        dialect: Dialect = Dialect.MDP02,
        curve: CurveClient | None = None,
        context: zmq.asyncio.Context | None = None,
        max_sockets: int = 256,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive (seconds)")
        if max_sockets < 1:
            raise ValueError("max_sockets must be at least 1")
        self.endpoint = check_brokers(endpoint)
        self.timeout = timeout
        self.retries = max(0, retries)
        self.dialect = dialect
        self.context = context or zmq.asyncio.Context.instance()
        self._pool = _Pool(self.context, endpoint, curve, max_sockets)

    @property
    def sockets_open(self) -> int:
        return self._pool.size

    async def close(self) -> None:
        await self._pool.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def request(
        self,
        service: Frame,
        *body: Frame,
        timeout: float | None = None,  # noqa: ASYNC109 - per-request deadline
        idempotent: bool = False,
    ) -> list[bytes]:
        """Send one request and return the FINAL reply body (a refused one is sent again on
        a new socket within its timeout, as :meth:`Client.request` does)."""
        refusals = _Refusals(self.timeout if timeout is None else timeout)
        while True:
            try:
                last: list[bytes] = []
                async for part, final in self._exchange(
                    _b(service), _frames(body), timeout, idempotent
                ):
                    if final:
                        last = part
                return last
            except RequestTimeout as exc:
                raise refusals.explain(exc) from None
            except BrokerError as exc:
                pause = refusals.pause_after(exc)  # re-raises what may not be sent again
                await asyncio.sleep(pause)  # the refused socket was not kept: a new one next
                timeout = refusals.remaining()

    async def stream(
        self,
        service: Frame,
        *body: Frame,
        timeout: float | None = None,  # noqa: ASYNC109 - per-request deadline
    ) -> AsyncIterator[list[bytes]]:
        """Yield each PARTIAL body and then the FINAL body."""
        async for part, _ in self._exchange(_b(service), _frames(body), timeout, False):
            yield part

    async def stream_parts(
        self,
        service: Frame,
        *body: Frame,
        timeout: float | None = None,  # noqa: ASYNC109 - per-request deadline
    ) -> AsyncIterator[StreamPart]:
        """Like :meth:`stream`, as ``StreamPart(frames, final)``: the last one has
        ``final=True``. A ``plantd.error`` FINAL raises :class:`BrokerError` instead."""
        async for part, final in self._exchange(_b(service), _frames(body), timeout, False):
            yield StreamPart(part, final)

    async def mmi(self, name: str, *args: Frame, timeout: float | None = None) -> list[bytes]:  # noqa: ASYNC109 - per-request deadline
        full = name if name.startswith("mmi.") else f"mmi.{name}"
        return await self.request(full, *args, timeout=timeout, idempotent=True)

    async def _recv(
        self, sock: zmq.asyncio.Socket, service: bytes, deadline: float, token: Sent | None
    ) -> Reply | None:
        """Next reply for ``service`` before ``deadline``; None on timeout; raises _Dropped
        when the link that carried the request (``token``) dropped first."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            # One recv future under a timeout, not poll() then recv(): each zmq.asyncio future
            # costs EVENTS checks (a getpid syscall each, libzmq's fork check); the gateway's
            # unary call spent ~12% of its CPU in getpid with poll + recv (py-spy --native).
            # The monitor is looked at only between slices of the wait: a reply within
            # _LINK_CHECK_S costs nothing more.
            wait = left if token is None else min(left, _LINK_CHECK_S)
            # zmq.asyncio returns a Future (typed as an Awaitable).
            pending = cast("asyncio.Future[list[bytes]]", sock.recv_multipart())
            try:
                async with asyncio.timeout(wait):
                    frames = await pending
            except TimeoutError:
                # The timeout cancels this task; if the reply had arrived in that same loop
                # turn, the future holds it and the cancellation would drop it (it did, under
                # concurrent 3 MiB replies): take it. pyzmq's cancelled recv consumed nothing.
                if not pending.done() or pending.cancelled():
                    if not _readable(sock) and self._pool.watch(sock).lost(token):
                        raise _Dropped from None
                    continue
                frames = pending.result()
            try:
                reply = decode_reply(frames)
            except ProtocolError:
                continue
            if reply.service == service:
                return reply

    async def _exchange(
        self,
        service: bytes,
        body: list[bytes],
        timeout: float | None,  # noqa: ASYNC109 - per-request deadline
        idempotent: bool,
    ) -> AsyncIterator[tuple[list[bytes], bool]]:
        t = self.timeout if timeout is None else timeout
        attempts = 1 + (self.retries if idempotent else 0)
        msg = encode_request(service, body, self.dialect)
        sock = await self._pool.acquire()
        held = True  # sock is ours to release
        sent = 0
        token: Sent | None = None
        clean = False
        got_partial = False
        refused = 0  # refusals read: each attempt gets at most one FINAL (see Client)
        listen = False
        try:
            while True:
                if listen:
                    listen = False
                elif sent < attempts and not got_partial:
                    try:  # waits only with a broker set and none of them connected
                        async with asyncio.timeout(t):
                            await sock.send_multipart(msg)
                    except TimeoutError:
                        raise RequestTimeout(service.decode(errors="replace"), t, sent) from None
                    sent += 1
                    token = self._pool.watch(sock).sent()
                try:
                    reply = await self._recv(sock, service, time.monotonic() + t, token)
                except _Dropped:
                    held = False
                    await self._pool.release(sock, False)
                    if sent < attempts and not got_partial:
                        sock = await self._pool.acquire()  # a new connection: another broker
                        held = True
                        continue
                    raise _lost(service) from None
                if reply is None:
                    if sent < attempts and not got_partial:
                        continue
                    raise RequestTimeout(service.decode(errors="replace"), t, sent)
                if not reply.final:
                    got_partial = True
                    yield reply.body, False
                    continue
                # Reused only when nothing more can come for this request (see Client).
                error = _final_error(service, reply)
                if _refused(error) and refused + 1 < sent:
                    refused += 1  # an earlier attempt's refusal: a later one is still out
                    listen = True
                    continue
                # A refusal came from a broker that is going or has no worker for it: its
                # socket is kept only when connected to other brokers too (the next send
                # goes to another one); else a new connection reaches another broker.
                clean = (
                    sent == 1
                    and _settled(error)
                    and (not _refused(error) or self._pool.watch(sock).links() > 1)
                    and not _readable(sock)
                )
                if error is not None:
                    raise error
                yield reply.body, True
                return
        finally:
            if held:
                await self._pool.release(sock, clean)
