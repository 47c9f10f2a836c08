"""Publish rights by key on the buses of a real ``plantd broker``: with a registry, a key
publishes only the topics granted to it; forged messages are dropped and counted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import zmq
from tests.kit import http_get, make_keys, metric_value, require, start_broker, wait_for

from plantd.bus import Publisher, Subscriber
from plantd.common import contract
from plantd.common.keys import load_client
from plantd.common.registry import Identity, enrol_own, own_keys

pytestmark = pytest.mark.integration


def forbidden(url: str, bus: str) -> float:
    text = http_get(url + contract.PATH_METRICS)[1]
    return metric_value(
        text, "plantd_bus_dropped_messages_total", {"bus": bus, "reason": "forbidden"}
    )


def test_forged_state_event_is_dropped_and_counted(tmp_path: Path) -> None:
    require(zmq.has("curve"), "this libzmq has no CURVE support")
    keys = make_keys(tmp_path / "keys", (contract.STATE, contract.CLIENT, "plc"))
    reg = enrol_own(None, own_keys(keys))
    assert reg is not None
    plc_key = load_client(keys, "plc").public.decode()
    reg = reg.with_identity(Identity("plc", "module", plc_key, (), {"event": ("line1.",)}))
    (keys / "registry.json").write_bytes(reg.to_json())
    os.chmod(keys / "registry.json", 0o600)
    broker = start_broker(tmp_path, curve_keys=keys, extra=["--registry-poll-ms", "200"])
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        state_pub, state_sub = broker.bus("state")
        sub = Subscriber(
            state_sub, [b"plant1"], curve=load_client(keys, contract.CLIENT), context=ctx
        )
        real = Publisher(state_pub, curve=load_client(keys, contract.STATE), context=ctx)
        forger = Publisher(state_pub, curve=load_client(keys, contract.CLIENT), context=ctx)
        for p in (real, forger):
            assert p.wait_for_subscriber(b"plant1", timeout=20), "subscription never arrived"
        got: list[bytes] = []

        def delivered(payload: bytes) -> bool:
            real.publish(b"plant1", payload)
            msg = sub.recv(timeout=0.2)
            while msg is not None:
                got.append(msg.payload)
                msg = sub.recv(timeout=0.05)
            return payload in got

        wait_for(lambda: delivered(b"real-0"), 20, "the state key's event to arrive")
        for i in range(20):
            forger.publish(b"plant1", b'{"op":"set","key":"k","revision":%d}' % (10**6 + i))
        wait_for(lambda: forbidden(broker.url, "state") >= 20, 20, "20 forged events counted")
        wait_for(lambda: delivered(b"real-1"), 20, "the next real event")
        assert all(not p.startswith(b'{"op"') for p in got), got
        # Event bus: the module may publish its prefix only.
        ev_pub, ev_sub = broker.bus("event")
        esub = Subscriber(ev_sub, [b"line"], curve=load_client(keys, contract.CLIENT), context=ctx)
        plc = Publisher(ev_pub, curve=load_client(keys, "plc"), context=ctx)
        assert plc.wait_for_subscriber(b"line1.x", timeout=20)
        seen: list[bytes] = []

        def event_through() -> bool:
            plc.publish(b"line2.alarm", b"no")
            plc.publish(b"line1.alarm", b"yes")
            msg = esub.recv(timeout=0.2)
            while msg is not None:
                seen.append(msg.topic)
                msg = esub.recv(timeout=0.05)
            return b"line1.alarm" in seen

        wait_for(event_through, 20, "the module's own topic to pass")
        assert b"line2.alarm" not in seen
        assert forbidden(broker.url, "event") >= 1
        # A reload grants the client the state bus: its messages pass from then on.
        reg2 = reg.with_identity(
            Identity(contract.CLIENT, "client", load_client(keys, contract.CLIENT).public.decode(),
                     (), {"state": ("plant1",)})
        )  # fmt: skip
        (keys / "registry.json").write_bytes(reg2.to_json())

        def granted() -> bool:
            forger.publish(b"plant1", b"now-allowed")
            msg = sub.recv(timeout=0.2)
            while msg is not None:
                got.append(msg.payload)
                msg = sub.recv(timeout=0.05)
            return b"now-allowed" in got

        wait_for(granted, 20, "the grant to reach the bus forwarder")
        for s in (sub, real, forger, esub, plc):
            s.close()
    finally:
        ctx.destroy(linger=0)
        assert broker.stop() == 0, broker.log()
