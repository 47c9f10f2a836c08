"""The plantd.v1.StateService servicer: each unary RPC is one org.plantd.State request;
``WatchEntries`` follows the state bus (:mod:`.watch`).

Per call, inside the handler (no interceptor: re-wrapping handlers per call measured 14%):
read ``authorization`` and ``x-request-id``, verify the token offline, build the state
request (:mod:`.state_map`) with the token and request id in its body, wait for the bus at
most the call's remaining deadline, convert the reply, count the call by method and code.
Every call shares the gateway's one bus client (a bounded pool of DEALERs, each reused for
request after request), so no call opens a socket of its own.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Final, Protocol

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

from plantd.api.errors import Origin
from plantd.bus import BusMessage
from plantd.common import contract
from plantd.gateway.auth import REQUEST_ID, Authenticator, read_metadata
from plantd.gateway.errors import bus_timeout, deadline_passed, from_bus, grpc_status
from plantd.gateway.state_map import METHODS, Json, Method, RpcFailure, envelope_data
from plantd.gateway.watch import Watch
from plantd.mdp.errors import BrokerError, ClientClosed, RequestTimeout
from plantd.v1 import state_pb2 as pb
from plantd.v1 import state_pb2_grpc

SERVICE_NAME: Final = pb.DESCRIPTOR.services_by_name["StateService"].full_name
_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)

Context = grpc.aio.ServicerContext[Any, Any]


class Bus(Protocol):
    async def request(
        self,
        service: bytes | str,
        *body: bytes | str,
        timeout: float | None = None,  # noqa: ASYNC109 - the MDP wait, from the deadline
        idempotent: bool = False,
    ) -> list[bytes]: ...


class Subscription(Protocol):
    async def recv(self) -> BusMessage: ...

    def close(self) -> None: ...


class RpcMetrics:
    """go-grpc-prometheus names, so existing dashboards fit; label children cached."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.handled = Counter(
            "grpc_server_handled",
            "RPCs completed by service, method and gRPC status code",
            ["grpc_service", "grpc_method", "grpc_type", "grpc_code"],
            registry=registry,
        )
        self.seconds = Histogram(
            "grpc_server_handling_seconds",
            "Time from receiving an RPC to its answer (bus round trip included)",
            ["grpc_service", "grpc_method", "grpc_type"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self._counts: dict[tuple[str, grpc.StatusCode], Any] = {}
        self._times: dict[str, Any] = {}

    def done(self, method: str, code: grpc.StatusCode, seconds: float, kind: str = "unary") -> None:
        child = self._counts.get((method, code))
        if child is None:
            child = self.handled.labels(SERVICE_NAME, method, kind, code.name)
            self._counts[(method, code)] = child
        child.inc()
        timer = self._times.get(method)
        if timer is None:
            timer = self._times[method] = self.seconds.labels(SERVICE_NAME, method, kind)
        timer.observe(seconds)


class StateServicer(state_pb2_grpc.StateServiceServicer):
    def __init__(
        self,
        bus: Bus,
        auth: Authenticator,
        metrics: RpcMetrics,
        *,
        default_timeout_s: float,
        max_timeout_s: float,
        service: str = contract.SERVICE_STATE,
        subscribe: Callable[[str], Subscription] | None = None,
        resync_s: float = 1.0,
    ) -> None:
        self.bus = bus
        self.auth = auth
        self.metrics = metrics
        self.default_timeout_s = default_timeout_s
        self.max_timeout_s = max_timeout_s
        self.service = service
        self.subscribe = subscribe  # scope -> a subscription to its topic on the state bus
        self.resync_s = resync_s

    async def _request(
        self, operation: str, body: Json, token: str | None, request_id: str | None, wait: float
    ) -> Json:
        """One state request with the caller's token and request id: the reply's data."""
        if wait <= 0:
            raise deadline_passed()
        if token:
            body["token"] = token
        if request_id:
            body["request_id"] = request_id  # unknown keys are ignored by every state worker
        try:
            frames = await self.bus.request(
                self.service, operation, json.dumps(body, separators=(",", ":")), timeout=wait
            )
        except (RequestTimeout, BrokerError, ClientClosed) as exc:
            raise from_bus(exc, self.service) from None
        return envelope_data(frames)

    def _wait(self, context: Context) -> float:
        return bus_timeout(context.time_remaining(), self.default_timeout_s, self.max_timeout_s)

    @staticmethod
    async def _abort(context: Context, failure: RpcFailure, request_id: str | None) -> None:
        _, status = grpc_status(failure)
        trailer = tuple(status.trailing_metadata)
        if request_id:
            trailer += ((REQUEST_ID, request_id),)
        await context.abort(status.code, status.details, trailer)

    async def _unary(self, method: Method, request: Any, context: Context) -> Any:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        request_id: str | None = None
        try:
            token, request_id = read_metadata(context.invocation_metadata())
            self.auth.check(token)  # a bad token costs no bus round trip
            operation, body = method.build(request)
            data = await self._request(operation, body, token, request_id, self._wait(context))
            response = method.convert(request, data)
            if request_id:
                context.set_trailing_metadata(((REQUEST_ID, request_id),))
            return response
        except RpcFailure as failure:
            code = grpc_status(failure)[0]
            await self._abort(context, failure, request_id)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED  # the client went away; its reply is dropped
            raise
        finally:
            self.metrics.done(method.name, code, time.perf_counter() - started)

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
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        request_id: str | None = None
        sub: Subscription | None = None
        try:
            token, request_id = read_metadata(context.invocation_metadata())
            self.auth.check(token)
            if self.subscribe is None:
                raise RpcFailure(
                    Origin.STATE,
                    "UNKNOWN_OPERATION",
                    "this gateway has no state bus to watch (set --state-sub-endpoint)",
                )
            sub = self.subscribe(request.scope)  # before the start point: no event is lost

            async def call(operation: str, body: Json) -> Json:
                wait = min(self.default_timeout_s, self.max_timeout_s)
                return await self._request(operation, body, token, request_id, wait)

            watch = Watch(
                request, call, sub, recheck=lambda: self.auth.check(token), resync_s=self.resync_s
            )
            async for response in watch.responses():
                yield response
        except RpcFailure as failure:
            code = grpc_status(failure)[0]
            await self._abort(context, failure, request_id)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED  # clean up in finally and re-raise (grpc#43360)
            raise
        finally:
            if sub is not None:
                sub.close()
            self.metrics.done("WatchEntries", code, time.perf_counter() - started, "server_stream")


_M: Final = METHODS
