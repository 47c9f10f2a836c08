"""plantd.v1.BusService end to end, every part a real process over real sockets (CURVE on):
a broker, the echo module, and ``plantd gateway`` trusting a JWKS file, driven by a real
grpc.aio client through the generated stub.

Covers: Call/StreamCall to a real worker; the gateway's own authorization (``bus:call:<svc>``,
the bus audience); reserved services refused before the bus; an unknown service; BatchCall
with one result per call, in order, failures in their own slot; GetService/ListServices from
the broker's MMI; Publish on the event bus coming back through Subscribe (``ext.`` topics
only, the state bus never); grpc.health.v1 for the BusService.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tests.integration.gateway.gatewaykit import Minter, error_info, gateway_args
from tests.integration.state.statekit import Broker
from tests.kit import ServiceProcess, echo_process, free_port, make_keys

from plantd.common import contract
from plantd.v1 import bus_pb2 as pb
from plantd.v1 import bus_pb2_grpc

pytestmark = pytest.mark.integration

ECHO = contract.SERVICE_ECHO


def mint(jwt_dir: Path) -> tuple[Path, dict[str, str]]:
    """(JWKS file, tokens by role): tokens for the bus audience unless said otherwise."""
    minter = Minter(jwt_dir)
    bus = contract.AUDIENCE_BUS
    operator = [
        f"bus:call:{ECHO}",
        "bus:services:read",
        "bus:subscribe:event",
        "bus:publish:event",
        "bus:publish:state",  # held, and still refused: the state bus is state's own
    ]
    return minter.jwks, {
        "operator": minter.token(operator, bus),
        "other_service": minter.token(["bus:call:org.example.Other"], bus),
        "state_audience": minter.token(["*"], contract.SERVICE_STATE),
    }


@dataclass
class Stack:
    gateway: ServiceProcess
    grpc_port: int
    tokens: dict[str, str]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("gateway-bus")
    keys = make_keys(work / "curve", (contract.CLIENT, contract.GATEWAY, contract.ECHO))
    (work / "broker").mkdir()
    broker = Broker(work / "broker", keys).start()
    echo = echo_process(work, broker.endpoint, curve_keys=keys).start()
    jwks, tokens = mint(work / "jwt")
    event_pub, event_sub = broker.bus("event")
    metric_pub, metric_sub = broker.bus("metric")
    grpc_port, http_port = free_port(), free_port()
    gateway = ServiceProcess(
        "plantd.gateway",
        gateway_args(
            broker.endpoint, keys, grpc_port, http_port, jwks,
            "--event-sub-endpoint", event_sub,
            "--state-sub-endpoint", broker.state_sub,
            "--metric-sub-endpoint", metric_sub,
            "--event-pub-endpoint", event_pub,
            "--metric-pub-endpoint", metric_pub,
            "--health-interval-ms", "100",
            "--default-timeout-ms", "3000",
            "--rate-limit-call-per-s", "10000",
            "--rate-limit-write-per-s", "10000",
            "--log-format", "text",
        ),
        work / "gateway.log",
        http_port=http_port,
        name="gateway",
    )  # fmt: skip
    try:
        echo.wait_ready()
        # /readyz waits for a state worker this stack does not run: wait for gRPC instead.
        gateway.start()
        yield Stack(gateway, grpc_port, tokens)
    finally:
        gateway.stop()
        echo.stop()
        broker.stop()


@pytest.fixture
async def stub(stack: Stack) -> AsyncIterator[bus_pb2_grpc.BusServiceAsyncStub]:
    async with grpc.aio.insecure_channel(stack.target) as channel:
        await asyncio.wait_for(channel.channel_ready(), 30)
        yield bus_pb2_grpc.BusServiceStub(channel)  # type: ignore[misc]


def auth(stack: Stack, role: str = "operator") -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {stack.tokens[role]}"),)


def reason_of(err: grpc.aio.AioRpcError) -> str:
    return str(error_info(err).reason)


async def echo_ready(
    stub: bus_pb2_grpc.BusServiceAsyncStub, md: tuple[tuple[str, str], ...]
) -> None:
    """The echo worker is registered with the broker (polled, with a deadline)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        got = await stub.GetService(pb.GetServiceRequest(service=ECHO), metadata=md)
        if got.available:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the echo worker never registered")


async def test_call_and_stream_call_reach_the_worker(
    stack: Stack, stub: bus_pb2_grpc.BusServiceAsyncStub
) -> None:
    md = auth(stack)
    await echo_ready(stub, md)
    reply = await stub.Call(
        pb.CallRequest(service=ECHO, frames=[b"echo", b"hello", b"\x00\xff"]), metadata=md
    )
    assert list(reply.frames) == [b"hello", b"\x00\xff"] and not reply.partials
    parts = [
        p
        async for p in stub.StreamCall(
            pb.StreamCallRequest(service=ECHO, frames=[b"echo", b"x"]), metadata=md
        )
    ]
    assert [(list(p.frames), p.final) for p in parts] == [([b"x"], True)]


async def test_the_gateway_authorizes_generic_calls(
    stack: Stack, stub: bus_pb2_grpc.BusServiceAsyncStub
) -> None:
    req = pb.CallRequest(service=ECHO, frames=[b"echo", b"x"])
    with pytest.raises(grpc.aio.AioRpcError) as anon:
        await stub.Call(req)
    assert anon.value.code() is grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as other:
        await stub.Call(req, metadata=auth(stack, "other_service"))
    assert other.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert reason_of(other.value) == "PERMISSION_DENIED"
    assert f"bus:call:{ECHO}" in (other.value.details() or "")
    # A token for the state service is not one for the bus, whatever it holds.
    with pytest.raises(grpc.aio.AioRpcError) as aud:
        await stub.Call(req, metadata=auth(stack, "state_audience"))
    assert aud.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_reserved_and_unknown_services(
    stack: Stack, stub: bus_pb2_grpc.BusServiceAsyncStub
) -> None:
    md = auth(stack)
    for service in (contract.SERVICE_STATE, contract.SERVICE_IDENTITY, "mmi.services"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Call(pb.CallRequest(service=service, frames=[b"{}"]), metadata=md)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT, service
        assert reason_of(err.value) == "RESERVED_SERVICE"
    # Authorized but nobody serves it: the broker holds it for a worker (docs/protocol.md
    # request_timeout), so a call with a shorter deadline ends at its deadline.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Call(
            pb.CallRequest(service="org.example.Other", frames=[b"x"]),
            metadata=auth(stack, "other_service"),
            timeout=1,
        )
    assert err.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED, err.value


async def test_batch_call_answers_each_call_in_its_own_slot(
    stack: Stack, stub: bus_pb2_grpc.BusServiceAsyncStub
) -> None:
    md = auth(stack)
    await echo_ready(stub, md)
    calls = [
        pb.CallRequest(service=ECHO, frames=[b"echo", b"one"]),
        pb.CallRequest(service=contract.SERVICE_STATE, frames=[b"{}"]),
        pb.CallRequest(service="org.example.Other", frames=[b"x"]),
        pb.CallRequest(service=ECHO, frames=[b"echo", b"four"]),
    ]
    batch = await stub.BatchCall(pb.BatchCallRequest(calls=calls), metadata=md)
    codes = [r.status.code for r in batch.results]
    assert codes == [
        grpc.StatusCode.OK.value[0],
        grpc.StatusCode.INVALID_ARGUMENT.value[0],
        grpc.StatusCode.PERMISSION_DENIED.value[0],
        grpc.StatusCode.OK.value[0],
    ]
    assert list(batch.results[0].response.frames) == [b"one"]
    assert list(batch.results[3].response.frames) == [b"four"]
    with pytest.raises(grpc.aio.AioRpcError) as empty:
        await stub.BatchCall(pb.BatchCallRequest(), metadata=md)
    assert empty.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_the_service_directory(stack: Stack, stub: bus_pb2_grpc.BusServiceAsyncStub) -> None:
    md = auth(stack)
    await echo_ready(stub, md)
    listed = await stub.ListServices(pb.ListServicesRequest(), metadata=md)
    assert ECHO in listed.services
    missing = await stub.GetService(pb.GetServiceRequest(service="org.example.Nobody"), metadata=md)
    assert missing.service == "org.example.Nobody" and not missing.available
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await stub.ListServices(pb.ListServicesRequest(), metadata=auth(stack, "other_service"))
    assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_publish_comes_back_through_subscribe(
    stack: Stack, stub: bus_pb2_grpc.BusServiceAsyncStub
) -> None:
    md = auth(stack)
    stream = stub.Subscribe(
        pb.SubscribeRequest(bus=pb.BUS_EVENT, topic_prefixes=["ext.test."]), metadata=md
    )
    first: asyncio.Task[pb.SubscribeResponse] = asyncio.ensure_future(stream.read())  # type: ignore[arg-type]
    # The SUB's subscription reaches the broker asynchronously: publish until one arrives.
    deadline = time.monotonic() + 20
    while not first.done() and time.monotonic() < deadline:
        await stub.Publish(
            pb.PublishRequest(bus=pb.BUS_EVENT, topic="ext.test.alarm", frames=[b'{"v":1}']),
            metadata=md,
        )
        await asyncio.wait([first], timeout=0.05)
    assert first.done(), "nothing published came back within 20 s"
    got = first.result()
    message = got.messages[0]
    assert message.topic == "ext.test.alarm" and list(message.frames) == [b'{"v":1}']
    assert message.sequence >= 1
    stream.cancel()


async def test_publish_is_refused_where_it_could_forge(
    stack: Stack, stub: bus_pb2_grpc.BusServiceAsyncStub
) -> None:
    md = auth(stack)
    with pytest.raises(grpc.aio.AioRpcError) as state:
        await stub.Publish(
            pb.PublishRequest(bus=pb.BUS_STATE, topic="ext.x", frames=[b"{}"]), metadata=md
        )
    assert state.value.code() is grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as audit:
        await stub.Publish(
            pb.PublishRequest(bus=pb.BUS_EVENT, topic="audit.login", frames=[b"{}"]), metadata=md
        )
    assert audit.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as metric:
        await stub.Publish(
            pb.PublishRequest(bus=pb.BUS_METRIC, topic="ext.x", frames=[b"1"]), metadata=md
        )
    assert metric.value.code() is grpc.StatusCode.PERMISSION_DENIED  # not granted to it


async def test_health_names_the_bus_service(stack: Stack) -> None:
    async with grpc.aio.insecure_channel(stack.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        name = pb.DESCRIPTOR.services_by_name["BusService"].full_name
        deadline = time.monotonic() + 10
        status = None
        while time.monotonic() < deadline:
            status = (await health.Check(health_pb2.HealthCheckRequest(service=name))).status
            if status == health_pb2.HealthCheckResponse.SERVING:
                break
            await asyncio.sleep(0.05)
        assert status == health_pb2.HealthCheckResponse.SERVING
        # Readiness follows the state service, which this stack does not run.
        ready = await health.Check(health_pb2.HealthCheckRequest(service="readiness"))
        assert ready.status == health_pb2.HealthCheckResponse.NOT_SERVING
