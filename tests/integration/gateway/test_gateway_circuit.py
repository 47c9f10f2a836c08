"""The gateway's circuit breaker against real processes (docs/ha.md, "Circuit breakers"): a
broker, ``plantd state --auth identity`` and a ``plantd gateway`` that opens a service's
breaker after 3 failures in a row.

With the broker killed, calls time out (each holding a bus socket for its whole deadline);
after three of them the gateway refuses at once with UNAVAILABLE / CIRCUIT_OPEN and a
RetryInfo, shows it in /metrics and /readyz, and once the broker is back a probe closes the
breaker and calls are served again.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from tests.integration.gateway.gatewaykit import gateway_args
from tests.integration.gateway.test_gateway_e2e import SCOPE, mint
from tests.integration.state.statekit import Broker, StateProc
from tests.kit import ServiceProcess, free_port, http_get, make_keys, metric_value
from tests.kit.broker import BrokerProcess

from plantd.common import contract
from plantd.v1 import state_pb2 as pb
from plantd.v1 import state_pb2_grpc

pytestmark = pytest.mark.integration

FAILURES = 3
DEADLINE = 1.5  # each call's; above the gateway's circuit_min_timeout_ms (1 s) so it counts
STATE = {"service": contract.SERVICE_STATE}


@dataclass
class Plant:
    work: Path
    keys: Path
    broker: BrokerProcess
    gateway: ServiceProcess
    grpc_port: int
    token: str


@pytest.fixture
def plant(tmp_path: Path) -> Iterator[Plant]:
    keys = make_keys(tmp_path / "curve", (contract.STATE, contract.CLIENT, contract.GATEWAY))
    (tmp_path / "broker").mkdir()
    broker: BrokerProcess = Broker(tmp_path / "broker", keys).start()
    jwks, tokens = mint(tmp_path / "jwt")
    state = StateProc(
        "state-circuit", tmp_path, broker, extra=["--auth", "identity", "--jwks-file", str(jwks)]
    ).start()
    grpc_port, http_port = free_port(), free_port()
    gateway = ServiceProcess(
        "plantd.gateway",
        gateway_args(
            broker.endpoint, keys, grpc_port, http_port, jwks,
            "--state-sub-endpoint", broker.state_sub,
            "--circuit-failures", str(FAILURES),
            "--circuit-open-ms", "3000",  # a pause of 1.5-3 s: /readyz is read within it
            "--circuit-open-max-ms", "6000",
            "--log-format", "text",
        ),
        tmp_path / "gateway.log",
        http_port=http_port,
        name="gateway-circuit",
    )  # fmt: skip
    gateway.start().wait_ready()
    plant = Plant(tmp_path, keys, broker, gateway, grpc_port, tokens["writer"])
    try:
        yield plant
    finally:
        gateway.stop()
        state.proc.stop()
        plant.broker.stop()


def reason_and_retry(err: grpc.aio.AioRpcError) -> tuple[str, float]:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None, err
    info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info)
    delay = next(
        (retry.retry_delay.ToNanoseconds() / 1e9 for d in status.details[1:] if d.Unpack(retry)),
        -1.0,
    )
    return info.reason, delay


def circuit(plant: Plant) -> float:
    return metric_value(
        http_get(plant.gateway.url + "/metrics")[1], "plantd_gateway_circuit_state", STATE
    )


async def test_a_dead_bus_opens_the_breaker_and_a_probe_closes_it(plant: Plant) -> None:
    meta = (("authorization", f"Bearer {plant.token}"),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{plant.grpc_port}") as channel:
        stub = state_pb2_grpc.StateServiceStub(channel)  # type: ignore[no-untyped-call]

        async def set_entry(n: int) -> None:
            request = pb.SetEntryRequest(scope=SCOPE, key=f"k{n}", value=str(n))
            await stub.SetEntry(request, metadata=meta, timeout=DEADLINE)

        await set_entry(0)
        assert circuit(plant) == 0
        plant.broker.signal(signal.SIGKILL)
        plant.broker.wait_exit(10)

        codes = []
        for n in range(FAILURES):  # each waits out its deadline: nobody answers
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await set_entry(n + 1)
            codes.append(failed.value.code())
        assert codes == [grpc.StatusCode.DEADLINE_EXCEEDED] * FAILURES

        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await set_entry(99)
        took = time.monotonic() - started
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        reason, retry = reason_and_retry(refused.value)
        assert reason == "CIRCUIT_OPEN" and 1.0 <= retry <= 3.0
        assert took < 0.5, f"refused after {took:.2f}s, not at once"
        assert circuit(plant) == 2
        text = http_get(plant.gateway.url + "/metrics")[1]
        assert metric_value(text, "plantd_gateway_circuit_opened_total", STATE) >= 1
        assert metric_value(text, "plantd_gateway_circuit_refused_total", STATE) >= 1
        code, body = http_get(plant.gateway.url + "/readyz")
        assert code == 503 and json.loads(body)["checks"]["state_circuit"] is False, body

        # The broker back on its ports: a probe gets through, closes it, calls are served.
        again = BrokerProcess(
            plant.work / "broker", plant.broker.ports, curve_keys=plant.keys,
            extra=["--log-format", "text"],
        )  # fmt: skip
        plant.broker = again.start().wait_ready()  # type: ignore[assignment]
        back = time.monotonic()
        deadline = back + 30
        n = 100
        while True:
            n += 1
            try:
                await set_entry(n)
                break
            except grpc.aio.AioRpcError as exc:
                assert exc.code() in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                ), exc
                assert time.monotonic() < deadline, "the breaker never closed"
                await asyncio.sleep(0.1)  # the poll interval
        print(f"[gateway] served again {time.monotonic() - back:.2f}s after the broker was back")
        assert circuit(plant) == 0
