"""The plantd.v1.BusService servicer: generic MDP calls, the broker's directory, the buses.

Every RPC goes through the :class:`~plantd.gateway.calls.CallGate` with the bus's audience
(:data:`plantd.common.contract.AUDIENCE_BUS`) and is authorized here (:mod:`.bus_map` holds the
rules): the worker behind a generic call, and the buses, see the gateway's CURVE key, so the
gateway is the one that can tell users apart. Calls share the gateway's bus client (no socket
per call); Subscribe opens one SUB socket per stream, bounded by the gate's stream caps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Final, Protocol

import grpc
from google.rpc import status_pb2

from plantd.api.errors import Origin, status_for
from plantd.common import contract
from plantd.gateway.bus_map import (
    SERVICES_READ,
    batching,
    bus_name,
    call_permission,
    check_frames,
    check_publish,
    check_service,
    check_topic_prefixes,
    invalid,
    publish_permission,
    service_available,
    service_names,
    services_page,
    subscribe_permission,
)
from plantd.gateway.bus_relay import Relay, Subscription
from plantd.gateway.calls import (
    Caller,
    CallGate,
    RouteClass,
    StreamBus,
    permission_denied,
    rate_limited,
)
from plantd.gateway.errors import deadline_passed, from_bus
from plantd.gateway.state_map import RpcFailure
from plantd.mdp.errors import BrokerError, ClientClosed, ErrorCode, RequestTimeout
from plantd.v1 import bus_pb2 as pb
from plantd.v1 import bus_pb2_grpc

SERVICE_NAME: Final = pb.DESCRIPTOR.services_by_name["BusService"].full_name
AUDIENCE: Final = contract.AUDIENCE_BUS

Context = grpc.aio.ServicerContext[Any, Any]
_BUS_ERRORS: Final = (RequestTimeout, BrokerError, ClientClosed)


class Publish(Protocol):
    def publish(self, topic: str | bytes, payload: bytes) -> None: ...


def _too_large(service: str, limit: int) -> RpcFailure:
    return RpcFailure(
        Origin.BUS,
        ErrorCode.MESSAGE_TOO_LARGE,
        f"{service}'s reply is over the gateway's {limit} bytes: use StreamCall, which sends "
        "each part as it comes",
    )


def result_status(failure: RpcFailure) -> status_pb2.Status:
    """One failed call of a batch as the google.rpc.Status a unary Call would have sent."""
    _, status = status_for(failure.origin, failure.code, failure.message, failure.metadata)
    return status


class BusServicer(bus_pb2_grpc.BusServiceServicer):
    def __init__(
        self,
        bus: StreamBus,
        gate: CallGate,
        *,
        subscribe: Callable[[str, tuple[bytes, ...]], Subscription] | None = None,
        publishers: dict[str, Publish] | None = None,
        max_reply_bytes: int = 4 * 1024 * 1024,
        max_batch_calls: int = 1000,
        batch_concurrency: int = 32,
        buffer_messages: int = 10_000,
        buffer_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self.bus = bus
        self.gate = gate
        self.subscribe = subscribe  # (bus, prefixes) -> a SUB on that bus
        self.publishers = publishers or {}
        self.max_reply_bytes = max_reply_bytes
        self.max_batch_calls = max_batch_calls
        self.batch_concurrency = batch_concurrency
        self.buffer_messages = buffer_messages
        self.buffer_bytes = buffer_bytes

    @staticmethod
    def _require(caller: Caller, permission: str, what: str) -> None:
        if not caller.allows(permission):
            raise permission_denied(permission, what)

    async def _call(self, caller: Caller, request: pb.CallRequest, wait: float) -> pb.CallResponse:
        """One generic call, authorized, its reply gathered within the byte budget."""
        service = check_service(request.service)
        self._require(caller, call_permission(service), f"calling {service}")
        frames = check_frames(request.frames)
        if wait <= 0:
            raise deadline_passed()
        response = pb.CallResponse()
        size = 0
        try:
            async for part in self.bus.stream_parts(service, *frames, timeout=wait):
                size += sum(len(f) for f in part.frames) + 8 * len(part.frames)
                if size > self.max_reply_bytes:
                    raise _too_large(service, self.max_reply_bytes)
                if part.final:
                    response.frames.extend(part.frames)
                else:
                    response.partials.add().frames.extend(part.frames)
        except _BUS_ERRORS as exc:
            raise from_bus(exc, service) from None
        return response

    async def Call(self, request: pb.CallRequest, context: Context) -> pb.CallResponse:
        async def work(caller: Caller) -> pb.CallResponse:
            return await self._call(caller, request, self.gate.wait(context))

        return await self.gate.unary(
            context, SERVICE_NAME, "Call", work, audience=AUDIENCE, route=RouteClass.CALL
        )

    async def StreamCall(
        self, request: pb.StreamCallRequest, context: Context
    ) -> AsyncIterator[pb.StreamCallResponse]:
        async def work(caller: Caller) -> AsyncIterator[pb.StreamCallResponse]:
            service = check_service(request.service)
            self._require(caller, call_permission(service), f"calling {service}")
            frames = check_frames(request.frames)
            wait = self.gate.wait(context)
            if wait <= 0:
                raise deadline_passed()
            try:
                async for part in self.bus.stream_parts(service, *frames, timeout=wait):
                    yield pb.StreamCallResponse(frames=part.frames, final=part.final)
            except _BUS_ERRORS as exc:
                raise from_bus(exc, service) from None

        stream = self.gate.stream(
            context, SERVICE_NAME, "StreamCall", work, audience=AUDIENCE, route=RouteClass.CALL
        )
        async for response in stream:
            yield response

    async def BatchCall(
        self, request: pb.BatchCallRequest, context: Context
    ) -> pb.BatchCallResponse:
        async def work(caller: Caller) -> pb.BatchCallResponse:
            calls = request.calls
            if not calls:
                raise invalid("calls is empty: send at least one call", "calls")
            if len(calls) > self.max_batch_calls:
                raise invalid(
                    f"{len(calls)} calls; the most in one batch is {self.max_batch_calls}",
                    "calls",
                )
            wait = self.gate.wait(context)
            slots = asyncio.Semaphore(self.batch_concurrency)
            budget = self.max_reply_bytes  # all the batch's replies together

            async def one(index: int, call: pb.CallRequest) -> pb.CallResult:
                nonlocal budget
                async with slots:
                    try:
                        if index > 0:  # the gate took the first call's token
                            await self._take_token(caller)
                        reply = await self._call(caller, call, wait)
                    except RpcFailure as failure:
                        return pb.CallResult(status=result_status(failure))
                size = reply.ByteSize()
                if size > budget:
                    return pb.CallResult(status=result_status(_too_large(call.service, 0)))
                budget -= size
                return pb.CallResult(status=status_pb2.Status(code=0), response=reply)

            results = await asyncio.gather(*(one(i, c) for i, c in enumerate(calls)))
            return pb.BatchCallResponse(results=results)

        return await self.gate.unary(
            context, SERVICE_NAME, "BatchCall", work, audience=AUDIENCE, route=RouteClass.CALL
        )

    async def _take_token(self, caller: Caller) -> None:
        """Each call of a batch costs a rate-limit token, as it would alone; one whose bucket
        is empty fails with RATE_LIMITED in its own result."""
        limiter = self.gate.limiter
        if limiter is None:
            return
        subject = caller.claims.subject if caller.claims is not None else None
        decision = await limiter.check(subject, caller.source, RouteClass.CALL)
        if not decision.allowed:
            raise rate_limited(decision)

    async def GetService(
        self, request: pb.GetServiceRequest, context: Context
    ) -> pb.GetServiceResponse:
        async def work(caller: Caller) -> pb.GetServiceResponse:
            self._require(caller, SERVICES_READ, "reading the service directory")
            name = request.service
            if not name or len(name) > 255 or not name.isascii():
                raise invalid("service must be 1-255 ASCII characters", "service")
            reply = await self._mmi(context, "mmi.service", name)
            return pb.GetServiceResponse(service=name, available=service_available(reply))

        return await self.gate.unary(
            context, SERVICE_NAME, "GetService", work, audience=AUDIENCE, route=RouteClass.READ
        )

    async def ListServices(
        self, request: pb.ListServicesRequest, context: Context
    ) -> pb.ListServicesResponse:
        async def work(caller: Caller) -> pb.ListServicesResponse:
            self._require(caller, SERVICES_READ, "reading the service directory")
            reply = await self._mmi(context, "mmi.services")
            return services_page(service_names(reply), request)

        return await self.gate.unary(
            context, SERVICE_NAME, "ListServices", work, audience=AUDIENCE, route=RouteClass.READ
        )

    async def _mmi(self, context: Context, name: str, *args: str) -> Sequence[bytes]:
        wait = self.gate.wait(context)
        if wait <= 0:
            raise deadline_passed()
        try:
            return await self.bus.request(name, *args, timeout=wait, idempotent=True)
        except _BUS_ERRORS as exc:
            raise from_bus(exc, name) from None

    async def Subscribe(
        self, request: pb.SubscribeRequest, context: Context
    ) -> AsyncIterator[pb.SubscribeResponse]:
        async def work(caller: Caller) -> AsyncIterator[pb.SubscribeResponse]:
            bus = bus_name(request.bus)
            self._require(caller, subscribe_permission(bus), f"subscribing to the {bus} bus")
            prefixes = check_topic_prefixes(request.topic_prefixes)
            size, delay = batching(request)
            if self.subscribe is None:
                raise invalid("this gateway has no bus endpoints to subscribe to", "bus")
            sub = self.subscribe(bus, prefixes)
            try:

                def recheck() -> None:
                    self.gate.auth.check(caller.token, AUDIENCE)

                relay = Relay(
                    sub,
                    max_batch=size,
                    max_delay_s=delay,
                    buffer_messages=self.buffer_messages,
                    buffer_bytes=self.buffer_bytes,
                    recheck=recheck,
                )
                async for response in relay.responses():
                    yield response
            finally:
                sub.close()

        stream = self.gate.stream(context, SERVICE_NAME, "Subscribe", work, audience=AUDIENCE)
        async for response in stream:
            yield response

    async def Publish(self, request: pb.PublishRequest, context: Context) -> pb.PublishResponse:
        async def work(caller: Caller) -> pb.PublishResponse:
            bus = bus_name(request.bus)
            self._require(caller, publish_permission(bus), f"publishing on the {bus} bus")
            topic, payload = check_publish(bus, request.topic, request.frames)
            publisher = self.publishers.get(bus)
            if publisher is None:
                raise invalid(f"this gateway has no {bus} bus endpoint to publish to", "bus")
            publisher.publish(topic, payload)
            return pb.PublishResponse()

        return await self.gate.unary(
            context, SERVICE_NAME, "Publish", work, audience=AUDIENCE, route=RouteClass.WRITE
        )
