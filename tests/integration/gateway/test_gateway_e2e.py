"""``plantd gateway`` end to end, every part a real process over real sockets (CURVE on):
a broker, ``plantd state --auth identity`` trusting a JWKS file, and ``plantd gateway`` with the
same JWKS, driven by a real grpc.aio client through the generated stub.

Tokens are minted with plantd.identity's own Issuer (as bench/state_authz.py does): a writer
of scope ``plant1``, a reader of it, and tokens that must fail (garbage, another audience).

Covers: Set/Get/Delete/batches/lists round trips; compare-and-set conflict -> ABORTED with
ErrorInfo reason CONFLICT; a missing key -> NOT_FOUND; no or bad token -> UNAUTHENTICATED
without a bus round trip (state's counters unchanged); a reader writing -> PERMISSION_DENIED
(the state service's decision); the deadline and the gateway's cap becoming the bus wait;
x-request-id echoed; grpc.health.v1 liveness vs readiness (NOT_SERVING once state is gone);
reflection listing the services; per-method metrics; a clean exit on SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tests.integration.gateway.gatewaykit import Minter, error_info
from tests.integration.state.statekit import Broker, StateProc
from tests.kit import ServiceProcess, free_port, http_get, make_keys, metric_value, wait_for

from plantd.common import contract
from plantd.v1 import state_pb2 as pb
from plantd.v1 import state_pb2_grpc

pytestmark = pytest.mark.integration

SCOPE = "plant1"
CAP_MS = 400  # the gateway's --max-timeout-ms in this stack


def mint(jwt_dir: Path) -> tuple[Path, dict[str, str]]:
    """(JWKS file, tokens by role) from a fresh ES256 key, with identity's own Issuer."""
    minter = Minter(jwt_dir)
    state = contract.SERVICE_STATE
    return minter.jwks, {
        "writer": minter.token(
            [f"state:scope:{SCOPE}:admin", "state:scope:list", "state:scope:create"], state
        ),
        "reader": minter.token([f"state:scope:{SCOPE}:read"], state),
        "other_audience": minter.token(["*"], contract.SERVICE_IDENTITY),
    }


@dataclass
class Stack:
    broker: Broker
    state: StateProc
    gateway: ServiceProcess
    grpc_port: int
    tokens: dict[str, str]
    rest_port: int = 0  # the REST edge (tested in test_gateway_rest.py)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def state_requests(self) -> float:
        """Every request the state service counted, whatever its operation and result."""
        _, body = http_get(self.state.url + "/metrics")
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in body.splitlines()
            if line.startswith("plantd_state_operations_total{")
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("gateway")
    keys = make_keys(work / "curve", (contract.STATE, contract.CLIENT, contract.GATEWAY))
    (work / "broker").mkdir()
    broker = Broker(work / "broker", keys).start()
    jwks, tokens = mint(work / "jwt")
    pub, sub = broker.bus("event")
    state = StateProc(
        "state-gw",
        work,
        broker,
        extra=[
            "--auth", "identity",
            "--jwks-file", str(jwks),
            "--event-bus-endpoint", pub,
            "--event-sub-endpoint", sub,
        ],
    ).start()  # fmt: skip
    grpc_port, http_port, rest_port = free_port(), free_port(), free_port()
    gateway = ServiceProcess(
        "plantd.gateway",
        [
            "--broker-endpoint", broker.endpoint,
            "--curve-keys", str(keys),
            "--grpc-port", str(grpc_port),
            "--rest-port", str(rest_port),
            "--http-port", str(http_port),
            "--jwks-file", str(jwks),
            "--event-sub-endpoint", sub,
            "--state-sub-endpoint", broker.state_sub,
            "--watch-resync-ms", "200",
            "--watch-buffer-messages", "10",  # a slow watch drops early (and catches up)
            "--health-interval-ms", "100",
            "--max-timeout-ms", str(CAP_MS),
            "--default-timeout-ms", str(CAP_MS),
            "--drain-s", "2",
            # Every token here is one subject; the limits have a test of their own.
            "--rate-limit-write-per-s", "10000",
            "--rate-limit-stream-per-s", "1000",
            "--log-format", "text",
        ],
        work / "gateway.log",
        http_port=http_port,
        name="gateway",
    )  # fmt: skip
    gateway.start().wait_ready()
    try:
        yield Stack(broker, state, gateway, grpc_port, tokens, rest_port)
    finally:
        gateway.stop()
        state.proc.stop()
        broker.stop()


@pytest.fixture
async def stub(stack: Stack) -> AsyncIterator[state_pb2_grpc.StateServiceAsyncStub]:
    async with grpc.aio.insecure_channel(stack.target) as channel:
        yield state_pb2_grpc.StateServiceStub(channel)  # type: ignore[misc]


def auth(stack: Stack, role: str = "writer") -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {stack.tokens[role]}"),)


def reason_of(err: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    return error_info(err)


async def test_set_then_get_round_trips_with_versions_and_ttl(
    stack: Stack, stub: state_pb2_grpc.StateServiceAsyncStub
) -> None:
    md = auth(stack)
    put = await stub.SetEntry(
        pb.SetEntryRequest(scope=SCOPE, key="setpoint", value="42.0"), metadata=md
    )
    assert put.entry.key == "setpoint" and put.entry.value == "42.0"
    assert put.entry.version > 0 and put.revision == put.entry.version
    got = await stub.GetEntry(pb.GetEntryRequest(scope=SCOPE, key="setpoint"), metadata=md)
    assert (got.entry.scope, got.entry.value, got.entry.version) == (
        SCOPE,
        "42.0",
        put.entry.version,
    )
    assert not got.entry.HasField("expire_time")
    ttl = await stub.SetEntry(
        pb.SetEntryRequest(scope=SCOPE, key="lease", value="x", ttl=Duration(seconds=60)),
        metadata=md,
    )
    left = ttl.entry.expire_time.ToMilliseconds() - time.time() * 1000
    assert 50_000 < left <= 61_000, left
    gone = await stub.DeleteEntry(pb.DeleteEntryRequest(scope=SCOPE, key="lease"), metadata=md)
    assert gone.found and gone.revision > ttl.revision


async def test_batches_and_lists(stack: Stack, stub: state_pb2_grpc.StateServiceAsyncStub) -> None:
    md = auth(stack)
    writes = [pb.EntryWrite(key=f"b{i}", value=str(i)) for i in range(5)]
    put = await stub.BatchSetEntries(
        pb.BatchSetEntriesRequest(scope=SCOPE, writes=writes), metadata=md
    )
    assert [e.key for e in put.entries] == [w.key for w in writes]
    versions = [e.version for e in put.entries]
    # Each write of the batch takes its own revision; the batch's revision is the last.
    assert versions == sorted(set(versions)) and versions[-1] == put.revision
    got = await stub.BatchGetEntries(
        pb.BatchGetEntriesRequest(scope=SCOPE, keys=["b0", "b4", "nope"]), metadata=md
    )
    assert [(r.key, r.found, r.entry.value) for r in got.results] == [
        ("b0", True, "0"),
        ("b4", True, "4"),
        ("nope", False, ""),
    ]
    first = await stub.ListKeys(
        pb.ListKeysRequest(scope=SCOPE, prefix="b", page_size=3), metadata=md
    )
    assert list(first.keys) == ["b0", "b1", "b2"] and first.next_page_token
    rest = await stub.ListKeys(
        pb.ListKeysRequest(scope=SCOPE, prefix="b", page_token=first.next_page_token),
        metadata=md,
    )
    assert list(rest.keys) == ["b3", "b4"] and not rest.next_page_token
    scopes = await stub.ListScopes(pb.ListScopesRequest(), metadata=md)
    assert SCOPE in scopes.scopes


async def test_compare_and_set_conflict_is_aborted_with_reason(
    stack: Stack, stub: state_pb2_grpc.StateServiceAsyncStub
) -> None:
    md = auth(stack)
    v1 = await stub.SetEntry(pb.SetEntryRequest(scope=SCOPE, key="cas", value="a"), metadata=md)
    v2 = await stub.SetEntry(
        pb.SetEntryRequest(scope=SCOPE, key="cas", value="b", expected_version=v1.entry.version),
        metadata=md,
    )
    assert v2.entry.version > v1.entry.version
    with pytest.raises(grpc.aio.AioRpcError) as lost:
        await stub.SetEntry(
            pb.SetEntryRequest(
                scope=SCOPE, key="cas", value="c", expected_version=v1.entry.version
            ),
            metadata=md,
        )
    assert lost.value.code() == grpc.StatusCode.ABORTED
    assert reason_of(lost.value).reason == "CONFLICT"
    with pytest.raises(grpc.aio.AioRpcError) as exists:  # 0: "only if absent"
        await stub.SetEntry(
            pb.SetEntryRequest(scope=SCOPE, key="cas", value="d", expected_version=0),
            metadata=md,
        )
    assert exists.value.code() == grpc.StatusCode.ABORTED


async def test_missing_key_is_not_found(
    stack: Stack, stub: state_pb2_grpc.StateServiceAsyncStub
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetEntry(pb.GetEntryRequest(scope=SCOPE, key="absent"), metadata=auth(stack))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    info = reason_of(err.value)
    assert info.reason == "KEY_NOT_FOUND" and info.metadata["key"] == "absent"


async def test_no_or_bad_token_is_refused_before_the_bus(
    stack: Stack, stub: state_pb2_grpc.StateServiceAsyncStub
) -> None:
    before = stack.state_requests()
    cases = {
        "no token": ((), "TOKEN_MALFORMED"),
        "not bearer": ((("authorization", "Basic dXNlcjpwdw=="),), "TOKEN_MALFORMED"),
        "garbage": ((("authorization", "Bearer a.b.c"),), "TOKEN_MALFORMED"),
        "other audience": (auth(stack, "other_audience"), "TOKEN_WRONG_AUDIENCE"),
    }
    for what, (md, reason) in cases.items():
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetEntry(pb.GetEntryRequest(scope=SCOPE, key="setpoint"), metadata=md)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, what
        assert reason_of(err.value).reason == reason, what
        assert "plant auth" in (err.value.details() or ""), what  # says what to do
    # A counted request reaches state's /metrics at once; none of these did.
    assert stack.state_requests() == before
    await stub.GetEntry(pb.GetEntryRequest(scope=SCOPE, key="setpoint"), metadata=auth(stack))
    # state counts a request before it replies, so the real call is already counted
    assert stack.state_requests() == before + 1


async def test_wrong_permission_is_denied_by_the_state_service(
    stack: Stack, stub: state_pb2_grpc.StateServiceAsyncStub
) -> None:
    reader = auth(stack, "reader")
    await stub.GetEntry(pb.GetEntryRequest(scope=SCOPE, key="setpoint"), metadata=reader)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.SetEntry(pb.SetEntryRequest(scope=SCOPE, key="x", value="1"), metadata=reader)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert reason_of(err.value).reason == "PERMISSION_DENIED"
    with pytest.raises(grpc.aio.AioRpcError) as other:
        await stub.GetEntry(pb.GetEntryRequest(scope="plant2", key="k"), metadata=reader)
    assert other.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_request_id_is_echoed(
    stack: Stack, stub: state_pb2_grpc.StateServiceAsyncStub
) -> None:
    md = (*auth(stack), ("x-request-id", "req-123"))
    call = stub.GetEntry(pb.GetEntryRequest(scope=SCOPE, key="setpoint"), metadata=md)
    await call
    assert ("x-request-id", "req-123") in tuple(await call.trailing_metadata() or ())
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetEntry(pb.GetEntryRequest(scope=SCOPE, key="absent"), metadata=md)
    assert ("x-request-id", "req-123") in tuple(err.value.trailing_metadata() or ())


async def test_the_gateway_runs_on_uvloop(stack: Stack) -> None:
    lines = [line for line in stack.gateway.log().splitlines() if "serving gRPC" in line]
    assert lines and "loop='uvloop'" in lines[0], stack.gateway.log()


async def test_many_calls_in_flight_share_the_bus_client(
    stack: Stack, stub: state_pb2_grpc.StateServiceAsyncStub
) -> None:
    md = auth(stack)
    calls = [
        stub.SetEntry(pb.SetEntryRequest(scope=SCOPE, key=f"c{i}", value=str(i)), metadata=md)
        for i in range(200)
    ]
    done = await asyncio.gather(*calls)
    assert len({r.entry.version for r in done}) == 200  # each write its own revision


async def test_size_limits_answer_with_their_own_codes(
    stack: Stack, stub: state_pb2_grpc.StateServiceAsyncStub
) -> None:
    md = auth(stack)
    with pytest.raises(grpc.aio.AioRpcError) as big:  # above state's 1 MiB value limit
        await stub.SetEntry(
            pb.SetEntryRequest(scope=SCOPE, key="big", value="x" * (2 * 1024 * 1024)), metadata=md
        )
    assert big.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(big.value).reason == "VALUE_TOO_LARGE"
    with pytest.raises(grpc.aio.AioRpcError) as huge:  # above the gateway's 4 MiB messages
        await stub.SetEntry(
            pb.SetEntryRequest(scope=SCOPE, key="big", value="x" * (5 * 1024 * 1024)), metadata=md
        )
    assert huge.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def collect(
    stream: Any, want: int, within: float = 15.0
) -> tuple[pb.WatchEntriesResponse, list[pb.Change]]:
    """The first response of a watch, then its changes until ``want`` of them arrived."""
    first: pb.WatchEntriesResponse | None = None
    changes: list[pb.Change] = []
    async with asyncio.timeout(within):
        async for resp in stream:
            if first is None:
                first = resp
            changes.extend(resp.changes)
            if len(changes) >= want:
                break
    assert first is not None and first.created
    return first, changes


async def test_watch_streams_gap_free_changes_and_resumes(
    stack: Stack, stub: state_pb2_grpc.StateServiceAsyncStub
) -> None:
    md = auth(stack)
    stream = stub.WatchEntries(pb.WatchEntriesRequest(scope=SCOPE, key_prefix="w/"), metadata=md)
    first = await stream.read()
    assert first.created
    start = first.revision
    writes = []
    for i in range(20):
        writes.append(
            await stub.SetEntry(
                pb.SetEntryRequest(scope=SCOPE, key=f"w/{i}", value=str(i)), metadata=md
            )
        )
        await stub.SetEntry(pb.SetEntryRequest(scope=SCOPE, key=f"x/{i}", value="-"), metadata=md)
    seen: list[pb.Change] = []
    async with asyncio.timeout(15):
        while len(seen) < 20:
            resp = await stream.read()
            seen.extend(resp.changes)
    stream.cancel()
    assert [c.entry.key for c in seen] == [f"w/{i}" for i in range(20)]  # the prefix only
    assert [c.revision for c in seen] == [w.revision for w in writes]  # in order, none lost
    assert all(c.type == pb.CHANGE_TYPE_SET for c in seen) and seen[0].revision > start
    # Resume after the 10th: the history supplies the rest, once each.
    resumed = stub.WatchEntries(
        pb.WatchEntriesRequest(scope=SCOPE, key_prefix="w/", start_revision=writes[9].revision),
        metadata=md,
    )
    head, rest = await collect(resumed, 10)
    resumed.cancel()
    assert head.revision == writes[9].revision
    assert [c.revision for c in rest] == [w.revision for w in writes[10:]]
    # A snapshot first, then live changes.
    snap = stub.WatchEntries(
        pb.WatchEntriesRequest(scope=SCOPE, key_prefix="w/", send_snapshot=True), metadata=md
    )
    top = await snap.read()
    snap.cancel()
    assert top.created and {e.key for e in top.snapshot} >= {f"w/{i}" for i in range(20)}


async def test_watches_share_one_subscription_and_a_stalled_one_loses_nothing(
    stack: Stack, stub: state_pb2_grpc.StateServiceAsyncStub
) -> None:
    """Two watches of one scope read one shared state-bus subscription. One stops reading
    (its HTTP/2 window of 64 KiB fills: no BDP probing), so its 10-event buffer overflows;
    the other still gets every change at once, and the stalled one, read later, gets the
    same changes from the history: in order, none lost, none twice."""
    md = auth(stack)
    request = pb.WatchEntriesRequest(scope=SCOPE, key_prefix="fan/")
    opts = [("grpc.http2.bdp_probe", 0)]
    async with grpc.aio.insecure_channel(stack.target, options=opts) as slow_channel:
        slow_stub = state_pb2_grpc.StateServiceStub(slow_channel)  # type: ignore[misc]
        stalled = slow_stub.WatchEntries(request, metadata=md)
        fast = stub.WatchEntries(request, metadata=md)
        assert (await stalled.read()).created and (await fast.read()).created

        def gauges() -> tuple[float, float]:
            _, body = http_get(stack.gateway.url + "/metrics")
            return (
                metric_value(body, "plantd_gateway_watch_scopes", {}),
                metric_value(body, "plantd_gateway_watch_readers", {}),
            )

        scopes, readers = gauges()
        assert scopes >= 1 and readers >= 2
        _, before = http_get(stack.gateway.url + "/metrics")
        dropped_before = metric_value(before, "plantd_gateway_watch_dropped_total", {})
        value = "v" * 1000  # 300 changes of 1 KB: far past the stalled stream's window
        revisions: list[int] = []
        for batch in range(3):
            writes = [pb.EntryWrite(key=f"fan/{batch}-{i}", value=value) for i in range(100)]
            reply = await stub.BatchSetEntries(
                pb.BatchSetEntriesRequest(scope=SCOPE, writes=writes), metadata=md
            )
            revisions.extend(range(reply.revision - 99, reply.revision + 1))
        live: list[pb.Change] = []
        async with asyncio.timeout(20):
            while len(live) < 300:
                live.extend((await fast.read()).changes)
        assert [c.revision for c in live] == sorted(revisions), "the reading watch was held back"
        _, after = http_get(stack.gateway.url + "/metrics")
        assert metric_value(after, "plantd_gateway_watch_dropped_total", {}) > dropped_before
        late: list[pb.Change] = []
        async with asyncio.timeout(20):
            while len(late) < 300:
                late.extend((await stalled.read()).changes)
        assert [c.revision for c in late] == sorted(revisions)
        fast.cancel()
        stalled.cancel()
    wait_for(lambda: gauges()[1] < readers, 10, "both watches' readers released")


async def test_watch_needs_a_token_and_read_permission(
    stack: Stack, stub: state_pb2_grpc.StateServiceAsyncStub
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as anon:
        await stub.WatchEntries(pb.WatchEntriesRequest(scope=SCOPE)).read()
    assert anon.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as other:
        await stub.WatchEntries(
            pb.WatchEntriesRequest(scope="plant2"), metadata=auth(stack, "reader")
        ).read()
    assert other.value.code() == grpc.StatusCode.PERMISSION_DENIED
    ok = stub.WatchEntries(pb.WatchEntriesRequest(scope=SCOPE), metadata=auth(stack, "reader"))
    assert (await ok.read()).created
    ok.cancel()


async def test_health_and_reflection(stack: Stack) -> None:
    async with grpc.aio.insecure_channel(stack.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "liveness", "readiness", "plantd.v1.StateService"):
            got = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert got.status == health_pb2.HealthCheckResponse.SERVING, name
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        names: set[str] = set()
        async for reply in refl.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        ):
            names |= {s.name for s in reply.list_services_response.service}
        assert {"plantd.v1.StateService", "grpc.health.v1.Health"} <= names, names


async def test_metrics_count_rpcs_by_method_and_code(
    stack: Stack, stub: state_pb2_grpc.StateServiceAsyncStub
) -> None:
    await stub.GetEntry(pb.GetEntryRequest(scope=SCOPE, key="setpoint"), metadata=auth(stack))
    _, body = http_get(stack.gateway.url + "/metrics")
    base = {"grpc_service": "plantd.v1.StateService", "grpc_type": "unary"}
    ok = metric_value(
        body, "grpc_server_handled_total", {**base, "grpc_method": "GetEntry", "grpc_code": "OK"}
    )
    refused = metric_value(
        body,
        "grpc_server_handled_total",
        {**base, "grpc_method": "GetEntry", "grpc_code": "UNAUTHENTICATED"},
    )
    assert ok >= 1 and refused >= 1, body


async def test_deadlines_become_the_bus_wait(
    stack: Stack, stub: state_pb2_grpc.StateServiceAsyncStub
) -> None:
    """With state frozen, the call ends at the client's deadline or the gateway's cap, not
    at a fixed bus timeout; the gateway answers the cap itself with REQUEST_TIMEOUT."""
    md = auth(stack)
    os.kill(stack.state.proc.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as capped:
            await stub.GetEntry(
                pb.GetEntryRequest(scope=SCOPE, key="setpoint"), metadata=md, timeout=10.0
            )
        took = time.monotonic() - t0
        assert capped.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert reason_of(capped.value).reason == "REQUEST_TIMEOUT"
        assert CAP_MS / 1000 * 0.9 < took < 5.0, took
        t0 = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as short:
            await stub.GetEntry(
                pb.GetEntryRequest(scope=SCOPE, key="setpoint"), metadata=md, timeout=0.15
            )
        assert short.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - t0 < CAP_MS / 1000, "the client's shorter deadline counts"
    finally:
        os.kill(stack.state.proc.pid, signal.SIGCONT)

    async def answers() -> bool:
        try:
            await stub.GetEntry(pb.GetEntryRequest(scope=SCOPE, key="setpoint"), metadata=md)
        except grpc.aio.AioRpcError:
            return False
        return True

    from tests.kit import await_for

    await await_for(answers, 15.0, "state answering again after SIGCONT", interval=0.1)


async def test_readiness_follows_the_state_worker_then_sigterm_drains(stack: Stack) -> None:
    """Last in the module: stops state, then the gateway."""
    async with grpc.aio.insecure_channel(stack.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)

        async def status(name: str) -> int:
            got = await health.Check(health_pb2.HealthCheckRequest(service=name))
            return int(got.status)

        stack.state.proc.stop()

        from tests.kit import await_for

        async def not_ready() -> bool:
            return (
                await status("plantd.v1.StateService") == health_pb2.HealthCheckResponse.NOT_SERVING
            )

        await await_for(not_ready, 15.0, "StateService NOT_SERVING once state is gone")
        assert await status("liveness") == health_pb2.HealthCheckResponse.SERVING
        assert await status("readiness") == health_pb2.HealthCheckResponse.NOT_SERVING
        wait_for(lambda: http_get(stack.gateway.url + "/readyz")[0] == 503, 5.0, "/readyz 503")
        assert http_get(stack.gateway.url + "/healthz")[0] == 200
    assert stack.gateway.stop() == 0, stack.gateway.log()
