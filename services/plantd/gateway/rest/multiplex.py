"""``/v1/ws``: one WebSocket, many calls and subscriptions (the messages: multiplex_protocol).

The socket authenticates once (an ``Authorization`` header, or Home Assistant's
``auth_required`` / ``auth`` exchange), then every command runs through the same servicers,
and so the same token checks, permissions and rate limits, as a gRPC or REST call; each gets
its own :class:`EdgeContext` carrying the socket's token.

Budgets, so one socket cannot take more than its share:

* ``MAX_SUBSCRIPTIONS`` open subscriptions (each also counts against the caller's stream
  slots, like any watch); more are refused with TOO_MANY_STREAMS;
* ``MAX_CALLS_IN_FLIGHT`` calls at once; beyond that the socket is not read until one
  finishes (backpressure, not an error);
* inbound frames of at most ``WS_MAX_INBOUND`` bytes (aiohttp closes the socket with 1009);
* every send must be taken by the client within ``slow_write_s``, else the socket is closed
  (1008, counted as ``slow_consumer``): a client that stops reading holds no server memory
  beyond one frame per subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Final

import grpc
from aiohttp import WSMsgType, web
from google.protobuf import json_format
from google.protobuf.message import Message

from plantd.api.errors import GatewayCode, Origin
from plantd.gateway.rest import multiplex_protocol as proto
from plantd.gateway.rest import render
from plantd.gateway.rest.context import EdgeAbort, EdgeContext
from plantd.gateway.rest.routes import Route
from plantd.gateway.state_map import RpcFailure

MAX_SUBSCRIPTIONS: Final = 64
MAX_CALLS_IN_FLIGHT: Final = 16

_log = logging.getLogger(__name__)

ContextFactory = Callable[[], EdgeContext]


class MultiplexSession:
    """One authenticated ``/v1/ws`` socket: reads commands, runs them, sends the answers."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        methods: Mapping[str, Route],
        servicers: Mapping[str, object],
        context: ContextFactory,
        *,
        slow_write_s: float,
        frames: render.EventFrames,
        on_end: Callable[[str], None],
    ) -> None:
        self.ws = ws
        self.methods = methods
        self.servicers = servicers
        self.context = context
        self.slow_write_s = slow_write_s
        self.frames = frames
        self.on_end = on_end
        self.last_id = 0
        self.subscriptions: dict[int, asyncio.Task[None]] = {}
        self.calls: set[asyncio.Task[None]] = set()
        self._room = asyncio.Semaphore(MAX_CALLS_IN_FLIGHT)
        self._slow = False

    async def run(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type != WSMsgType.TEXT:
                    continue  # binary frames carry nothing here; pings are aiohttp's
                if self._slow:
                    break
                await self._command(msg.data)
            self.on_end("slow_consumer" if self._slow else "client_gone")
        finally:
            tasks = [*self.subscriptions.values(), *self.calls]
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
            if self._slow:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await self.ws.close(code=1008, message=b"the client did not read in time")

    async def _command(self, text: str) -> None:
        try:
            cmd = proto.parse_command(text, self.last_id)
        except proto.CommandError as err:
            await self._send(proto.failed(err.id, self._error(err.failure)))
            return
        self.last_id = cmd.id
        if cmd.type == "ping":
            await self._send(proto.pong(cmd.id))
        elif cmd.type == "unsubscribe":
            task = self.subscriptions.pop(cmd.subscription, None)
            if task is None:
                failure = _failure(
                    GatewayCode.INVALID_ARGUMENT,
                    f"no open subscription {cmd.subscription} on this socket",
                )
                await self._send(proto.failed(cmd.id, self._error(failure)))
                return
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            await self._send(proto.result(cmd.id))
        else:
            await self._start(cmd)

    async def _start(self, cmd: proto.Command) -> None:
        route = self.methods.get(cmd.method)
        if route is None:
            failure = _failure(
                GatewayCode.UNKNOWN_ROUTE,
                f"no method {cmd.method[:200]!r}; the methods are the RPCs in /openapi.json "
                "(operationId), named package.Service/Method",
            )
            await self._send(proto.failed(cmd.id, self._error(failure)))
            return
        streaming = cmd.type == "subscribe"
        if route.server_streaming != streaming:
            need = "subscribe" if route.server_streaming else "call"
            failure = _failure(GatewayCode.INVALID_ARGUMENT, f"{cmd.method} is used with {need}")
            await self._send(proto.failed(cmd.id, self._error(failure)))
            return
        if streaming and len(self.subscriptions) >= MAX_SUBSCRIPTIONS:
            failure = _failure(
                GatewayCode.TOO_MANY_STREAMS,
                f"this socket has {MAX_SUBSCRIPTIONS} open subscriptions; unsubscribe first",
            )
            await self._send(proto.failed(cmd.id, self._error(failure)))
            return
        try:
            message = json_format.ParseDict(cmd.request, route.input_type())
        except json_format.ParseError as exc:
            failure = RpcFailure(
                Origin.GATEWAY,
                GatewayCode.INVALID_ARGUMENT,
                f"request is not a {route.input_type.DESCRIPTOR.name}: {exc}",
                {"field": "request"},
            )
            await self._send(proto.failed(cmd.id, self._error(failure)))
            return
        handler = getattr(self.servicers[route.service], route.method)
        if streaming:
            # Accepted: events follow; a later failure (a refused token, a gap it cannot
            # fill) ends it with an "error" message carrying this id.
            await self._send(proto.result(cmd.id))
            self.subscriptions[cmd.id] = asyncio.create_task(
                self._subscription(cmd.id, handler, message, route)
            )
            return
        await self._room.acquire()  # backpressure: the socket is not read meanwhile
        task = asyncio.create_task(self._call(cmd.id, handler, message))
        self.calls.add(task)
        task.add_done_callback(self._call_done)

    def _call_done(self, task: asyncio.Task[None]) -> None:
        self.calls.discard(task)
        self._room.release()

    async def _call(
        self,
        id_: int,
        handler: Callable[[Message, EdgeContext], Awaitable[Message]],
        message: Message,
    ) -> None:
        try:
            reply = await handler(message, self.context())
        except EdgeAbort as abort:
            await self._send(proto.failed(id_, render.from_abort(abort).body["error"]))
            return
        except Exception:  # a bug in a servicer: this command fails, the socket lives
            _log.exception("multiplexed call failed")
            internal = EdgeAbort(grpc.StatusCode.INTERNAL, "the call failed in the gateway", ())
            await self._send(proto.failed(id_, render.from_abort(internal).body["error"]))
            return
        await self._send(proto.result(id_, render.message_json(reply)))

    async def _subscription(
        self,
        id_: int,
        handler: Callable[[Message, EdgeContext], AsyncIterator[Message]],
        message: Message,
        route: Route,
    ) -> None:
        stream = handler(message, self.context())
        error: dict[str, Any] | None = None
        try:
            async for item in stream:
                await self._send(proto.event(id_, self.frames.json(item)))
        except EdgeAbort as abort:
            error = render.from_abort(abort).body["error"]
        except Exception:
            _log.exception("multiplexed subscription %s failed", route.method)
            internal = EdgeAbort(grpc.StatusCode.INTERNAL, "the stream failed in the gateway", ())
            error = render.from_abort(internal).body["error"]
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        self.subscriptions.pop(id_, None)
        await self._send(proto.finished(id_) if error is None else proto.ended(id_, error))

    async def _send(self, frame: str) -> None:
        if self._slow:
            return
        try:
            async with asyncio.timeout(self.slow_write_s):
                await self.ws.send_str(frame)
        except TimeoutError:
            self._slow = True  # run() closes the socket
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.close(code=1008, message=b"the client did not read in time")
        except (ConnectionError, RuntimeError):
            pass  # the client is gone: run() ends with the socket

    @staticmethod
    def _error(failure: RpcFailure) -> dict[str, Any]:
        error: dict[str, Any] = render.from_failure(failure).body["error"]
        return error


def _failure(code: str, message: str) -> RpcFailure:
    return RpcFailure(Origin.GATEWAY, code, message)


def method_table(routes: list[Route] | tuple[Route, ...]) -> dict[str, Route]:
    """``package.Service/Method`` -> its route (the first binding of each RPC)."""
    out: dict[str, Route] = {}
    for route in routes:
        out.setdefault(f"{route.service}/{route.method}", route)
    return out
