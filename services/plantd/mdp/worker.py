"""MDP workers: :class:`AsyncWorker` (asyncio) and blocking :class:`Worker` (runs one in a thread).

The socket loop only moves frames: handlers run as tasks (async handlers) or in a thread pool
(sync handlers), so heartbeats keep flowing while a handler works. The socket is a plain pyzmq
socket watched with ``loop.add_reader`` on its ZMQ_FD (edge-triggered: ``EVENTS`` is re-checked
after every send and before every wait); this is markedly cheaper than zmq.asyncio.

Handlers
  ``handler(frames) -> frames``             one FINAL reply
  ``handler(frames) -> iterator of frames`` a stream: each item is sent as a PARTIAL the moment
                                            it is produced; the FINAL is ``FinalPart(frames)``
                                            if the iterator yields one (it ends the stream), or
                                            a sync generator's ``return frames``, else empty.
  Either may be ``async``. An exception fails its own request only: it gets a
  ``HANDLER_ERROR`` FINAL (after any PARTIALs already sent) and the worker goes on.
  ``batch_handler(list of frames) -> list of replies`` (AsyncWorker): gets every request that
  is ready at once in one call (e.g. one Redis pipeline per batch). Requires ``credit > 1``
  to receive more than one request at a time. To fail one request of a batch, put an
  exception in its slot; a batch handler that *raises* fails every request of that call (it
  cannot say which was at fault, and running them again one by one could apply a write twice).

Errors go out in the worker's own dialect: ``[b"plantd.error", CODE, message]`` from MDP/0.2
and MDP/0.1 workers (our broker turns it into the JSON envelope for legacy clients), and the
original's ``{"success":false,"error":message,"code":CODE}`` frame from a legacy worker, which
may be serving an original broker that forwards bodies untouched. Messages are cut to
``MAX_ERROR_MESSAGE_CHARS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeAlias, cast

import zmq

from plantd.common.contract import DEFAULT_BROKER_CONNECT, HEARTBEAT_LIVENESS, HEARTBEAT_MS
from plantd.common.curve import CurveClient
from plantd.common.endpoints import DNS_PREFIX
from plantd.mdp._wire import events, recv_multipart, send_multipart, send_replies
from plantd.mdp.client import check_endpoint, connect
from plantd.mdp.codec import (
    Dialect,
    Disconnect,
    WorkerRequest,
    decode_worker_command,
    encode_ready,
    encode_worker_disconnect,
    encode_worker_heartbeat,
    error_reply_body,
    split_worker_requests,
    worker_reply_prefix,
)
from plantd.mdp.errors import MAX_ERROR_MESSAGE_CHARS, EndpointError, ErrorCode, ProtocolError

if TYPE_CHECKING:
    from plantd.mdp.fleet import WorkerFleet

log = logging.getLogger(__name__)

Frames: TypeAlias = list[bytes]
FrameLike: TypeAlias = bytes | str
ReplyLike: TypeAlias = Sequence[FrameLike]
HandlerResult: TypeAlias = (
    ReplyLike | Iterable[ReplyLike] | AsyncIterator[ReplyLike] | Awaitable[Any]
)
Handler: TypeAlias = Callable[[Frames], Any]
BatchHandler: TypeAlias = Callable[[list[Frames]], Any]

_NOBLOCK: Final = int(zmq.NOBLOCK)
# Messages read per loop turn: bounds the turn (heartbeats, expiry checks) under a flood; the
# rest are read on the next turn at once (the socket is still readable).
_DRAIN_MAX: Final = 1024
_EMPTY: Final = b""
_POLLIN: Final = int(zmq.POLLIN)


def _frame(x: FrameLike) -> bytes:
    return x.encode() if isinstance(x, str) else bytes(x)


def _frames(reply: ReplyLike) -> Frames:
    if isinstance(reply, bytes | str):
        raise TypeError("a reply is a list of frames, not a single bytes/str")
    return [x if x.__class__ is bytes else _frame(x) for x in reply]


def _all_plain(results: Sequence[Any]) -> bool:
    """True when every result is a list of bytes frames (sendable as is)."""
    for r in results:
        if r.__class__ is not list:
            return False
        for f in r:
            if f.__class__ is not bytes:
                return False
    return True


def _describe(exc: BaseException) -> str:
    """``Type: text`` for an error reply; an exception whose ``__str__`` fails still gets one."""
    try:
        text = str(exc)
    except Exception:  # a hostile or buggy __str__ must not cost the client its reply
        text = "<exception text unavailable>"
    return f"{type(exc).__name__}: {text[:MAX_ERROR_MESSAGE_CHARS]}"


def _is_single_reply(result: object) -> bool:
    return isinstance(result, list | tuple)


@dataclass(frozen=True, slots=True)
class FinalPart:
    """Yield this from a streaming handler to send ``frames`` as the FINAL and end the stream.

    Every other item a handler's iterator yields goes out at once as a PARTIAL. A stream that
    ends without a ``FinalPart`` (and without a sync generator ``return frames``) gets an empty
    FINAL. Clients that only read the FINAL (``Client.request``, the original Go ``Recv()``)
    see just its frames, so put a summary there when such clients matter.
    """

    frames: ReplyLike


def _stream_end(value: object) -> Frames:
    """The FINAL body for a stream that ended with ``return value`` (None: empty)."""
    return [] if value is None else _frames(cast(ReplyLike, value))


def _drain_sync_stream(result: Iterable[Any], emit: Callable[[Frames], object]) -> Frames:
    """Hand each part of a sync stream to ``emit`` (a PARTIAL) and return the FINAL body.

    The FINAL is a yielded :class:`FinalPart`, the generator's return value, or empty. The
    iterator is closed here so a generator's cleanup runs now, not at garbage collection.
    """
    it: Iterator[Any] = iter(result)
    try:
        while True:
            try:
                item = next(it)
            except StopIteration as end:
                return _stream_end(end.value)
            if item.__class__ is FinalPart:
                return _frames(item.frames)
            emit(_frames(item))
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


class AsyncWorker:
    """An MDP worker for one service, on asyncio. ``await run()``; ``await stop()`` to end."""

    def __init__(
        self,
        endpoint: str = DEFAULT_BROKER_CONNECT,
        service: str | bytes = b"",
        handler: Handler | None = None,
        *,
        batch_handler: BatchHandler | None = None,
        heartbeat_ms: int = HEARTBEAT_MS,
        liveness: int = HEARTBEAT_LIVENESS,
        credit: int = 1,
        dialect: Dialect = Dialect.MDP02,
        curve: CurveClient | None = None,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        reconnect_ms: int = 250,
        max_reconnect_ms: int = 8000,
        executor: Executor | None = None,
        caller_identity: bool = False,
    ) -> None:
        if (handler is None) == (batch_handler is None):
            raise ValueError("pass exactly one of handler= or batch_handler=")
        if not service:
            raise ValueError("a worker needs a service name")
        if credit < 1:
            raise ValueError("credit must be >= 1")
        if "," in endpoint or endpoint.startswith(DNS_PREFIX):
            raise EndpointError(
                endpoint,
                "it names several brokers, and an AsyncWorker serves one: run one on every "
                "broker with plantd.mdp.fleet.WorkerFleet (the blocking Worker takes a broker "
                "set as it is; docs/ha.md)",
            )
        self.endpoint = check_endpoint(endpoint)
        self.service = service.encode() if isinstance(service, str) else service
        self.handler = handler
        self.batch_handler = batch_handler
        self.heartbeat_s = heartbeat_ms / 1000.0
        self.liveness = liveness
        self.credit = credit
        # READY asks for the caller identity frame; the handler calls
        # plantd.mdp.caller.split_caller on each body (docs/protocol.md §5).
        self.caller_identity = caller_identity
        self.dialect = dialect
        self.curve = curve
        self.context = context or zmq.Context.instance()
        self.reconnect_s = reconnect_ms / 1000.0
        self.max_reconnect_s = max_reconnect_ms / 1000.0
        self._executor = executor
        self._own_executor = False
        self._sock: zmq.Socket[bytes] | None = None
        self._fd = -1
        self._gen = 0  # connection generation: replies for an older socket are dropped
        self._waiter: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._stop_event: asyncio.Event | None = None
        self._sent = False  # a send happened since the last EVENTS check
        fn = handler if handler is not None else batch_handler
        self._is_async = inspect.iscoroutinefunction(fn)
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_rx = 0.0
        self._drain_deadline = 0.0
        self.connected = asyncio.Event()
        # Counters (read by services for metrics).
        self.handled = 0
        self.errors = 0
        self.reconnects = 0
        self.malformed = 0
        self._held: dict[bytes, list[Frames]] = {}  # MDP/0.1: parts waiting for the FINAL
        self._fp = worker_reply_prefix(dialect, True)
        self._pp = worker_reply_prefix(dialect, False) if dialect is not Dialect.MDP01 else ()

    # ------------------------------------------------------------------ socket

    def _connect(self) -> None:
        loop = self._loop
        assert loop is not None
        sock = self.context.socket(zmq.DEALER)
        sock.linger = 1000
        sock.sndhwm = 100_000
        sock.rcvhwm = 100_000
        if self.curve is not None:
            self.curve.apply(sock)
        try:
            connect(sock, self.endpoint)
        except BaseException:
            sock.close(0)
            raise
        self._sock = sock
        self._gen += 1
        self._fd = cast(int, sock.getsockopt(zmq.FD))
        loop.add_reader(self._fd, self._wake)
        self._last_rx = time.monotonic()
        self._send(encode_ready(self.service, self.dialect, self.credit, self.caller_identity))

    def _close(self, say_goodbye: bool) -> None:
        sock = self._sock
        if sock is None:
            return
        if say_goodbye:
            with contextlib.suppress(zmq.ZMQError):
                sock.send_multipart(encode_worker_disconnect(self.dialect), _NOBLOCK)
        if self._loop is not None and self._fd >= 0:
            self._loop.remove_reader(self._fd)
        self._fd = -1
        sock.close(1000 if say_goodbye else 0)
        self._sock = None
        self.connected.clear()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _send(self, frames: list[bytes]) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            send_multipart(sock, frames, _NOBLOCK)
        except zmq.Again:
            log.warning("worker %s: send queue full, reply dropped", self.service.decode())
        self._sent = True

    def _kick(self) -> None:
        """After sends: they may have consumed the FD's edge while messages became readable."""
        if self._sent:
            self._sent = False
            sock = self._sock
            if sock is not None and events(sock) & _POLLIN:
                self._wake()

    async def _wait(self, timeout: float) -> None:  # noqa: ASYNC109 - a deadline, not a scope
        sock = self._sock
        assert sock is not None and self._loop is not None
        if events(sock) & _POLLIN or (self._stopping and not self._tasks):
            return
        fut: asyncio.Future[None] = self._loop.create_future()
        self._waiter = fut
        h = self._loop.call_later(max(0.0, timeout), self._wake)
        try:
            await fut
        finally:
            h.cancel()
            self._waiter = None

    # ------------------------------------------------------------------ main loop

    async def run(self) -> None:
        """Serve until :meth:`stop`; reconnects with exponential backoff after broker loss."""
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        if self._stopping:
            self._stop_event.set()
        if self._executor is None and not self._is_async:
            self._executor = ThreadPoolExecutor(
                max_workers=self.credit, thread_name_prefix="plantd-handler"
            )
            self._own_executor = True
        backoff = self.reconnect_s
        try:
            while not self._stopping:
                self._connect()
                outcome, heard = await self._serve()
                self._close(say_goodbye=outcome == "stop")
                if outcome == "stop":
                    break
                self.reconnects += 1
                if heard:
                    backoff = self.reconnect_s
                log.warning(
                    "worker %s: %s; reconnecting to %s in %.2fs",
                    self.service.decode(errors="replace"),
                    "broker lost (no heartbeat)" if outcome == "lost" else "broker sent DISCONNECT",
                    self.endpoint,
                    backoff,
                )
                await self._sleep(backoff)
                backoff = min(backoff * 2, self.max_reconnect_s)
        finally:
            self._close(say_goodbye=False)
            if self._own_executor and self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = None

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but return at once when stop() is called."""
        assert self._stop_event is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_event.wait(), seconds)

    async def _serve(self) -> tuple[str, bool]:
        sock = self._sock
        assert sock is not None
        recv = recv_multipart
        split = split_worker_requests
        hb = self.heartbeat_s
        expiry = hb * self.liveness
        next_hb = time.monotonic() + hb
        heard = False
        while True:
            messages: list[Frames] = []
            while len(messages) < _DRAIN_MAX:
                try:
                    messages.append(recv(sock, _NOBLOCK))
                except zmq.Again:
                    break
            # Two parallel lists, not an object per request: this loop runs per message.
            clients: list[bytes] = []
            bodies: list[Frames] = []
            rest = split(messages, clients, bodies) if messages else messages
            got = bool(clients)
            for frames in rest:
                try:
                    cmd = decode_worker_command(frames)
                except ProtocolError as exc:
                    self.malformed += 1
                    log.debug("worker dropped malformed message: %s", exc)
                    continue
                got = True
                if cmd.__class__ is WorkerRequest:
                    clients.append(cmd.client)
                    bodies.append(cmd.body)
                elif cmd.__class__ is Disconnect:
                    return "disconnect", heard
            if got:
                self._last_rx = time.monotonic()
                if not heard:
                    heard = True
                    self.connected.set()
            if clients:
                self._submit(clients, bodies)
            now = time.monotonic()
            if now >= next_hb:
                self._send(encode_worker_heartbeat(self.dialect))
                next_hb = now + hb
            if now - self._last_rx > expiry:
                return "lost", heard
            if self._stopping and (not self._tasks or now >= self._drain_deadline):
                return "stop", heard
            if len(messages) == _DRAIN_MAX:
                await asyncio.sleep(0)  # more are waiting: let the handler tasks run first
            await self._wait(min(next_hb, self._last_rx + expiry) - now)

    # ------------------------------------------------------------------ handlers

    def _submit(self, clients: list[bytes], bodies: list[Frames]) -> None:
        assert self._loop is not None
        gen = self._gen
        if self._stopping:
            for client in clients:
                self._send_reply(
                    gen,
                    client,
                    error_reply_body(
                        self.dialect, ErrorCode.SHUTTING_DOWN, "worker is shutting down"
                    ),
                    True,
                )
            return
        if self.batch_handler is not None:
            self._spawn(self._run_batch(clients, bodies, gen))
        else:
            for client, body in zip(clients, bodies, strict=True):
                self._spawn(self._run_one(client, body, gen))

    def _spawn(self, coro: Awaitable[None]) -> None:
        assert self._loop is not None
        task: asyncio.Task[None] = self._loop.create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._kick()
        if self._stopping and not self._tasks:
            self._wake()

    def _send_reply(self, gen: int, client: bytes, body: Frames, final: bool) -> None:
        if gen != self._gen:
            return  # the request came on a socket we have since replaced
        self._send([*(self._fp if final else self._pp), client, _EMPTY, *body])

    def _error(self, gen: int, client: bytes, exc: BaseException) -> None:
        self.errors += 1
        # MDP/0.1: parts held for a failed stream must not leak into the client's next reply.
        self._held.pop(client, None)
        message = _describe(exc)
        log.warning(
            "worker %s: handler failed: %s",
            self.service.decode(errors="replace"),
            message,
            exc_info=exc,
        )
        # In our own dialect: MDP/0.2 and 0.1 peers send plantd.error, which our broker turns
        # into the envelope for legacy clients; a legacy worker may serve an original broker,
        # which translates nothing, so it sends the original's JSON envelope itself.
        self._send_reply(
            gen, client, error_reply_body(self.dialect, ErrorCode.HANDLER_ERROR, message), True
        )

    async def _call(self, fn: Callable[[Any], Any], arg: Any) -> Any:
        if self._is_async:
            return await fn(arg)
        if self._executor is not None:
            assert self._loop is not None
            return await self._loop.run_in_executor(self._executor, fn, arg)
        result = fn(arg)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def _run_one(self, client: bytes, body: Frames, gen: int) -> None:
        assert self.handler is not None
        try:
            if self._is_async or self._executor is None:
                result = await self._call(self.handler, body)
            else:
                assert self._loop is not None
                result = await self._loop.run_in_executor(
                    self._executor, self._sync_stream, self.handler, body, gen, client
                )
            await self._deliver(gen, client, result)
            self.handled += 1
        except Exception as exc:
            self._error(gen, client, exc)

    def _sync_stream(self, fn: Handler, body: Frames, gen: int, client: bytes) -> Any:
        """Run a sync handler in a pool thread. A generator is iterated here too: each part is
        handed to the loop as it comes (PARTIAL); the FINAL body is returned."""
        result = fn(body)
        if _is_single_reply(result) or not isinstance(result, Iterable):
            return result
        loop = self._loop
        assert loop is not None
        # Partials queued on the loop run before this return value is seen (FIFO); a list, so
        # that _deliver sends it as the FINAL.
        return _drain_sync_stream(
            result, lambda frames: loop.call_soon_threadsafe(self._partial_now, gen, client, frames)
        )

    def _partial_now(self, gen: int, client: bytes, frames: Frames) -> None:
        self._partial(gen, client, frames)
        self._kick()

    async def _run_batch(self, clients: list[bytes], bodies: list[Frames], gen: int) -> None:
        assert self.batch_handler is not None
        try:
            results = await self._call(self.batch_handler, bodies)
            if not isinstance(results, list | tuple) or len(results) != len(clients):
                raise TypeError(
                    f"batch_handler must return one reply per request ({len(clients)}), "
                    f"got {type(results).__name__}"
                )
        except Exception as exc:
            for client in clients:
                self._error(gen, client, exc)
            return
        # The common case (every reply a list of bytes, socket unchanged) goes out in one tight
        # loop: libzmq then wakes its I/O thread once for a run of replies, not once per reply.
        sock = self._sock
        if sock is not None and gen == self._gen and _all_plain(results):
            dropped = send_replies(sock, self._fp, clients, results, _NOBLOCK)
            if dropped:
                log.warning(
                    "worker %s: send queue full, %d replies dropped",
                    self.service.decode(),
                    dropped,
                )
            self._sent = True
            self.handled += len(clients)
            return
        for client, result in zip(clients, results, strict=True):
            try:
                if isinstance(result, BaseException):
                    raise result
                if result.__class__ is list:  # the common case, without a coroutine per reply
                    self._send_reply(gen, client, _frames(result), True)
                else:
                    await self._deliver(gen, client, result)
                self.handled += 1
            except Exception as exc:
                self._error(gen, client, exc)

    async def _deliver(self, gen: int, client: bytes, result: Any) -> None:
        if _is_single_reply(result):
            self._final(gen, client, _frames(result))
            return
        final: Frames = []
        if result.__class__ is FinalPart:  # returned rather than yielded: a plain reply
            final = _frames(result.frames)
        elif hasattr(result, "__aiter__"):
            try:
                async for item in result:
                    if item.__class__ is FinalPart:
                        final = _frames(item.frames)
                        break
                    self._partial(gen, client, _frames(item))
                    self._kick()  # the stream may go on for long: keep reading requests
            finally:
                aclose = getattr(result, "aclose", None)
                if aclose is not None:
                    await aclose()
        elif isinstance(result, Iterable):
            # Only from an async handler or a batch handler (sync handlers' iterators are
            # consumed in their thread): iterate here, on the loop.
            final = _drain_sync_stream(result, lambda frames: self._partial(gen, client, frames))
        else:
            raise TypeError(f"handler returned {type(result).__name__}, not frames or an iterator")
        self._final(gen, client, final)

    def _final(self, gen: int, client: bytes, final: Frames) -> None:
        if self._held:  # MDP/0.1: parts held back go out with the FINAL
            final = [f for p in self._held.pop(client, []) for f in p] + final
        self._send_reply(gen, client, final, True)

    def _partial(self, gen: int, client: bytes, frames: Frames) -> None:
        if self.dialect is Dialect.MDP01:
            # MDP/0.1 has no PARTIAL: hold the parts and send them with the FINAL.
            self._held.setdefault(client, []).append(frames)
            return
        self._send_reply(gen, client, frames, False)

    # ------------------------------------------------------------------ stop

    async def stop(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Finish in-flight requests (up to ``timeout``), send DISCONNECT, close the socket.

        Requests arriving meanwhile get ``SHUTTING_DOWN``.
        """
        self.request_stop(timeout)

    def request_stop(self, timeout: float = 5.0) -> None:
        """:meth:`stop` from plain code (it only flags the loop, which then drains)."""
        self._drain_deadline = time.monotonic() + timeout
        self._stopping = True
        if self._stop_event is not None:
            self._stop_event.set()
        self._wake()


class Worker:
    """Blocking MDP worker: runs an :class:`AsyncWorker` on its own event loop.

    ``handler(frames)`` runs in a pool of ``credit`` threads, so heartbeats continue while it
    works. ``run()`` blocks; ``start()`` runs in a background thread; ``stop()`` ends either.
    ``endpoint`` may be a broker set (``tcp://a:9797,tcp://b:9797``, ``dns:tcp://NAME:PORT``):
    then one AsyncWorker per broker shares the pool (:class:`plantd.mdp.fleet.WorkerFleet`).
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_BROKER_CONNECT,
        service: str | bytes = b"",
        handler: Handler | None = None,
        *,
        heartbeat_ms: int = HEARTBEAT_MS,
        liveness: int = HEARTBEAT_LIVENESS,
        credit: int = 1,
        dialect: Dialect = Dialect.MDP02,
        curve: CurveClient | None = None,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        reconnect_ms: int = 250,
        max_reconnect_ms: int = 8000,
        caller_identity: bool = False,
    ) -> None:
        if handler is None:
            raise ValueError("Worker needs a handler")
        self._executor = ThreadPoolExecutor(max_workers=credit, thread_name_prefix="plantd-handler")

        def on_broker(broker: str, share: int) -> AsyncWorker:
            return AsyncWorker(
                broker,
                service,
                handler,
                heartbeat_ms=heartbeat_ms,
                liveness=liveness,
                credit=share,
                dialect=dialect,
                curve=curve,
                context=context,
                reconnect_ms=reconnect_ms,
                max_reconnect_ms=max_reconnect_ms,
                executor=self._executor,
                caller_identity=caller_identity,
            )

        self._worker: AsyncWorker | WorkerFleet
        if "," in endpoint or endpoint.startswith(DNS_PREFIX):
            from plantd.mdp.fleet import WorkerFleet  # it imports this module

            name = service.decode() if isinstance(service, bytes) else service
            self._worker = WorkerFleet(endpoint, on_broker, credit=credit, service=name)
        else:
            self._worker = on_broker(endpoint, credit)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()

    @property
    def inner(self) -> AsyncWorker | WorkerFleet:
        """The AsyncWorker, or with a broker set the WorkerFleet (counters are summed)."""
        return self._worker

    def run(self) -> None:
        """Serve in the calling thread until :meth:`stop`."""

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._started.set()
            await self._worker.run()

        try:
            asyncio.run(main())
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def start(self) -> Worker:
        """Serve in a background thread; returns self."""
        self._thread = threading.Thread(target=self.run, name="plantd-worker", daemon=True)
        self._thread.start()
        self._started.wait(5.0)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Finish in-flight requests (up to ``timeout``), DISCONNECT, and return."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                asyncio.run_coroutine_threadsafe(self._worker.stop(timeout), loop)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout + 2.0)
