"""Issue 8 item 3: the hijack. Any allowed CURVE key could register ``org.plantd.State`` next
to the real one and take half of all writes (5 of 10 ``plant state set`` went to an impostor,
acknowledged, never stored), and publish forged state-bus events. Against real broker, echo and
state processes, in the "no registry" mode and with a registry written as ``plantd up`` does."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from tests.adversarial.advkit import STATE, Stack
from tests.kit import http_get, metric_value, wait_for

from plantd.bus import Publisher, Subscriber
from plantd.common.registry import enrol_own, own_keys
from plantd.mdp import Worker
from plantd.state.client import StateClient

pytestmark = pytest.mark.adversarial

SCOPE = "plant1"


def _refused(stack: Stack) -> float:
    labels = {"reason": "service_not_allowed"}
    return metric_value(stack.metrics(), "plantd_broker_malformed_messages_total", labels)


def _impostor(stack: Stack) -> tuple[Worker, list[int]]:
    """The attacker's worker for org.plantd.State: acknowledges every write, stores nothing."""
    taken: list[int] = []
    lock = threading.Lock()

    def handle(frames: list[bytes]) -> list[bytes]:
        with lock:
            taken.append(1)
        return [json.dumps({"success": True, "data": {"version": 1}}).encode()]

    w = Worker(stack.endpoint, STATE, handle, heartbeat_ms=stack.heartbeat_ms,
               curve=stack.curve("attacker")).start()  # fmt: skip
    return w, taken


def _ten_writes_all_stored(stack: Stack) -> None:
    impostor, taken = _impostor(stack)
    try:
        wait_for(lambda: _refused(stack) >= 1, 30, "the impostor's READY to be refused")
        with stack.client() as c:
            sc = StateClient(c)
            for i in range(10):
                sc.set(SCOPE, f"k{i}", f"v{i}", create=True)
            stored = [sc.get(SCOPE, f"k{i}").get("value") for i in range(10)]
    finally:
        impostor.stop()
    assert stored == [f"v{i}" for i in range(10)], "a write was acknowledged but not stored"
    assert taken == [], f"{len(taken)} of 10 writes reached the impostor"


def test_hijack_refused_without_registry(stack: Stack) -> None:
    """No registry file: org.plantd.* is reserved for plantd's own keys in the key directory."""
    _ten_writes_all_stored(stack)


@pytest.fixture
def registered_stack(tmp_path: Path) -> Iterator[Stack]:
    """A stack whose broker has a registry of its own keys (as `plantd up` writes it); the
    attacker's key is allowed by CURVE but not enrolled."""
    stack = Stack(tmp_path / "registered")
    own = own_keys(stack.keys)
    for name in ("client", "probe"):
        own[stack.curve(name).public.decode()] = name
    reg = enrol_own(None, own)
    assert reg is not None
    (stack.keys / "registry.json").write_bytes(reg.to_json())
    os.chmod(stack.keys / "registry.json", 0o600)
    try:
        yield stack.start()
    finally:
        stack.stop()


def test_hijack_refused_with_registry(registered_stack: Stack) -> None:
    _ten_writes_all_stored(registered_stack)


def test_forged_state_event_impossible(registered_stack: Stack) -> None:
    """The attacker publishes a forged change on the state bus between real writes: no
    subscriber ever sees it (dropped and counted); every real change arrives."""
    stack = registered_stack
    pub_ep, sub_ep = stack.bus("state")
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        sub = Subscriber(sub_ep, [SCOPE.encode()], curve=stack.curve("client"), context=ctx)
        forger = Publisher(pub_ep, curve=stack.curve("attacker"), context=ctx)
        assert forger.wait_for_subscriber(SCOPE.encode(), timeout=30)
        forged = b'{"op":"set","key":"forged","value":"x","version":1,"ts":0,"revision":999999}'
        seen: list[bytes] = []
        with stack.client() as c:
            sc = StateClient(c)

            def real_change_arrives(i: int) -> bool:
                forger.publish(SCOPE.encode(), forged)
                sc.set(SCOPE, f"w{i}", "real", create=True)
                msg = sub.recv(timeout=0.5)
                while msg is not None:
                    seen.append(msg.payload)
                    msg = sub.recv(timeout=0.1)
                return any(b'"w%d"' % i in p for p in seen)

            for i in range(5):
                wait_for(lambda i=i: real_change_arrives(i), 30, f"real change {i}")  # type: ignore[misc]
        assert not any(b"forged" in p for p in seen), "a forged state event was delivered"
        text = http_get(stack.url("broker", "/metrics"), timeout=5.0)[1]
        dropped = metric_value(
            text, "plantd_bus_dropped_messages_total", {"bus": "state", "reason": "forbidden"}
        )
        assert dropped >= 5
        sub.close()
        forger.close()
    finally:
        ctx.destroy(linger=0)
