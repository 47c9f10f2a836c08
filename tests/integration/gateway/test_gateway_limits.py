"""The gateway's rate limits against real processes: a broker, ``plantd state --auth identity``
and a ``plantd gateway`` with small buckets (read: 2/s, burst 2 per subject) and at most two
open streams per subject.

A subject over its burst gets RESOURCE_EXHAUSTED with reason RATE_LIMITED and a RetryInfo; the
call never reaches the state service; another subject is unaffected; the first subject gets
through again once its bucket refills (polled with a deadline).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from tests.integration.gateway.gatewaykit import gateway_args
from tests.integration.gateway.test_gateway_e2e import mint
from tests.integration.state.statekit import Broker, StateProc
from tests.kit import ServiceProcess, free_port, http_get, make_keys, metric_value

from plantd.common import contract
from plantd.v1 import state_pb2 as pb
from plantd.v1 import state_pb2_grpc

pytestmark = pytest.mark.integration

SCOPE = "plant1"


@dataclass
class Limited:
    gateway: ServiceProcess
    grpc_port: int
    tokens: dict[str, str]


def other_subject(jwt_dir: Path) -> str:
    """A reader of SCOPE with subject "8", signed by the key mint() made."""
    from plantd.identity.keys import KeyRing
    from plantd.identity.tokens import Issuer

    issuer = Issuer(KeyRing.from_dir(jwt_dir), issuer="plantd-identity", access_ttl_s=3600)
    perms = [f"state:scope:{SCOPE}:read"]
    return issuer.access(
        subject="8",
        audience=[contract.SERVICE_STATE],
        now=time.time(),
        claims={"permissions": perms},
    ).token


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Limited]:
    work = tmp_path_factory.mktemp("limits")
    keys = make_keys(work / "curve", (contract.STATE, contract.CLIENT, contract.GATEWAY))
    (work / "broker").mkdir()
    broker = Broker(work / "broker", keys).start()
    jwks, tokens = mint(work / "jwt")  # every token of mint() is subject "7"
    tokens["other_subject"] = other_subject(work / "jwt")
    state = StateProc(
        "state-limits", work, broker, extra=["--auth", "identity", "--jwks-file", str(jwks)]
    ).start()
    grpc_port, http_port = free_port(), free_port()
    gateway = ServiceProcess(
        "plantd.gateway",
        gateway_args(
            broker.endpoint, keys, grpc_port, http_port, jwks,
            "--rate-limit-read-per-s", "2",
            "--rate-limit-burst-s", "1",
            "--max-streams-per-subject", "2",
            "--state-sub-endpoint", broker.state_sub,
            "--log-format", "text",
        ),
        work / "gateway.log",
        http_port=http_port,
        name="gateway-limits",
    )  # fmt: skip
    gateway.start().wait_ready()
    try:
        yield Limited(gateway, grpc_port, tokens)
    finally:
        gateway.stop()
        state.proc.stop()
        broker.stop()


@pytest.fixture
async def stub(limited: Limited) -> AsyncIterator[state_pb2_grpc.StateServiceAsyncStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{limited.grpc_port}") as channel:
        yield state_pb2_grpc.StateServiceStub(channel)  # type: ignore[misc]


def details(err: grpc.aio.AioRpcError) -> tuple[str, float]:
    """(the ErrorInfo reason, the RetryInfo delay in seconds) of a refused call."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info)
    assert any(d.Unpack(retry) for d in status.details[1:]), status
    return info.reason, retry.retry_delay.ToNanoseconds() / 1e9


async def test_a_burst_is_refused_with_retry_info_and_other_subjects_go_on(
    limited: Limited, stub: state_pb2_grpc.StateServiceAsyncStub
) -> None:
    reader = (("authorization", f"Bearer {limited.tokens['reader']}"),)
    other = (("authorization", f"Bearer {limited.tokens['other_subject']}"),)
    # A missing key: NOT_FOUND is the state service's answer, so the call got through.
    request = pb.GetEntryRequest(scope=SCOPE, key="absent")
    outcomes: list[grpc.StatusCode] = []
    refused: grpc.aio.AioRpcError | None = None
    for _ in range(6):  # burst 2, 2/s: at most ~3 of 6 quick calls get through
        try:
            await stub.GetEntry(request, metadata=reader)
            outcomes.append(grpc.StatusCode.OK)
        except grpc.aio.AioRpcError as err:
            outcomes.append(err.code())
            if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                refused = err
    assert outcomes[0] == grpc.StatusCode.NOT_FOUND, outcomes
    assert refused is not None, outcomes
    reason, delay = details(refused)
    assert reason == "RATE_LIMITED" and 1.0 <= delay <= 2.0
    assert "retry in" in (refused.details() or "")
    # Another subject has buckets of its own.
    with pytest.raises(grpc.aio.AioRpcError) as theirs:
        await stub.GetEntry(request, metadata=other)
    assert theirs.value.code() == grpc.StatusCode.NOT_FOUND
    _, text = http_get(limited.gateway.url + "/metrics")
    assert metric_value(text, "plantd_gateway_rate_limited_total", {"bucket": "sub"}) >= 1
    # And the first one is served again once its bucket refills.
    deadline = time.monotonic() + 5.0
    while True:
        with pytest.raises(grpc.aio.AioRpcError) as again:
            await stub.GetEntry(request, metadata=reader)
        if again.value.code() == grpc.StatusCode.NOT_FOUND:
            break
        assert again.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert time.monotonic() < deadline, "the bucket never refilled"
        await asyncio.sleep(0.1)  # the poll interval, not a wait for the result


async def test_the_stream_cap_refuses_one_more_and_frees_a_slot_on_cancel(
    limited: Limited, stub: state_pb2_grpc.StateServiceAsyncStub
) -> None:
    writer = (("authorization", f"Bearer {limited.tokens['writer']}"),)
    await stub.SetEntry(pb.SetEntryRequest(scope=SCOPE, key="k", value="1"), metadata=writer)
    watches = [stub.WatchEntries(pb.WatchEntriesRequest(scope=SCOPE), metadata=writer)]
    watches.append(stub.WatchEntries(pb.WatchEntriesRequest(scope=SCOPE), metadata=writer))
    for watch in watches:
        assert (await watch.read()).created
    third = stub.WatchEntries(pb.WatchEntriesRequest(scope=SCOPE), metadata=writer)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await third.read()
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rpc_status.from_call(err.value)  # type: ignore[arg-type]
    info = error_details_pb2.ErrorInfo()
    assert status is not None and status.details[0].Unpack(info)
    assert info.reason == "TOO_MANY_STREAMS"
    watches.pop().cancel()
    deadline = time.monotonic() + 5.0
    while True:  # the slot is freed when the gateway sees the cancellation
        again = stub.WatchEntries(pb.WatchEntriesRequest(scope=SCOPE), metadata=writer)
        try:
            assert (await again.read()).created
            again.cancel()
            break
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert time.monotonic() < deadline, "the cancelled stream's slot was never freed"
            await asyncio.sleep(0.05)  # the poll interval
    for watch in watches:
        watch.cancel()
