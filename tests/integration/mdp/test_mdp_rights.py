"""Machine identities on the bus, end to end: a real ``plantd broker`` process, real workers
and clients over CURVE. Who may register which name, registry reloads, the caller frame."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from tests.kit import (
    HEARTBEAT_MS,
    BrokerProcess,
    broker_process,
    http_get,
    make_keys,
    metric_value,
    require,
    start_broker,
    wait_for,
)

from plantd.bus import Subscriber
from plantd.common import contract
from plantd.common.audit import verify_chain
from plantd.common.keys import load_client
from plantd.common.registry import Identity, Registry, enrol_own, own_keys
from plantd.mdp import BrokerError, Client, Worker, codec
from plantd.mdp.caller import MARKER, Caller, encode, split_caller

pytestmark = pytest.mark.integration

STATE = contract.SERVICE_STATE
NAMES = (contract.STATE, contract.CLIENT, contract.ECHO, "mallory", "plc")


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    require(zmq.has("curve"), "this libzmq has no CURVE support")
    return make_keys(tmp_path / "keys", NAMES)


def public(keys: Path, name: str) -> str:
    return load_client(keys, name).public.decode()


def write_registry(keys: Path, reg: Registry) -> None:
    tmp = keys / ".registry.tmp"
    tmp.write_bytes(reg.to_json())
    os.chmod(tmp, 0o600)
    tmp.replace(keys / "registry.json")  # atomic, as `plantd up` writes it


def base_registry(keys: Path) -> Registry:
    reg = enrol_own(None, {**own_keys(keys), public(keys, contract.CLIENT): contract.CLIENT})
    assert reg is not None
    plc = Identity("plc", "module", public(keys, "plc"), ("org.example.line1.*",))
    return reg.with_identity(plc)


class Served:
    """A worker on ``service`` with key ``name``, counting what it handled."""

    def __init__(self, broker: BrokerProcess, keys: Path, name: str, service: str,
                 *, caller_identity: bool = False) -> None:  # fmt: skip
        self.handled = 0
        self.callers: list[Caller | None] = []
        self.lock = threading.Lock()
        self.tag = name.encode()

        def handle(frames: list[bytes]) -> list[bytes]:
            who, body = split_caller(frames)
            with self.lock:
                self.handled += 1
                self.callers.append(who)
            return [self.tag, *body]

        self.worker = Worker(
            broker.endpoint,
            service,
            handle,
            heartbeat_ms=HEARTBEAT_MS,
            curve=load_client(keys, name),
            caller_identity=caller_identity,
        ).start()

    def stop(self) -> None:
        self.worker.stop()


def refusals(broker: BrokerProcess) -> float:
    text = http_get(broker.url + contract.PATH_METRICS)[1]
    labels = {"reason": "service_not_allowed"}
    return metric_value(text, "plantd_broker_malformed_messages_total", labels)


def live_workers(client: Client, service: str) -> int:
    (reply,) = client.request(contract.SERVICE_BROKER, "services", "{}")
    for s in json.loads(reply)["services"]:
        if s["name"] == service:
            return int(s["workers"])
    return 0


@pytest.fixture
def workers() -> Iterator[list[Served]]:
    started: list[Served] = []
    yield started
    for w in started:
        w.stop()


def _hijack(broker: BrokerProcess, keys: Path, workers: list[Served]) -> None:
    """The issue's attack: an allowed key registers org.plantd.State next to the real one."""
    real = Served(broker, keys, contract.STATE, STATE)
    workers.append(real)
    with Client(broker.endpoint, timeout=10, retries=0, curve=load_client(keys, "client")) as c:
        wait_for(lambda: live_workers(c, STATE) == 1, 20, "the real state worker to register")
        impostor = Served(broker, keys, "mallory", STATE)
        workers.append(impostor)
        wait_for(lambda: refusals(broker) >= 1, 20, "the impostor's READY to be refused")
        replies = [c.request(STATE, b"set", str(i).encode())[0] for i in range(10)]
        assert live_workers(c, STATE) == 1
    assert replies == [b"state"] * 10, "writes reached the impostor"
    assert impostor.handled == 0


def test_no_registry_mode_reserves_plantd_names(
    tmp_path: Path, keys: Path, workers: list[Served]
) -> None:
    broker = start_broker(tmp_path, curve_keys=keys)
    try:
        _hijack(broker, keys, workers)
        # Other names stay open to any allowed key in this mode (documented).
        other = Served(broker, keys, "mallory", "org.example.anything")
        workers.append(other)
        with Client(broker.endpoint, timeout=10, retries=0, curve=load_client(keys, "client")) as c:
            assert c.request("org.example.anything", b"x") == [b"mallory", b"x"]
        assert "no registry of machine identities" in broker.text()
    finally:
        for w in workers:
            w.stop()
        workers.clear()
        assert broker.stop() == 0, broker.log()


def test_registry_mode_hijack_refused_and_audited(
    tmp_path: Path, keys: Path, workers: list[Served]
) -> None:
    write_registry(keys, base_registry(keys))
    broker = start_broker(tmp_path, curve_keys=keys)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        audit = Subscriber(
            broker.bus("event")[1], [b"audit"], curve=load_client(keys, "client"), context=ctx
        )
        # The audit publisher is in-process: wait until our subscription has reached it by
        # provoking denials until one arrives (each READY retry is one more refusal).
        _hijack(broker, keys, workers)
        events: list[dict[str, object]] = []

        def got_event() -> bool:
            msg = audit.recv(timeout=0.2)
            if msg is not None:
                events.append(json.loads(msg.payload))
            return any(e["target"] == STATE for e in events)

        wait_for(got_event, 20, "an audit event for the refused READY")
        ev = next(e for e in events if e["target"] == STATE)
        assert ev["decision"] == "deny" and ev["reason"] == "RESERVED_SERVICE"
        assert ev["action"] == "bus.register" and ev["source"] == public(keys, "mallory")
        assert str(ev["producer"]).startswith("broker@")
        assert verify_chain([e for e in events if e["producer"] == ev["producer"]][:1])
        audit.close()
    finally:
        for w in workers:
            w.stop()
        workers.clear()
        ctx.destroy(linger=0)
        assert broker.stop() == 0, broker.log()


def test_enrolled_module_serves_only_its_own_names(
    tmp_path: Path, keys: Path, workers: list[Served]
) -> None:
    write_registry(keys, base_registry(keys))
    broker = start_broker(tmp_path, curve_keys=keys)
    try:
        ok = Served(broker, keys, "plc", "org.example.line1.Press")
        workers.append(ok)
        with Client(broker.endpoint, timeout=10, retries=0, curve=load_client(keys, "client")) as c:
            assert c.request("org.example.line1.Press", b"p") == [b"plc", b"p"]
            before = refusals(broker)
            for svc in ("org.example.line2.Press", "org.plantd.module.Echo"):
                workers.append(Served(broker, keys, "plc", svc))
            # Unregistered (allowed by CURVE, not in the registry): serves nothing.
            workers.append(Served(broker, keys, "mallory", "org.example.line1.Other"))
            wait_for(lambda: refusals(broker) >= before + 3, 20, "three refused READYs")
            for svc in ("org.example.line2.Press", "org.example.line1.Other"):
                assert live_workers(c, svc) == 0
            assert live_workers(c, "org.example.line1.Press") == 1
    finally:
        for w in workers:
            w.stop()
        workers.clear()
        assert broker.stop() == 0, broker.log()


def test_registry_reload_grants_and_revokes_without_dropping_others(
    tmp_path: Path, keys: Path, workers: list[Served]
) -> None:
    reg = base_registry(keys)
    write_registry(keys, reg)
    broker = start_broker(tmp_path, curve_keys=keys, extra=["--registry-poll-ms", "200"])
    try:
        plc = Served(broker, keys, "plc", "org.example.line1.Press")
        new = Served(broker, keys, "mallory", "org.example.new.Svc")
        workers += [plc, new]
        with Client(broker.endpoint, timeout=10, retries=0, curve=load_client(keys, "client")) as c:
            wait_for(lambda: live_workers(c, "org.example.line1.Press") == 1, 20, "plc registered")
            assert live_workers(c, "org.example.new.Svc") == 0
            # Grant mallory a name: its worker's next READY (it retries) is accepted.
            granted = reg.with_identity(
                Identity("mallory", "module", public(keys, "mallory"), ("org.example.new.*",))
            )
            write_registry(keys, granted)
            wait_for(lambda: live_workers(c, "org.example.new.Svc") == 1, 20, "the grant")
            assert c.request("org.example.new.Svc", b"n") == [b"mallory", b"n"]
            # Revoke plc (by SIGHUP this time): its worker is disconnected; mallory's stays.
            revoked = Registry([i for i in granted.identities() if i.name != "plc"])
            (keys / "registry.json").write_bytes(revoked.to_json())
            broker.signal(signal.SIGHUP)
            wait_for(lambda: live_workers(c, "org.example.line1.Press") == 0, 20, "the revocation")
            assert c.request("org.example.new.Svc", b"still") == [b"mallory", b"still"]
            # A broken registry keeps the last good rights (and the broker keeps running).
            (keys / "registry.json").write_text("{broken")
            broker.signal(signal.SIGHUP)
            wait_for(lambda: "registry reload failed" in broker.text(), 20, "the reload error")
            assert c.request("org.example.new.Svc", b"again") == [b"mallory", b"again"]
        assert broker.alive()
    finally:
        for w in workers:
            w.stop()
        workers.clear()
        assert broker.stop() == 0, broker.log()


def test_caller_frame_and_forgery(tmp_path: Path, keys: Path, workers: list[Served]) -> None:
    write_registry(keys, base_registry(keys))
    broker = start_broker(tmp_path, curve_keys=keys)
    try:
        who = Served(broker, keys, "plc", "org.example.line1.Who", caller_identity=True)
        plain = Served(broker, keys, "plc", "org.example.line1.Plain")
        workers += [who, plain]
        with Client(broker.endpoint, timeout=10, retries=0, curve=load_client(keys, "client")) as c:
            assert c.request("org.example.line1.Who", b"hi") == [b"plc", b"hi"]
            # known to the registry: its permissions (none for the CLI's key) travel too
            assert who.callers == [Caller(public(keys, "client"), "client", "client", ())]
            # A standard worker keeps plain MDP: no identity frame in its body.
            assert c.request("org.example.line1.Plain", b"hi") == [b"plc", b"hi"]
            assert plain.callers == [None]
            # A client forging the frame is refused, and the worker never sees it.
            forged = encode(public(keys, contract.STATE), "state", "plantd")
            with pytest.raises(BrokerError) as info:
                c.request("org.example.line1.Who", MARKER, forged, b"x")
            assert info.value.code == "BAD_REQUEST"
        assert who.handled == 1
    finally:
        for w in workers:
            w.stop()
        workers.clear()
        assert broker.stop() == 0, broker.log()


def test_registry_needs_curve_and_must_exist(tmp_path: Path, keys: Path) -> None:
    proc = broker_process(tmp_path, extra=["--registry", str(keys / "registry.json")]).start()
    assert proc.wait_exit() != 0
    assert "needs CURVE" in proc.text()
    proc = broker_process(
        tmp_path, curve_keys=keys, extra=["--registry", str(tmp_path / "nope.json")]
    ).start()
    assert proc.wait_exit() != 0
    assert "does not exist" in proc.text()


def test_reused_routing_id_inherits_neither_key_nor_requests(tmp_path: Path, keys: Path) -> None:
    """A peer may choose its routing id: one that takes a departed worker's id (visible in
    `services`) must not be believed to hold that worker's key, nor receive its requests."""
    broker = start_broker(tmp_path, curve_keys=keys)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:

        def dealer(name: str) -> zmq.Socket[bytes]:
            s = ctx.socket(zmq.DEALER)
            s.linger = 0
            s.routing_id = b"VICTIM"
            load_client(keys, name).apply(s)
            s.connect(broker.endpoint)
            return s

        victim = dealer(contract.STATE)
        victim.send_multipart(codec.encode_ready(STATE.encode()))
        assert victim.poll(10_000), "the broker never answered the victim's READY"
        victim.close(0)
        attacker: zmq.Socket[bytes] | None = None

        def key_change_seen() -> bool:
            nonlocal attacker
            if attacker is None:
                attacker = dealer("mallory")
            attacker.send_multipart(codec.encode_worker_heartbeat())
            text = http_get(broker.url + contract.PATH_METRICS)[1]
            labels = {"reason": "peer_key_changed"}
            seen = metric_value(text, "plantd_broker_malformed_messages_total", labels) >= 1
            if not seen:  # the broker still had the victim's pipe: the id was refused
                attacker.close(0)
                attacker = None
            return seen

        wait_for(key_change_seen, 30, "the broker to notice the routing id's new key")
        assert attacker is not None
        with Client(broker.endpoint, timeout=8, retries=0, curve=load_client(keys, "client")) as c:
            assert live_workers(c, STATE) == 0
            with pytest.raises(BrokerError):
                c.request(STATE, b"set", b"x")
        while attacker.poll(200):
            cmd = codec.decode_worker_command(attacker.recv_multipart())
            assert not isinstance(cmd, codec.WorkerRequest), "the attacker got the request"
        attacker.close(0)
    finally:
        ctx.destroy(linger=0)
        assert broker.stop() == 0, broker.log()
