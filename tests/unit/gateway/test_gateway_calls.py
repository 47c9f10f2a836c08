"""The call gate without sockets: metadata (token, request id, traceparent), the per-service
audience check, the rate-limit hook, errors into the context's abort, metrics by service."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import grpc
import pytest
from prometheus_client import CollectorRegistry

from plantd.api.errors import GatewayCode, Origin
from plantd.common.auth import Verifier
from plantd.gateway.auth import Authenticator, read_call_metadata
from plantd.gateway.calls import (
    Caller,
    CallGate,
    Decision,
    RouteClass,
    RpcMetrics,
    StreamSlots,
    source_of,
)
from plantd.gateway.state_map import RpcFailure

pytestmark = pytest.mark.unit

TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str, trailer: Sequence[Any]) -> None:
        super().__init__(details)
        self.code, self.details, self.trailer = code, details, dict(trailer)


class FakeContext:
    def __init__(self, metadata: Sequence[tuple[str, str]], peer: str = "ipv4:10.1.2.3:5555"):
        self._metadata = grpc.aio.Metadata(*metadata)
        self._peer = peer
        self.trailers: Sequence[tuple[str, str | bytes]] = ()

    def invocation_metadata(self) -> grpc.aio.Metadata | None:
        return self._metadata

    def time_remaining(self) -> float | None:
        return None

    def peer(self) -> str:
        return self._peer

    async def abort(
        self,
        code: grpc.StatusCode,
        details: str = "",
        trailing_metadata: Sequence[tuple[str, str | bytes]] = (),
    ) -> NoReturn:
        raise Aborted(code, details, trailing_metadata)

    def set_trailing_metadata(self, trailing_metadata: Sequence[tuple[str, str | bytes]]) -> None:
        self.trailers = trailing_metadata


class CountingLimiter:
    def __init__(self, allow: int) -> None:
        self.allow = allow
        self.seen: list[tuple[str | None, str, RouteClass]] = []

    async def check(self, subject: str | None, source: str, route: RouteClass) -> Decision:
        self.seen.append((subject, source, route))
        if len(self.seen) > self.allow:
            return Decision(False, 2.2, "sub")
        return Decision(True)


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> tuple[Verifier, dict[str, str]]:
    from plantd.identity.keys import KeyRing, generate
    from plantd.identity.tokens import Issuer

    keys: Path = tmp_path_factory.mktemp("jwt")
    generate(keys)
    ring = KeyRing.from_dir(keys)
    issuer = Issuer(ring, issuer="plantd-identity", access_ttl_s=600)

    def token(audience: list[str]) -> str:
        return issuer.access(
            subject="7", audience=audience, now=time.time(), claims={"permissions": ["bus:call:x"]}
        ).token

    verifier = Verifier(
        issuer="plantd-identity",
        audience=["org.plantd.State", "org.plantd.Identity"],
        jwks=ring.jwks(),
    )
    return verifier, {
        "state": token(["org.plantd.State"]),
        "identity": token(["org.plantd.Identity"]),
    }


def gate(verifier: Verifier | None, limiter: CountingLimiter | None = None) -> CallGate:
    return CallGate(
        Authenticator(verifier),
        RpcMetrics(CollectorRegistry()),
        default_timeout_s=1.0,
        max_timeout_s=2.0,
        limiter=limiter,
    )


def test_metadata_keeps_a_well_formed_traceparent_only() -> None:
    meta = read_call_metadata(
        [("authorization", "Bearer t"), ("x-request-id", "r1"), ("traceparent", TRACE)]
    )
    assert (meta.token, meta.request_id, meta.traceparent) == ("t", "r1", TRACE)
    for bad in ("00-xyz", TRACE.upper(), TRACE + "-extra", ""):
        assert read_call_metadata([("traceparent", bad)]).traceparent is None


def test_caller_fields_go_into_the_bus_body() -> None:
    caller = Caller("tok", None, "r1", TRACE, "10.0.0.1")
    assert caller.bus_fields({"key": "k"}) == {
        "key": "k",
        "token": "tok",
        "request_id": "r1",
        "traceparent": TRACE,
    }
    assert Caller(None, None, None, None, "x").bus_fields({}) == {}


def test_source_of_peer_strings() -> None:
    assert source_of("ipv4:10.1.2.3:5555") == "10.1.2.3"
    assert source_of("ipv6:[2001:db8::1]:443") == "2001:db8::1"
    assert source_of("unix:/tmp/s") == "unix:/tmp/s"
    assert source_of("") == "unknown"


async def test_audience_of_the_target_service_is_required(
    tokens: tuple[Verifier, dict[str, str]],
) -> None:
    verifier, tok = tokens
    g = gate(verifier)

    async def work(caller: Caller) -> str:
        assert caller.claims is not None and caller.claims.subject == "7"
        return "done"

    ctx = FakeContext([("authorization", f"Bearer {tok['state']}"), ("x-request-id", "r9")])
    got = await g.unary(ctx, "svc", "M", work, audience="org.plantd.State", route=RouteClass.READ)
    assert got == "done" and ("x-request-id", "r9") in tuple(ctx.trailers)
    # An identity-only token is not replayed against state.
    ctx = FakeContext([("authorization", f"Bearer {tok['identity']}"), ("x-request-id", "r9")])
    with pytest.raises(Aborted) as err:
        await g.unary(ctx, "svc", "M", work, audience="org.plantd.State", route=RouteClass.READ)
    assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert "org.plantd.State" in err.value.details and "plant auth login" in err.value.details
    assert err.value.trailer["x-request-id"] == "r9"
    handled = g.metrics.handled.labels("svc", "M", "unary", "UNAUTHENTICATED")._value.get()
    assert handled == 1


async def test_login_needs_no_token_but_a_sent_one_must_verify(
    tokens: tuple[Verifier, dict[str, str]],
) -> None:
    verifier, _ = tokens
    g = gate(verifier)

    async def work(caller: Caller) -> Caller:
        return caller

    caller = await g.unary(
        FakeContext([]),
        "svc",
        "Login",
        work,
        audience=None,
        route=RouteClass.LOGIN,
        token_required=False,
    )
    assert caller.claims is None and caller.source == "10.1.2.3"
    with pytest.raises(Aborted) as err:
        await g.unary(
            FakeContext([("authorization", "Bearer a.b.c")]),
            "svc",
            "Login",
            work,
            audience=None,
            route=RouteClass.LOGIN,
            token_required=False,
        )
    assert err.value.code == grpc.StatusCode.UNAUTHENTICATED


async def test_an_empty_bucket_is_resource_exhausted_and_costs_no_work(
    tokens: tuple[Verifier, dict[str, str]],
) -> None:
    verifier, tok = tokens
    limiter = CountingLimiter(allow=1)
    g = gate(verifier, limiter)
    ran: list[int] = []

    async def work(caller: Caller) -> None:
        ran.append(1)

    md = [("authorization", f"Bearer {tok['state']}")]
    await g.unary(FakeContext(md), "svc", "M", work, audience=None, route=RouteClass.WRITE)
    with pytest.raises(Aborted) as err:
        await g.unary(FakeContext(md), "svc", "M", work, audience=None, route=RouteClass.WRITE)
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "retry in 3 s" in err.value.details  # 2.2 s rounded up to whole seconds
    assert ran == [1]
    assert limiter.seen[0] == ("7", "10.1.2.3", RouteClass.WRITE)
    assert g.metrics.limited.labels("sub")._value.get() == 1


async def test_a_failure_in_a_stream_aborts_with_its_status() -> None:
    g = gate(None)

    async def work(caller: Caller) -> AsyncIterator[int]:
        yield 1
        raise RpcFailure(Origin.GATEWAY, GatewayCode.SLOW_CONSUMER, "too slow")

    got: list[int] = []
    with pytest.raises(Aborted) as err:
        async for item in g.stream(FakeContext([]), "svc", "W", work, audience=None):
            got.append(item)
    assert got == [1] and err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    kind = g.metrics.handled.labels("svc", "W", "server_stream", "RESOURCE_EXHAUSTED")
    assert kind._value.get() == 1


async def test_auth_off_passes_no_claims() -> None:
    g = gate(None)

    async def work(caller: Caller) -> Caller:
        return caller

    caller = await g.unary(
        FakeContext([]), "svc", "M", work, audience="org.plantd.State", route=RouteClass.READ
    )
    assert caller.claims is None and caller.allows("anything")


async def test_a_malformed_authorization_is_refused_with_the_request_id(
    tokens: tuple[Verifier, dict[str, str]],
) -> None:
    verifier, _ = tokens

    async def work(caller: Caller) -> None:
        raise AssertionError("must not run")

    ctx = FakeContext([("authorization", "Basic eHl6"), ("x-request-id", "r5")])
    with pytest.raises(Aborted) as err:
        await gate(verifier).unary(ctx, "svc", "M", work, audience=None, route=RouteClass.READ)
    assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert "Bearer <token>" in err.value.details and err.value.trailer["x-request-id"] == "r5"


def test_stream_slots_cap_per_subject_and_in_all() -> None:
    slots = StreamSlots(per_subject=2, total=3)
    a1, a2 = slots.take("alice"), slots.take("alice")
    with pytest.raises(RpcFailure) as mine:
        slots.take("alice")
    assert mine.value.code == GatewayCode.TOO_MANY_STREAMS and "subject" in mine.value.message
    slots.take("bob")
    with pytest.raises(RpcFailure) as full:
        slots.take("carol")
    assert "gateway" in full.value.message
    slots.release(a1)
    slots.release(a2)
    assert slots.open == 1 and slots.take("carol") == "carol"


async def test_a_stream_frees_its_slot_however_it_ends() -> None:
    g = CallGate(
        Authenticator(None),
        RpcMetrics(CollectorRegistry()),
        default_timeout_s=1.0,
        max_timeout_s=2.0,
        streams=StreamSlots(per_subject=1, total=10),
    )

    async def forever(caller: Caller) -> AsyncIterator[int]:
        while True:
            yield 1

    stream = g.stream(FakeContext([]), "svc", "W", forever, audience=None)
    assert await anext(stream) == 1 and g.streams.open == 1
    await stream.aclose()  # what a cancelled call does to the generator
    assert g.streams.open == 0


def test_server_options_bound_connections_and_keep_them_alive() -> None:
    from plantd.gateway.main import server_options
    from plantd.gateway.settings import GatewaySettings

    opts = dict(server_options(GatewaySettings()))
    assert opts["grpc.max_concurrent_streams"] == 256
    assert opts["grpc.keepalive_time_ms"] == 30_000  # not gRPC core's 2 h
    assert opts["grpc.max_connection_idle_ms"] == 300_000
    assert "grpc.max_connection_age_ms" not in opts  # off by default: watches stay up
    aged = dict(server_options(GatewaySettings(max_connection_age_s=600, drain_s=3)))
    assert aged["grpc.max_connection_age_ms"] == 600_000
    assert aged["grpc.max_connection_age_grace_ms"] == 3_000
