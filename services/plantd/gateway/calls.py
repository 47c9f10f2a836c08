"""What every RPC of every plantd.v1 servicer does around its own work: :class:`CallGate`.

Per call, inside the handler (no interceptor: re-wrapping handlers per call measured 14%):

1. read the metadata: ``authorization``, ``x-request-id``, ``traceparent`` (:mod:`.auth`);
2. verify the token offline (a bad one costs no bus round trip) and check it is meant for the
   service it will be forwarded to (its ``aud``);
3. take one token from the caller's rate-limit buckets (per token subject and per source
   address, :class:`Limiter`); an empty bucket is RESOURCE_EXHAUSTED with ``retry-after``;
4. run the servicer's own work with the :class:`Caller`;
5. turn an :class:`RpcFailure` into a ``google.rpc.Status`` (:mod:`.errors`), echo the request
   id in the trailers, count the call by service, method and code (:class:`RpcMetrics`).

The REST edge calls the same servicer coroutines with a context of its own
(``plantd.gateway.rest``), so everything here holds for REST, SSE and WebSocket calls too.
The context is used only through :class:`CallContext`: ``invocation_metadata``,
``time_remaining``, ``peer``, ``abort``, ``set_trailing_metadata``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, NoReturn, Protocol, TypeVar

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

from plantd.api.errors import GatewayCode, Origin
from plantd.common.auth import Claims
from plantd.gateway.auth import REQUEST_ID, Authenticator, CallMetadata, read_call_metadata
from plantd.gateway.errors import (
    bus_timeout,
    deadline_passed,
    from_bus,
    grpc_status,
    retry_seconds,
)
from plantd.gateway.state_map import Json, RpcFailure
from plantd.mdp.client import StreamPart
from plantd.mdp.errors import BrokerError, ClientClosed, RequestTimeout

R = TypeVar("R")
_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


class RouteClass(StrEnum):
    """What a call does, for rate limits: reads, writes, generic bus calls, logins, streams."""

    READ = "read"
    WRITE = "write"
    CALL = "call"
    LOGIN = "login"
    STREAM = "stream"


class CallContext(Protocol):
    """The part of ``grpc.aio.ServicerContext`` the servicers use (the REST edge's too)."""

    def invocation_metadata(self) -> grpc.aio.Metadata | None: ...

    def time_remaining(self) -> float | None: ...

    def peer(self) -> str: ...

    async def abort(
        self,
        code: grpc.StatusCode,
        details: str = "",
        trailing_metadata: Sequence[tuple[str, str | bytes]] = (),
    ) -> NoReturn: ...

    def set_trailing_metadata(
        self, trailing_metadata: Sequence[tuple[str, str | bytes]]
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class Decision:
    """A rate limiter's answer: allowed, or how long until a token is back."""

    allowed: bool
    retry_after_s: float = 0.0
    limit: str = ""  # which bucket said no, e.g. "sub" or "source" (for the error and metrics)


class Limiter(Protocol):
    """Token buckets keyed by subject and source address (``plantd.gateway.ratelimit``)."""

    async def check(self, subject: str | None, source: str, route: RouteClass) -> Decision: ...


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling, as far as the gateway knows after the gate."""

    token: str | None  # forwarded to services that authorize (state, identity)
    claims: Claims | None  # None with --auth off, or for calls that need no token (login)
    request_id: str | None
    traceparent: str | None
    source: str  # the client's address (the peer, or the REST edge's trusted forwarded one)

    def allows(self, permission: str) -> bool:
        """The verified token holds ``permission`` (always true with --auth off)."""
        return self.claims is None or self.claims.allows(permission)

    def bus_fields(self, body: Json) -> Json:
        """``body`` with the caller's token, request id and traceparent, for a JSON bus
        request (unknown keys are ignored by every plantd worker)."""
        if self.token:
            body["token"] = self.token
        if self.request_id:
            body["request_id"] = self.request_id
        if self.traceparent:
            body["traceparent"] = self.traceparent
        return body


def source_of(peer: str) -> str:
    """The address part of a gRPC peer string (``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5``,
    ``unix:/path``): the rate-limit key for the source."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    if kind == "ipv6":
        host = rest.rpartition(":")[0] or rest
        return host.strip("[]")
    return peer or "unknown"


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
        self.limited = Counter(
            "plantd_gateway_rate_limited",
            "Calls refused by the gateway's rate limits, by the bucket that was empty",
            ["bucket"],
            registry=registry,
        )
        self._counts: dict[tuple[str, str, grpc.StatusCode], Any] = {}
        self._times: dict[tuple[str, str], Any] = {}

    def done(
        self,
        service: str,
        method: str,
        code: grpc.StatusCode,
        seconds: float,
        kind: str = "unary",
    ) -> None:
        child = self._counts.get((service, method, code))
        if child is None:
            child = self.handled.labels(service, method, kind, code.name)
            self._counts[(service, method, code)] = child
        child.inc()
        timer = self._times.get((service, method))
        if timer is None:
            timer = self._times[(service, method)] = self.seconds.labels(service, method, kind)
        timer.observe(seconds)


class Bus(Protocol):
    """The gateway's bus client, as the typed servicers use it (``plantd.mdp.AsyncClient``)."""

    async def request(
        self,
        service: bytes | str,
        *body: bytes | str,
        timeout: float | None = None,  # noqa: ASYNC109 - the MDP wait, from the deadline
        idempotent: bool = False,
    ) -> list[bytes]: ...


class StreamBus(Bus, Protocol):
    """And with streamed replies, as BusService uses it."""

    def stream_parts(
        self,
        service: bytes | str,
        *body: bytes | str,
        timeout: float | None = None,
    ) -> AsyncIterator[StreamPart]: ...


class StreamSlots:
    """Open server streams, per subject and in all: a cap on each (TOO_MANY_STREAMS).

    A stream holds its slot from the gate to its end, whatever ends it (cancellation too)."""

    def __init__(self, per_subject: int, total: int) -> None:
        self.per_subject = per_subject
        self.total = total
        self.open = 0
        self._by_subject: dict[str, int] = {}

    def take(self, subject: str | None) -> str:
        """Take a slot for ``subject`` (None: the anonymous pool, with --auth off); the key to
        :meth:`release`. RpcFailure when a cap is reached."""
        key = subject if subject is not None else ""
        held = self._by_subject.get(key, 0)
        if self.open >= self.total or held >= self.per_subject:
            which = "the gateway's" if self.open >= self.total else "this subject's"
            cap = self.total if self.open >= self.total else self.per_subject
            raise RpcFailure(
                Origin.GATEWAY,
                GatewayCode.TOO_MANY_STREAMS,
                f"{which} open streams are at the cap ({cap}): close one, or watch several "
                "keys on one stream (key_prefix)",
            )
        self._by_subject[key] = held + 1
        self.open += 1
        return key

    def release(self, key: str) -> None:
        held = self._by_subject.get(key, 0) - 1
        if held > 0:
            self._by_subject[key] = held
        else:
            self._by_subject.pop(key, None)
        self.open -= 1


class CallGate:
    """Authentication, audience, rate limit, deadline, errors and metrics for every call."""

    def __init__(
        self,
        auth: Authenticator,
        metrics: RpcMetrics,
        *,
        default_timeout_s: float,
        max_timeout_s: float,
        limiter: Limiter | None = None,
        streams: StreamSlots | None = None,
    ) -> None:
        self.auth = auth
        self.metrics = metrics
        self.default_timeout_s = default_timeout_s
        self.max_timeout_s = max_timeout_s
        self.limiter = limiter
        self.streams = streams if streams is not None else StreamSlots(100, 10_000)

    # ---- the steps ------------------------------------------------------------------------------

    async def enter(
        self,
        context: CallContext,
        *,
        audience: str | None,
        route: RouteClass,
        token_required: bool = True,
        meta: CallMetadata | None = None,
    ) -> Caller:
        """Steps 1-3: the caller, verified and within its rate limits; RpcFailure if not.

        ``meta``: the call's metadata when the caller has read it already."""
        if meta is None:
            meta = read_call_metadata(context.invocation_metadata())
        meta.check_authorization()
        claims: Claims | None = None
        if token_required or meta.token:
            claims = self.auth.check(meta.token, audience)
        caller = Caller(
            token=meta.token,
            claims=claims,
            request_id=meta.request_id,
            traceparent=meta.traceparent,
            source=source_of(context.peer()),
        )
        if self.limiter is not None:
            subject = claims.subject if claims is not None else None
            decision = await self.limiter.check(subject, caller.source, route)
            if not decision.allowed:
                self.metrics.limited.labels(decision.limit or "unknown").inc()
                raise rate_limited(decision)
        return caller

    def wait(self, context: CallContext) -> float:
        """How long this call may wait for the bus (its deadline, capped)."""
        return bus_timeout(context.time_remaining(), self.default_timeout_s, self.max_timeout_s)

    @staticmethod
    async def abort(context: CallContext, failure: RpcFailure, request_id: str | None) -> NoReturn:
        _, status = grpc_status(failure)
        trailer = tuple(status.trailing_metadata)
        if request_id:
            trailer += ((REQUEST_ID, request_id),)
        await context.abort(status.code, status.details, trailer)
        raise AssertionError("context.abort returned")  # pragma: no cover - it always raises

    # ---- whole calls ----------------------------------------------------------------------------

    async def unary(
        self,
        context: CallContext,
        service: str,
        method: str,
        work: Callable[[Caller], Awaitable[R]],
        *,
        audience: str | None,
        route: RouteClass,
        token_required: bool = True,
    ) -> R:
        """One unary call: the gate, then ``work(caller)``, errors and metrics."""
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        request_id: str | None = None
        try:
            meta = read_call_metadata(context.invocation_metadata())
            request_id = meta.request_id  # echoed on refusals too
            caller = await self.enter(
                context, audience=audience, route=route, token_required=token_required, meta=meta
            )
            response = await work(caller)
            if request_id:
                context.set_trailing_metadata(((REQUEST_ID, request_id),))
            return response
        except RpcFailure as failure:
            code = grpc_status(failure)[0]
            await self.abort(context, failure, request_id)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED  # the client went away; its reply is dropped
            raise
        finally:
            self.metrics.done(service, method, code, time.perf_counter() - started)

    async def stream(
        self,
        context: CallContext,
        service: str,
        method: str,
        work: Callable[[Caller], AsyncIterator[R]],
        *,
        audience: str | None,
        route: RouteClass = RouteClass.STREAM,
    ) -> AsyncIterator[R]:
        """One server-streaming call: the gate, then every message ``work(caller)`` yields."""
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        request_id: str | None = None
        slot: str | None = None
        try:
            meta = read_call_metadata(context.invocation_metadata())
            request_id = meta.request_id
            caller = await self.enter(context, audience=audience, route=route, meta=meta)
            slot = self.streams.take(caller.claims.subject if caller.claims else None)
            async for response in work(caller):
                yield response
        except RpcFailure as failure:
            code = grpc_status(failure)[0]
            await self.abort(context, failure, request_id)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED  # clean up in finally and re-raise (grpc#43360)
            raise
        finally:
            if slot is not None:
                self.streams.release(slot)
            self.metrics.done(service, method, code, time.perf_counter() - started, "server_stream")


async def json_request(
    bus: Bus,
    service: str,
    frames: Sequence[str],
    body: Json,
    caller: Caller,
    wait: float,
) -> list[bytes]:
    """One bus request ``[service, *frames, json(body + caller fields)]``: the reply frames.

    ``wait`` <= 0 (the deadline has passed) sends nothing; bus errors become RpcFailure."""
    if wait <= 0:
        raise deadline_passed()
    payload = json.dumps(caller.bus_fields(body), separators=(",", ":"))
    try:
        return await bus.request(service, *frames, payload, timeout=wait)
    except (RequestTimeout, BrokerError, ClientClosed) as exc:
        raise from_bus(exc, service) from None


def rate_limited(decision: Decision) -> RpcFailure:
    """RESOURCE_EXHAUSTED with ``retry-after`` (whole seconds, at least 1) in the metadata; the
    REST edge turns it into HTTP 429 with a ``Retry-After`` header."""
    retry = retry_seconds(decision.retry_after_s)
    return RpcFailure(
        Origin.GATEWAY,
        GatewayCode.RATE_LIMITED,
        f"too many calls ({decision.limit or 'rate'} limit): retry in {retry} s",
        {"retry_after_s": str(retry), "bucket": decision.limit},
    )


def permission_denied(permission: str, what: str) -> RpcFailure:
    """The gateway's own authorization said no (generic bus calls, publish, subscribe)."""
    return RpcFailure(
        Origin.GATEWAY,
        GatewayCode.PERMISSION_DENIED,
        f"{what} needs the permission {permission!r}, which the token does not hold",
        {"permission": permission},
    )
