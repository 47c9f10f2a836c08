"""CURVE end to end through the broker service: allow-listed keys work, anything else is refused."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from tests.conftest import require
from tests.integration.broker.brokerkit import (
    BrokerPorts,
    ServiceProcess,
    broker_process,
    echo_process,
    http_get,
    make_keys,
    metric_value,
    wait_for,
)

from plantd.bus import Publisher, Subscriber
from plantd.common import contract
from plantd.common.curve import CurveClient, generate_keypair, write_keypair
from plantd.common.keys import load_client
from plantd.mdp import Client, RequestTimeout

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require(zmq.has("curve"), "this libzmq has no CURVE support (pyzmq wheels include it)")
    return make_keys(tmp_path_factory.mktemp("keys"), [contract.CLIENT, contract.ECHO])


@pytest.fixture(scope="module")
def curve_broker(
    tmp_path_factory: pytest.TempPathFactory, keys_dir: Path
) -> Iterator[tuple[ServiceProcess, BrokerPorts]]:
    ports = BrokerPorts()
    proc = broker_process(tmp_path_factory.mktemp("cb"), ports, curve_keys=keys_dir).start()
    try:
        proc.wait_ready()
        yield proc, ports
    finally:
        assert proc.stop() == 0, proc.text()


def _stranger(keys_dir: Path) -> CurveClient:
    """A well-formed client key the broker has never seen, aimed at the right server key."""
    pair = generate_keypair()
    assert pair.secret is not None
    server = load_client(keys_dir, contract.CLIENT).server_public
    return CurveClient(pair.secret, pair.public, server)


def test_allowed_client_gets_answers(
    curve_broker: tuple[ServiceProcess, BrokerPorts], keys_dir: Path
) -> None:
    _, ports = curve_broker
    curve = load_client(keys_dir, contract.CLIENT)
    with Client(ports.endpoint, timeout=10.0, retries=0, curve=curve) as c:
        (reply,) = c.request(contract.SERVICE_BROKER, "services", "{}")
    # The broker's own worker (inproc, inside the process) is registered and answering.
    names = [s["name"] for s in json.loads(reply)["services"]]
    assert contract.SERVICE_BROKER in names


def test_unknown_key_is_refused_and_counted(
    curve_broker: tuple[ServiceProcess, BrokerPorts], keys_dir: Path
) -> None:
    proc, ports = curve_broker
    metrics = proc.url + contract.PATH_METRICS
    before = metric_value(
        http_get(metrics)[1], "plantd_curve_handshake_failures_total", {"socket": "mdp"}
    )
    with (
        Client(ports.endpoint, timeout=1.5, retries=0, curve=_stranger(keys_dir)) as c,
        pytest.raises(RequestTimeout),
    ):
        c.request(contract.SERVICE_BROKER, "services", "{}")
    # Plaintext is refused too (no fallback).
    with Client(ports.endpoint, timeout=1.5, retries=0) as c, pytest.raises(RequestTimeout):
        c.request(contract.SERVICE_BROKER, "services", "{}")

    def counted() -> bool:
        text = http_get(metrics)[1]
        value = metric_value(text, "plantd_curve_handshake_failures_total", {"socket": "mdp"})
        return value > before

    wait_for(counted, 10, "the refused handshake to show in /metrics")


def test_bus_with_curve(curve_broker: tuple[ServiceProcess, BrokerPorts], keys_dir: Path) -> None:
    _, ports = curve_broker
    pub_ep, sub_ep = ports.bus("event")
    me = load_client(keys_dir, contract.CLIENT)
    ctx = zmq.Context()
    try:
        good = Subscriber(sub_ep, [b"evt."], curve=me, context=ctx)
        bad = Subscriber(sub_ep, [b"evt."], curve=_stranger(keys_dir), context=ctx)
        pub = Publisher(pub_ep, curve=load_client(keys_dir, contract.ECHO), context=ctx)
        assert pub.wait_for_subscriber(b"evt.x", timeout=15), "subscription never reached us"
        got = None
        for i in range(50):
            pub.publish(b"evt.x", f"{i}".encode())
            got = good.recv(timeout=0.2)
            if got is not None:
                break
        assert got is not None and got.topic == b"evt.x"
        assert bad.recv(timeout=0.5) is None
        # A publisher with an unknown key reaches nobody.
        rogue = Publisher(pub_ep, curve=_stranger(keys_dir), context=ctx)
        assert not rogue.wait_for_subscriber(b"evt.x", timeout=1.0)
        for _ in range(5):
            rogue.publish(b"evt.rogue", b"x")
        msg = good.recv(timeout=0.5)
        assert msg is None or msg.topic != b"evt.rogue"
        for s in (good, bad, pub, rogue):
            s.close()
    finally:
        ctx.destroy(linger=0)


def test_echo_module_with_curve(
    curve_broker: tuple[ServiceProcess, BrokerPorts], keys_dir: Path, tmp_path: Path
) -> None:
    """A module process authenticates with its own pair (echo.key_secret) end to end."""
    _, ports = curve_broker
    echo = echo_process(tmp_path, ports.endpoint, curve_keys=keys_dir).start()
    try:
        echo.wait_ready()
        curve = load_client(keys_dir, contract.CLIENT)
        with Client(ports.endpoint, timeout=10.0, retries=0, curve=curve) as c:
            assert c.request(contract.SERVICE_ECHO, "echo", "over curve") == [b"over curve"]
    finally:
        assert echo.stop() == 0, echo.text()


def test_missing_keys_fail_closed(tmp_path: Path) -> None:
    empty = tmp_path / "nokeys"
    empty.mkdir()
    proc = broker_process(tmp_path, BrokerPorts(), curve_keys=empty).start()
    assert proc.wait_exit() == 1
    text = proc.text()
    assert "broker.key_secret" in text
    assert "plantd keys generate" in text


def test_world_readable_secret_refused(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    write_keypair(keys, contract.BROKER, generate_keypair())
    os.chmod(keys / "broker.key_secret", 0o644)
    proc = broker_process(tmp_path, BrokerPorts(), curve_keys=keys).start()
    assert proc.wait_exit() == 1
    assert "chmod 600" in proc.text()
