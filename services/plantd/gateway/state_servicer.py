"""The plantd.v1.StateService servicer: each unary RPC is one org.plantd.State request;
``WatchEntries`` follows the state bus (:mod:`.watch`).

Every call goes through the shared :class:`~plantd.gateway.calls.CallGate` (token verified
offline for state's audience, rate limits, deadline, errors, metrics); the token, request id
and traceparent go into the state request's body, where state authorizes. Every call shares the
gateway's one bus client (a bounded pool of DEALERs, each reused for request after request), so
no call opens a socket of its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Final, Protocol

import grpc

from plantd.api.errors import Origin
from plantd.bus import BusMessage
from plantd.common import contract
from plantd.gateway.calls import Bus, Caller, CallGate, RouteClass, json_request
from plantd.gateway.state_map import METHODS, Json, Method, RpcFailure, envelope_data
from plantd.gateway.watch import Watch
from plantd.v1 import state_pb2 as pb
from plantd.v1 import state_pb2_grpc

SERVICE_NAME: Final = pb.DESCRIPTOR.services_by_name["StateService"].full_name

# The generated base's context type; the REST edge passes its own CallContext.
Context = grpc.aio.ServicerContext[Any, Any]

# Which rate-limit class each unary RPC draws from.
_WRITES: Final = frozenset(
    {
        "CreateScope",
        "DeleteScope",
        "SetEntry",
        "DeleteEntry",
        "BatchSetEntries",
        "BatchDeleteEntries",
    }
)


class Subscription(Protocol):
    async def recv(self) -> BusMessage: ...

    def close(self) -> None: ...


class StateServicer(state_pb2_grpc.StateServiceServicer):
    def __init__(
        self,
        bus: Bus,
        gate: CallGate,
        *,
        service: str = contract.SERVICE_STATE,
        subscribe: Callable[[str], Subscription] | None = None,
        resync_s: float = 1.0,
    ) -> None:
        self.bus = bus
        self.gate = gate
        self.service = service
        self.subscribe = subscribe  # scope -> a subscription to its topic on the state bus
        self.resync_s = resync_s

    async def _request(self, operation: str, body: Json, caller: Caller, wait: float) -> Json:
        """One state request with the caller's token, request id and traceparent: the data."""
        frames = await json_request(self.bus, self.service, (operation,), body, caller, wait)
        return envelope_data(frames)

    async def _unary(self, method: Method, request: Any, context: Context) -> Any:
        async def work(caller: Caller) -> Any:
            operation, body = method.build(request)
            data = await self._request(operation, body, caller, self.gate.wait(context))
            return method.convert(request, data)

        route = RouteClass.WRITE if method.name in _WRITES else RouteClass.READ
        return await self.gate.unary(
            context, SERVICE_NAME, method.name, work, audience=self.service, route=route
        )

    # The RPCs, named as the generated servicer names them.

    async def CreateScope(
        self, request: pb.CreateScopeRequest, context: Context
    ) -> pb.CreateScopeResponse:
        r: pb.CreateScopeResponse = await self._unary(_M["CreateScope"], request, context)
        return r

    async def DeleteScope(
        self, request: pb.DeleteScopeRequest, context: Context
    ) -> pb.DeleteScopeResponse:
        r: pb.DeleteScopeResponse = await self._unary(_M["DeleteScope"], request, context)
        return r

    async def ListScopes(
        self, request: pb.ListScopesRequest, context: Context
    ) -> pb.ListScopesResponse:
        r: pb.ListScopesResponse = await self._unary(_M["ListScopes"], request, context)
        return r

    async def GetEntry(self, request: pb.GetEntryRequest, context: Context) -> pb.GetEntryResponse:
        r: pb.GetEntryResponse = await self._unary(_M["GetEntry"], request, context)
        return r

    async def SetEntry(self, request: pb.SetEntryRequest, context: Context) -> pb.SetEntryResponse:
        r: pb.SetEntryResponse = await self._unary(_M["SetEntry"], request, context)
        return r

    async def DeleteEntry(
        self, request: pb.DeleteEntryRequest, context: Context
    ) -> pb.DeleteEntryResponse:
        r: pb.DeleteEntryResponse = await self._unary(_M["DeleteEntry"], request, context)
        return r

    async def BatchGetEntries(
        self, request: pb.BatchGetEntriesRequest, context: Context
    ) -> pb.BatchGetEntriesResponse:
        r: pb.BatchGetEntriesResponse = await self._unary(_M["BatchGetEntries"], request, context)
        return r

    async def BatchSetEntries(
        self, request: pb.BatchSetEntriesRequest, context: Context
    ) -> pb.BatchSetEntriesResponse:
        r: pb.BatchSetEntriesResponse = await self._unary(_M["BatchSetEntries"], request, context)
        return r

    async def BatchDeleteEntries(
        self, request: pb.BatchDeleteEntriesRequest, context: Context
    ) -> pb.BatchDeleteEntriesResponse:
        r: pb.BatchDeleteEntriesResponse = await self._unary(
            _M["BatchDeleteEntries"], request, context
        )
        return r

    async def ListKeys(self, request: pb.ListKeysRequest, context: Context) -> pb.ListKeysResponse:
        r: pb.ListKeysResponse = await self._unary(_M["ListKeys"], request, context)
        return r

    async def GetSnapshot(
        self, request: pb.GetSnapshotRequest, context: Context
    ) -> pb.GetSnapshotResponse:
        r: pb.GetSnapshotResponse = await self._unary(_M["GetSnapshot"], request, context)
        return r

    async def ListChanges(
        self, request: pb.ListChangesRequest, context: Context
    ) -> pb.ListChangesResponse:
        r: pb.ListChangesResponse = await self._unary(_M["ListChanges"], request, context)
        return r

    async def WatchEntries(
        self, request: pb.WatchEntriesRequest, context: Context
    ) -> AsyncIterator[pb.WatchEntriesResponse]:
        # An async generator itself: grpc.aio tells streaming handlers by that.
        async def work(caller: Caller) -> AsyncIterator[pb.WatchEntriesResponse]:
            if self.subscribe is None:
                raise RpcFailure(
                    Origin.STATE,
                    "UNKNOWN_OPERATION",
                    "this gateway has no state bus to watch (set --state-sub-endpoint)",
                )
            sub = self.subscribe(request.scope)  # before the start point: no event is lost
            try:

                async def call(operation: str, body: Json) -> Json:
                    wait = self.gate.default_timeout_s
                    return await self._request(operation, body, caller, wait)

                def recheck() -> None:
                    self.gate.auth.check(caller.token, self.service)

                # The REST edge's WebSocket offers a synchronous sink for live events (watch.py
                # Watch._direct); gRPC's context has none.
                sink = getattr(context, "stream_sink", None)
                watch = Watch(
                    request, call, sub, recheck=recheck, resync_s=self.resync_s, sink=sink
                )
                async for response in watch.responses():
                    yield response
            finally:
                sub.close()

        stream = self.gate.stream(
            context, SERVICE_NAME, "WatchEntries", work, audience=self.service
        )
        async for response in stream:
            yield response


_M: Final = METHODS
