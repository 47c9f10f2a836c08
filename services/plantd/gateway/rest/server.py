"""The REST/JSON edge: the plantd.v1 servicers over HTTP, SSE and WebSocket (aiohttp).

One route table, built at start from the ``google.api.http`` annotations (:mod:`.routes`),
serves every request by calling **the same servicer coroutine** the gRPC server calls, with an
:class:`~.context.EdgeContext`: the token check, rate limits, stream caps, deadlines, errors
and metrics are the gRPC face's, so the two cannot drift. ``/openapi.json`` is generated from
the same table (:mod:`.openapi`).

* Unary routes: proto3 JSON in (path variables, query parameters, body), proto3 JSON out;
  an entry's version is its ``ETag``, and ``If-Match`` is ``expected_version``.
* Server streams (``WatchEntries``, ``Subscribe``, ``StreamCall``): Server-Sent Events, an
  event per message, ``id:`` the revision for watches, so a reconnecting ``EventSource``'s
  ``Last-Event-ID`` resumes with no gap and no duplicate; a WebSocket on the same path when
  the request asks to upgrade (JSON text frames, no compression: permessage-deflate costs
  ~7x the memory per socket, edge-anchors §1.3). A browser cannot set headers on a WebSocket,
  so without ``Authorization`` the first message authenticates (Home Assistant's shape);
  a token is never taken from the URL, which ends up in logs.
* Slow readers: a stream holds at most :data:`STREAM_QUEUE` messages for its client; a write
  that cannot finish in ``slow_write_s`` ends the stream (counted, reason ``slow_consumer``).
* CORS: off unless origins are configured; credentials never allowed (tokens, not cookies).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import grpc
from aiohttp import WSMsgType, web
from google.protobuf import json_format
from google.protobuf.message import Message
from prometheus_client import CollectorRegistry, Counter

from plantd.api.errors import GatewayCode, Origin
from plantd.common.service import ServiceError
from plantd.gateway.auth import AUTHORIZATION, REQUEST_ID
from plantd.gateway.rest import multiplex, render
from plantd.gateway.rest.context import (
    EdgeAbort,
    EdgeContext,
    call_metadata,
    client_host,
    peer_string,
    request_timeout,
)
from plantd.gateway.rest.routes import RestInputError, Route, Router, request_dict
from plantd.gateway.state_map import RpcFailure

MULTIPLEX_PATH: Final = "/v1/ws"  # one WebSocket, many calls and subscriptions
STREAM_QUEUE: Final = 8  # messages ready for one stream's client (each <= max_message_bytes)
WS_MAX_INBOUND: Final = 64 * 1024  # client -> server frames are only auth and close
WS_FRAME_HEADER: Final = 10  # the longest header of an unmasked (server) WebSocket frame
ALLOWED_HEADERS: Final = "authorization, content-type, if-match, x-request-id, traceparent, " + (
    "grpc-timeout, last-event-id"
)
EXPOSED_HEADERS: Final = "etag, retry-after, x-request-id"

# Streams whose messages carry a resumable position: (message field -> SSE id, request field
# that resumes after it).
RESUME: Final[Mapping[tuple[str, str], tuple[str, str]]] = {
    ("plantd.v1.StateService", "WatchEntries"): ("revision", "startRevision"),
}

_END: Final = object()
_GONE: Final = object()  # the WebSocket client closed


def _offer(queue: asyncio.Queue[object], item: object) -> None:
    with contextlib.suppress(asyncio.QueueFull):
        queue.put_nowait(item)


_log = logging.getLogger(__name__)


def _high_water(transport: asyncio.Transport | None) -> int:
    # Duck-typed: uvloop's transports are not registered as asyncio.WriteTransport.
    return 0 if transport is None else transport.get_write_buffer_limits()[1]


def sent_at_once(transport: asyncio.Transport | None, size: int, high_water: int) -> bool:
    """Whether a frame of ``size`` bytes goes out without the write waiting for the client.

    An uncompressed WebSocket send suspends only while the transport is paused (its buffer
    went over the high-water mark and has not drained to the low one). An empty buffer is
    not paused, and a frame that fits under the mark does not pause it: such a send needs no
    slow-consumer timer, which costs ~5 us a frame under uvloop (a call_at and a cancel;
    5,000 watchers of one update in ``bench.gateway``)."""
    return (
        transport is not None
        and transport.get_write_buffer_size() == 0
        and size + WS_FRAME_HEADER < high_water
    )


class DirectFrames:
    """A WebSocket stream's synchronous sink (:attr:`EdgeContext.stream_sink`): a stream
    message written straight to the socket when nothing is queued before it and the write
    cannot wait; False leaves it to the stream's task (queue, slow-consumer timer).

    With it a live watch event reaches 5,000 sockets in one pass of the fan-out, without a
    task per socket (plantd.gateway.watch.Watch._direct); the frame is built once for all
    (render.EventFrames.ws_wire) and written under aiohttp's writer, which only ever writes
    whole frames, so the two never interleave inside one."""

    def __init__(
        self,
        frames: render.EventFrames,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport | None,
        queue: asyncio.Queue[object],
        id_field: str,
    ) -> None:
        self.frames = frames
        self.ws = ws
        self.transport = transport
        self.queue = queue
        self.id_field = id_field
        self.high_water = _high_water(transport)
        self.idle = False  # the stream's task waits for its next queued message

    def __call__(self, message: Message) -> bool:
        transport = self.transport
        if (
            not self.idle
            or not self.queue.empty()
            or self.ws.closed
            or transport is None
            or transport.is_closing()
        ):
            return False
        frame = self.frames.ws_wire(message, self.id_field)
        if not sent_at_once(transport, len(frame), self.high_water):
            return False
        transport.write(frame)
        return True


@dataclass(frozen=True, slots=True)
class EdgeOptions:
    max_body_bytes: int = 4 * 1024 * 1024
    cors_origins: tuple[str, ...] = ()  # "*" or exact origins; empty: CORS off
    forwarded_hops: int = 0  # trusted proxies that append to X-Forwarded-For
    auth_required: bool = True  # False with --auth off: a WebSocket needs no auth message
    ws_auth_timeout_s: float = 10.0
    heartbeat_s: float = 15.0  # SSE comment / WebSocket ping when idle
    slow_write_s: float = 10.0
    first_message_wait_s: float = 1.0  # an error this soon is an HTTP status, not an event
    drain_s: float = 10.0  # on stop: in-flight requests get this long


def etag_of(message: Message) -> str | None:
    """An entry's version as a strong ETag (``"12"``), for responses that hold one entry."""
    if "entry" not in message.DESCRIPTOR.fields_by_name or not message.HasField("entry"):
        return None
    version = message.entry.version  # type: ignore[attr-defined]
    return f'"{version}"' if version else None


def if_match_version(value: str) -> str:
    """``If-Match: "12"`` -> ``"12"`` (the expected version); RestInputError for anything else
    (``*`` and lists have no compare-and-set meaning here)."""
    text = value.strip()
    if text.startswith('"') and text.endswith('"') and len(text) >= 2:
        text = text[1:-1]
    if not text.isdigit():
        raise RestInputError("If-Match", f'{value[:40]!r} is not a version ETag like "12"')
    return text


def ws_close_code(status: int) -> int:
    """The WebSocket close code for an error's HTTP status."""
    if status in (401, 403):
        return 1008  # policy violation
    if status in (429, 503):
        return 1013  # try again later
    if status >= 500:
        return 1011
    return 1000


def invalid(field: str, message: str) -> RpcFailure:
    return RpcFailure(Origin.GATEWAY, GatewayCode.INVALID_ARGUMENT, message, {"field": field})


class RestEdge:
    """The aiohttp application of the REST edge."""

    def __init__(
        self,
        routes: Sequence[Route],
        servicers: Mapping[str, object],
        openapi: Mapping[str, Any],
        options: EdgeOptions,
        registry: CollectorRegistry | None = None,
        authenticate: Callable[[str], object] | None = None,
    ) -> None:
        missing = {r.service for r in routes} - set(servicers)
        if missing:
            raise ValueError(f"no servicer for {sorted(missing)}")
        self.routes = tuple(routes)
        self.router = Router(routes)
        self.servicers = dict(servicers)
        self.openapi_text = json.dumps(openapi, sort_keys=True, separators=(",", ":"))
        self.options = options
        # Verifies a token once when a /v1/ws socket authenticates (RpcFailure if it does
        # not); every command is still checked by the servicers as any call is.
        self.authenticate = authenticate
        self.methods = multiplex.method_table(self.routes)
        self.frames = render.EventFrames()
        self.stream_ended = Counter(
            "plantd_gateway_rest_streams_ended",
            "SSE and WebSocket streams ended by the edge, by reason",
            ["reason"],
            registry=registry,
        )
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    # ---- lifecycle ------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.options.max_body_bytes)
        app.router.add_get("/openapi.json", self._openapi)
        app.router.add_get(MULTIPLEX_PATH, self._multiplexed)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def start(self, host: str, port: int) -> int:
        # handler_cancellation: a client that goes away cancels its handler at once, so a
        # stream's slot and subscription are freed then, not at the next heartbeat write.
        self._runner = web.AppRunner(
            self.app(),
            access_log=None,
            handle_signals=False,
            handler_cancellation=True,
            shutdown_timeout=self.options.drain_s,
        )
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, host, port, reuse_address=True)
        try:
            await self._site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise ServiceError(f"cannot listen for REST on {host}:{port}: {exc}") from None
        return int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop listening, give open requests ``drain_s`` to finish, then close them."""
        if self._runner is not None:
            await self._runner.cleanup()

    # ---- requests -------------------------------------------------------------------------------

    async def _openapi(self, request: web.Request) -> web.StreamResponse:
        response = web.Response(text=self.openapi_text, content_type=render.JSON_TYPE)
        return self._cors(request, response)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return self._preflight(request)
        request_id = request.headers.get(REQUEST_ID)
        # The raw path: the router splits on "/" before decoding, so %2F stays inside a key.
        path = request.rel_url.raw_path
        found = self.router.find(request.method, path)
        if found is None:
            verbs = self.router.allowed(path)
            if verbs:
                failure = RpcFailure(
                    Origin.GATEWAY,
                    GatewayCode.METHOD_NOT_ALLOWED,
                    f"{request.method} is not served on {request.path}; use "
                    f"{render.allow_header(verbs)}",
                )
                error = render.from_failure(failure, request_id)
                error.headers["Allow"] = render.allow_header(verbs)
            else:
                error = render.from_failure(
                    RpcFailure(
                        Origin.GATEWAY,
                        GatewayCode.UNKNOWN_ROUTE,
                        f"no route {request.path!r}; the routes are in /openapi.json",
                    ),
                    request_id,
                )
            return self._cors(request, self._error(error))
        route, path_vars = found
        try:
            message = await self._request_message(request, route, path_vars)
            context = self._context(request)
        except RpcFailure as failure:
            return self._cors(request, self._error(render.from_failure(failure, request_id)))
        handler = getattr(self.servicers[route.service], route.method)
        if not route.server_streaming:
            return self._cors(request, await self._unary(handler, message, context))
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request, route, handler, message)
        return await self._sse(request, route, handler, message, context)

    async def _request_message(
        self, request: web.Request, route: Route, path_vars: Mapping[str, str]
    ) -> Message:
        body: object | None = None
        if route.body:
            try:
                raw = await request.read()
            except web.HTTPRequestEntityTooLarge:
                raise RpcFailure(
                    Origin.BUS,
                    "MESSAGE_TOO_LARGE",
                    f"the request body is over {self.options.max_body_bytes} bytes",
                ) from None
            try:
                body = json.loads(raw) if raw.strip() else {}
            except (ValueError, UnicodeDecodeError) as exc:
                raise invalid("body", f"the request body is not JSON: {exc}") from None
        try:
            fields = request_dict(route, path_vars, request.query.items(), body)
            self._header_fields(request, route, fields)
            return json_format.ParseDict(fields, route.input_type())
        except RestInputError as exc:
            raise invalid(exc.field, str(exc)) from None
        except json_format.ParseError as exc:
            raise invalid("body", f"not a {route.input_type.DESCRIPTOR.name}: {exc}") from None

    @staticmethod
    def _header_fields(request: web.Request, route: Route, fields: dict[str, object]) -> None:
        """``If-Match`` -> ``expectedVersion``; ``Last-Event-ID`` -> a watch's start."""
        names = route.input_type.DESCRIPTOR.fields_by_name
        if_match = request.headers.get("If-Match")
        if if_match is not None and "expected_version" in names:
            fields["expectedVersion"] = if_match_version(if_match)
        resume = RESUME.get((route.service, route.method))
        last_id = request.headers.get("Last-Event-ID")
        if resume is not None and last_id and resume[1] not in fields:
            if not last_id.strip().isdigit():
                raise RestInputError("Last-Event-ID", f"{last_id[:40]!r} is not a revision")
            fields[resume[1]] = last_id.strip()

    def _context(self, request: web.Request, token: str | None = None) -> EdgeContext:
        try:
            timeout = request_timeout(request.headers, request.query)
        except ValueError as exc:
            raise invalid("timeout", str(exc)) from None
        peername = request.transport.get_extra_info("peername") if request.transport else None
        socket_host = peername[0] if isinstance(peername, tuple) else None
        socket_port = peername[1] if isinstance(peername, tuple) else None
        host = client_host(
            socket_host, request.headers.get("X-Forwarded-For"), self.options.forwarded_hops
        )
        return EdgeContext(
            call_metadata(_lower(request.headers), token),
            peer=peer_string(host, socket_port if host == socket_host else 0),
            timeout_s=timeout,
        )

    async def _unary(
        self,
        handler: Callable[[Message, EdgeContext], Awaitable[Message]],
        message: Message,
        context: EdgeContext,
    ) -> web.StreamResponse:
        try:
            reply = await handler(message, context)
        except EdgeAbort as abort:
            return self._error(render.from_abort(abort))
        except Exception:  # a bug in a servicer: this call fails, the edge keeps serving
            _log.exception("REST call failed")
            internal = EdgeAbort(grpc.StatusCode.INTERNAL, "the call failed in the gateway", ())
            return self._error(render.from_abort(internal))
        response = web.Response(
            text=render.dumps(render.message_json(reply)), content_type=render.JSON_TYPE
        )
        etag = etag_of(reply)
        if etag is not None:
            response.headers["ETag"] = etag
        self._request_id_header(response, context)
        return response

    # ---- streams --------------------------------------------------------------------------------

    async def _pump(self, stream: AsyncIterator[Message], queue: asyncio.Queue[object]) -> None:
        """The servicer's stream into ``queue`` (bounded: a slow client holds the stream back,
        it never grows memory), then its end or its abort."""
        last: object = _END
        try:
            async for item in stream:
                await queue.put(item)
        except EdgeAbort as abort:
            last = abort
        except Exception:  # a bug in a servicer: the stream ends with INTERNAL, the edge lives
            _log.exception("stream %s failed", type(stream).__name__)
            last = EdgeAbort(grpc.StatusCode.INTERNAL, "the stream failed in the gateway", ())
        await queue.put(last)

    async def _sse(
        self,
        request: web.Request,
        route: Route,
        handler: Callable[[Message, EdgeContext], AsyncIterator[Message]],
        message: Message,
        context: EdgeContext,
    ) -> web.StreamResponse:
        queue: asyncio.Queue[object] = asyncio.Queue(STREAM_QUEUE)
        pump = asyncio.create_task(self._pump(handler(message, context), queue))
        id_field = RESUME.get((route.service, route.method), ("", ""))[0]
        try:
            first: object | None = None
            with contextlib.suppress(TimeoutError):
                first = await asyncio.wait_for(queue.get(), self.options.first_message_wait_s)
            if isinstance(first, EdgeAbort):  # refused before anything was sent: a status
                return self._cors(request, self._error(render.from_abort(first)))
            response = web.StreamResponse(
                headers={
                    "Content-Type": "text/event-stream",
                    "Cache-Control": "no-cache",
                    "X-Accel-Buffering": "no",  # nginx-style proxies must not buffer events
                }
            )
            self._cors(request, response)
            await response.prepare(request)
            item = first
            while True:
                if item is None:
                    try:
                        item = await asyncio.wait_for(queue.get(), self.options.heartbeat_s)
                    except TimeoutError:
                        if not await self._write(response, render.SSE_HEARTBEAT):
                            break
                        continue
                if item is _END:
                    self.stream_ended.labels("completed").inc()
                    break
                if isinstance(item, EdgeAbort):
                    error = render.from_abort(item)
                    await self._write(response, render.sse_frame(error.text(), event="error"))
                    self.stream_ended.labels("error").inc()
                    break
                assert isinstance(item, Message)
                if not await self._write(response, self.frames.sse_event(item, id_field)):
                    break
                item = None
            return response
        finally:
            pump.cancel()
            with contextlib.suppress(BaseException):
                await pump

    async def _write(self, response: web.StreamResponse, data: bytes) -> bool:
        """Write and wait for the client to take it; False (stream over) when it will not."""
        try:
            async with asyncio.timeout(self.options.slow_write_s):
                await response.write(data)
        except TimeoutError:
            self.stream_ended.labels("slow_consumer").inc()
            return False
        except (ConnectionError, RuntimeError):
            self.stream_ended.labels("client_gone").inc()
            return False
        return True

    async def _websocket(
        self,
        request: web.Request,
        route: Route,
        handler: Callable[[Message, EdgeContext], AsyncIterator[Message]],
        message: Message,
    ) -> web.StreamResponse:
        if not self._origin_allowed(request):
            error = render.from_failure(
                RpcFailure(
                    Origin.GATEWAY,
                    GatewayCode.PERMISSION_DENIED,
                    f"WebSocket from origin {request.headers.get('Origin', '')[:100]!r} is not "
                    "allowed (configure the gateway's rest_cors_origins)",
                    {"origin": request.headers.get("Origin", "")[:100]},
                )
            )
            return self._error(error)
        ws = web.WebSocketResponse(
            compress=False, heartbeat=self.options.heartbeat_s, max_msg_size=WS_MAX_INBOUND
        )
        await ws.prepare(request)
        token: str | None = None
        if self.options.auth_required and AUTHORIZATION not in _lower(request.headers):
            token = await self._ws_auth(ws)
            if token is None:
                self.stream_ended.labels("auth").inc()
                return ws
        try:
            context = self._context(request, token)
        except RpcFailure as failure:
            await self._ws_error(ws, render.from_failure(failure))
            return ws
        queue: asyncio.Queue[object] = asyncio.Queue(STREAM_QUEUE)
        id_field = RESUME.get((route.service, route.method), ("", ""))[0]
        sink = DirectFrames(self.frames, ws, request.transport, queue, id_field)
        context.stream_sink = sink
        pump = asyncio.create_task(self._pump(handler(message, context), queue))
        reader = asyncio.create_task(self._ws_drain(ws))
        # The client's close wakes the loop through the queue: one plain get per message, not
        # a future and a wait() over two tasks (half the loop's cost with 5,000 watchers).
        # A full queue needs no wake-up: its next get returns at once and sees `reader` done.
        reader.add_done_callback(lambda _: _offer(queue, _GONE))
        try:
            while True:
                sink.idle = True
                item = await queue.get()
                sink.idle = False
                if item is _GONE or reader.done():  # the client closed
                    self.stream_ended.labels("client_gone").inc()
                    break
                if item is _END:
                    self.stream_ended.labels("completed").inc()
                    await ws.close()
                    break
                if isinstance(item, EdgeAbort):
                    self.stream_ended.labels("error").inc()
                    await self._ws_error(ws, render.from_abort(item))
                    break
                assert isinstance(item, Message)
                frame = self.frames.ws_event(item, id_field)
                try:
                    if sent_at_once(request.transport, len(frame), sink.high_water):
                        await ws.send_frame(frame, WSMsgType.TEXT)
                    else:  # A timeout scope, not wait_for: no task per frame (Python 3.11).
                        async with asyncio.timeout(self.options.slow_write_s):
                            await ws.send_frame(frame, WSMsgType.TEXT)
                except TimeoutError:
                    self.stream_ended.labels("slow_consumer").inc()
                    await self._ws_error(
                        ws,
                        render.from_failure(
                            RpcFailure(
                                Origin.GATEWAY,
                                GatewayCode.SLOW_CONSUMER,
                                "the client did not read the stream in time; reconnect and resume",
                            )
                        ),
                    )
                    break
                except (ConnectionError, RuntimeError):
                    self.stream_ended.labels("client_gone").inc()
                    break
            return ws
        finally:
            for task in (pump, reader):
                task.cancel()
            for task in (pump, reader):
                with contextlib.suppress(BaseException):
                    await task

    async def _multiplexed(self, request: web.Request) -> web.StreamResponse:
        """``/v1/ws``: calls and subscriptions on one socket (plantd.gateway.rest.multiplex)."""
        if request.headers.get("Upgrade", "").lower() != "websocket":
            failure = RpcFailure(
                Origin.GATEWAY,
                GatewayCode.INVALID_ARGUMENT,
                f"{MULTIPLEX_PATH} is a WebSocket: connect with an Upgrade: websocket request",
            )
            return self._cors(request, self._error(render.from_failure(failure)))
        if not self._origin_allowed(request):
            failure = RpcFailure(
                Origin.GATEWAY,
                GatewayCode.PERMISSION_DENIED,
                f"WebSocket from origin {request.headers.get('Origin', '')[:100]!r} is not "
                "allowed (configure the gateway's rest_cors_origins)",
            )
            return self._error(render.from_failure(failure))
        ws = web.WebSocketResponse(
            compress=False, heartbeat=self.options.heartbeat_s, max_msg_size=WS_MAX_INBOUND
        )
        await ws.prepare(request)
        token: str | None = None
        if self.options.auth_required:
            header = _lower(request.headers).get(AUTHORIZATION, "")
            if header:
                token = header.removeprefix("Bearer ").removeprefix("bearer ").strip()
            else:
                token = await self._ws_auth(ws)
                if token is None:
                    self.stream_ended.labels("auth").inc()
                    return ws
            if self.authenticate is not None:
                try:
                    self.authenticate(token)
                except RpcFailure as failure:
                    self.stream_ended.labels("auth").inc()
                    with contextlib.suppress(ConnectionError, RuntimeError):
                        await ws.send_str(
                            render.dumps({"type": "auth_invalid", "message": failure.message})
                        )
                        await ws.close(code=1008, message=b"authentication failed")
                    return ws
        try:
            self._context(request, token)  # the upgrade's headers: a bad timeout fails here
        except RpcFailure as failure:
            await self._ws_error(ws, render.from_failure(failure))
            return ws
        await ws.send_str(render.dumps({"type": "auth_ok"}))
        session = multiplex.MultiplexSession(
            ws,
            self.methods,
            self.servicers,
            lambda: self._context(request, token),
            slow_write_s=self.options.slow_write_s,
            frames=self.frames,
            on_end=lambda reason: self.stream_ended.labels(reason).inc(),
        )
        await session.run()
        return ws

    async def _ws_auth(self, ws: web.WebSocketResponse) -> str | None:
        """``auth_required`` -> ``{"type": "auth", "access_token": ...}`` within the timeout:
        the token (verified by the servicer's gate like a header's), or None and closed."""
        await ws.send_str(render.dumps({"type": "auth_required"}))
        try:
            msg = await ws.receive(timeout=self.options.ws_auth_timeout_s)
        except TimeoutError:
            await ws.close(code=1008, message=b"no auth message in time")
            return None
        token: object = None
        if msg.type == WSMsgType.TEXT:
            with contextlib.suppress(ValueError):
                frame = json.loads(msg.data)
                if isinstance(frame, dict) and frame.get("type") == "auth":
                    token = frame.get("access_token")
        if not isinstance(token, str) or not token:
            await ws.close(code=1008, message=b'expected {"type": "auth", "access_token": ...}')
            return None
        return token

    @staticmethod
    async def _ws_drain(ws: web.WebSocketResponse) -> None:
        """Read (and ignore) what the client sends, so pings and its close are handled."""
        async for _ in ws:
            pass

    async def _ws_error(self, ws: web.WebSocketResponse, error: render.HttpError) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_str(render.ws_message("error", error.body["error"]))
            await ws.close(
                code=ws_close_code(error.status), message=(error.reason or "").encode()[:120]
            )

    # ---- headers --------------------------------------------------------------------------------

    @staticmethod
    def _error(error: render.HttpError) -> web.Response:
        return web.Response(
            status=error.status,
            text=error.text(),
            content_type=render.JSON_TYPE,
            headers=error.headers,
        )

    @staticmethod
    def _request_id_header(response: web.StreamResponse, context: EdgeContext) -> None:
        for key, value in context.trailers:
            if key == REQUEST_ID and isinstance(value, str):
                response.headers["X-Request-Id"] = value

    def _allowed_origin(self, origin: str | None) -> str | None:
        origins = self.options.cors_origins
        if not origin or not origins:
            return None
        if "*" in origins:
            return "*"
        return origin if origin in origins else None

    def _origin_allowed(self, request: web.Request) -> bool:
        """A WebSocket's Origin (browsers always send it): our own host or a CORS origin."""
        origin = request.headers.get("Origin")
        if origin is None:
            return True  # not a browser
        host = request.headers.get("Host", "")
        if origin.split("://", 1)[-1] == host:
            return True
        return self._allowed_origin(origin) is not None

    def _cors(self, request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        allowed = self._allowed_origin(request.headers.get("Origin"))
        if allowed is not None:
            response.headers["Access-Control-Allow-Origin"] = allowed
            response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
            if allowed != "*":
                response.headers["Vary"] = "Origin"
        return response

    def _preflight(self, request: web.Request) -> web.Response:
        allowed = self._allowed_origin(request.headers.get("Origin"))
        verbs = self.router.allowed(request.rel_url.raw_path)
        if allowed is None or not verbs:
            origin = request.headers.get("Origin", "")[:100]
            failure = RpcFailure(
                Origin.GATEWAY,
                GatewayCode.PERMISSION_DENIED,
                f"cross-origin calls from {origin!r} are not allowed here (CORS is off unless "
                "the gateway's rest_cors_origins lists the origin)",
                {"origin": origin},
            )
            return self._error(render.from_failure(failure))
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": allowed,
                "Access-Control-Allow-Methods": render.allow_header(verbs),
                "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                "Access-Control-Max-Age": "600",
                "Vary": "Origin",
            },
        )


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {key.lower(): value for key, value in headers.items()}
