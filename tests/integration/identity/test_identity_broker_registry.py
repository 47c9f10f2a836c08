"""The broker follows identity's enrolments (``--identity-registry``), end to end: a real broker
(CURVE, a registry file with the stack's own keys) and a real identity process; an admin enrols
a module key in identity and, within a deadline, a worker with that key may register its
service (and nothing else), loses it when revoked, and keeps it while identity is down."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from identitykit import ADMIN, ADMIN_PASSWORD, BusTap, Identity, identity_process, write_bootstrap
from tests.kit import (
    HEARTBEAT_MS,
    BrokerProcess,
    ServiceProcess,
    http_get,
    make_keys,
    metric_value,
    require,
    start_broker,
    wait_for,
)

from plantd.common import contract
from plantd.common.keys import load_client
from plantd.common.registry import enrol_own, own_keys
from plantd.identity.keys import KeyRing, generate
from plantd.identity.passwords import Hasher
from plantd.identity.service import IdentityService
from plantd.identity.sqlite_store import SqliteStore
from plantd.mdp import Client, Worker
from plantd.mdp.caller import MARKER, encode

pytestmark = pytest.mark.integration

PUMP, VALVE = "acme.Pump", "acme.Valve"
AUDIT = b"audit"
POLL_S = 0.5
DEADLINE = 30.0  # several polls and a worker's reconnect backoff on a loaded machine


def _ip() -> str:
    return f"10.9.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("broker-registry")


@pytest.fixture(scope="module")
def keys(workdir: Path) -> Path:
    require(zmq.has("curve"), "this libzmq has no CURVE support")
    d = make_keys(workdir / "curve", (contract.IDENTITY, contract.CLIENT, "pump", "valve"))
    # The file the broker starts from: plantd's own keys only, as `plantd up` writes it.
    own = {**own_keys(d), load_client(d, contract.CLIENT).public.decode(): contract.CLIENT}
    reg = enrol_own(None, own)
    assert reg is not None
    path = d / "registry.json"
    path.write_bytes(reg.to_json())
    os.chmod(path, 0o600)
    return d


@pytest.fixture(scope="module")
def broker(workdir: Path, keys: Path) -> Iterator[BrokerProcess]:
    extra = ["--identity-registry", "--identity-registry-poll-s", str(POLL_S)]
    b = start_broker(workdir, curve_keys=keys, extra=extra)
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module")
def identity(workdir: Path, broker: BrokerProcess) -> Iterator[ServiceProcess]:
    jwt = workdir / "jwt"
    generate(jwt)
    boot = write_bootstrap(workdir / "bootstrap.json")
    proc = identity_process(
        workdir, broker, jwt_dir=jwt, data_dir=workdir / "data",
        extra=["--bootstrap-file", str(boot)],
    )  # fmt: skip
    proc.start().wait_ready()
    try:
        yield proc
    finally:
        if proc.alive():
            proc.stop()


@pytest.fixture(scope="module")
def idc(broker: BrokerProcess, identity: ServiceProcess) -> Iterator[Identity]:
    c = Identity(broker)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def admin(idc: Identity) -> str:
    doc = idc.login(ADMIN, ADMIN_PASSWORD, ip_address=_ip())
    assert doc["success"], doc
    return str(doc["access_token"])


def public(keys: Path, name: str) -> str:
    return load_client(keys, name).public.decode()


def metrics(broker: BrokerProcess) -> str:
    return http_get(broker.url + contract.PATH_METRICS)[1]


def refusals(broker: BrokerProcess) -> float:
    labels = {"reason": "service_not_allowed"}
    return metric_value(metrics(broker), "plantd_broker_malformed_messages_total", labels)


def broker_info(keys: Path, broker: BrokerProcess) -> Any:
    with Client(broker.endpoint, timeout=5, retries=0, curve=load_client(keys, "client")) as c:
        (reply,) = c.request(contract.SERVICE_BROKER, "broker", "{}")
    return json.loads(reply)


def live_workers(keys: Path, broker: BrokerProcess, service: str) -> int:
    with Client(broker.endpoint, timeout=5, retries=0, curve=load_client(keys, "client")) as c:
        (reply,) = c.request(contract.SERVICE_BROKER, "services", "{}")
    for s in json.loads(reply)["services"]:
        if s["name"] == service:
            return int(s["workers"])
    return 0


def worker(broker: BrokerProcess, keys: Path, name: str, service: str) -> Worker:
    return Worker(
        broker.endpoint,
        service,
        lambda frames: frames,
        heartbeat_ms=HEARTBEAT_MS,
        curve=load_client(keys, name),
    ).start()


def refused(broker: BrokerProcess, keys: Path, name: str, service: str) -> None:
    """A worker with key ``name`` asks for ``service``: the broker refuses it (counted)."""
    before = refusals(broker)
    w = worker(broker, keys, name, service)
    try:
        wait_for(lambda: refusals(broker) > before, DEADLINE, f"{name}'s READY for {service}")
        assert live_workers(keys, broker, service) == 0
    finally:
        w.stop()


def enrol(idc: Identity, admin: str, keys: Path, name: str, service: str) -> None:
    grant = {"name": name, "kind": "module", "public_key": public(keys, name)}
    idc.ok("modules", "enroll", {**grant, "services": [service], "token": admin})


def test_only_the_broker_reads_the_registry_without_a_token(
    broker: BrokerProcess, keys: Path, idc: Identity, admin: str
) -> None:
    assert broker.keys_dir is not None
    # The broker's own fetches succeed without a token.
    wait_for(
        lambda: broker_info(keys, broker)["registry"]["identity"]["ok"],
        DEADLINE,
        "the broker's first fetch from identity",
    )
    tap = BusTap(broker.bus("event")[1], broker.keys_dir, (AUDIT,))
    try:
        for name in (contract.CLIENT, "valve"):  # a client's key, and a module's
            rid = f"not-the-broker-{name}"
            body = json.dumps({"header": {"request_id": rid}})
            curve = load_client(keys, name)

            def refused_and_audited(rid: str = rid, body: str = body, curve: Any = curve) -> bool:
                with Client(broker.endpoint, timeout=10, retries=0, curve=curve) as c:
                    (raw,) = c.request(contract.SERVICE_IDENTITY, "modules", "registry", body)
                doc = json.loads(raw)
                assert doc["success"] is False and doc["code"] == "UNAUTHENTICATED", doc
                return any(e.get("trace_id") == rid for e in tap.events(AUDIT))

            # Repeated until the tap has joined the bus (a subscription takes a moment).
            wait_for(refused_and_audited, DEADLINE, f"{name}'s refusal audited", interval=0.3)
            (event, *_) = [e for e in tap.events(AUDIT) if e.get("trace_id") == rid]
            assert event["action"] == "modules.registry" and event["decision"] == "deny"
            assert event["reason"] == "NO_TOKEN" and event["source"] == curve.public.decode()
        # Nothing else opens up for a token-less caller, and a token still works.
        assert idc.call("modules", "list")["code"] == "UNAUTHENTICATED"
        assert idc.ok("modules", "registry", {"token": admin})["version"] == 1
    finally:
        tap.close()


# ------------------------------------------------- enrolment admits the key: no key file needed


def outside_key(workdir: Path, keys: Path, name: str) -> Any:
    """A module key pair the broker has never seen (not in its key directory)."""
    from plantd.common.curve import generate_keypair, write_keypair

    d = workdir / f"outside-{name}"
    d.mkdir(mode=0o700)
    write_keypair(d, name, generate_keypair())
    (d / "broker.key").write_bytes((keys / "broker.key").read_bytes())
    return load_client(d, name)


def handshake_refusals(broker: BrokerProcess) -> float:
    return metric_value(metrics(broker), "plantd_curve_handshake_failures_total", {"socket": "mdp"})


def answers(broker: BrokerProcess, curve: Any) -> bool:
    """Whether a fresh connection with ``curve`` passes the CURVE handshake: True when MMI
    answers, False only when the broker counted a refused handshake (a slow answer on a
    loaded machine is neither: it is asked again)."""
    before = handshake_refusals(broker)
    try:
        with Client(broker.endpoint, timeout=5, retries=0, curve=curve) as c:
            c.request("mmi.service", contract.SERVICE_BROKER)
        return True
    except Exception:  # no answer: refused, or only slow
        if handshake_refusals(broker) > before:
            return False
        raise AssertionError("no answer and no refused handshake: ask again") from None


def eventually(want: bool, broker: BrokerProcess, curve: Any, what: str) -> None:
    def settled() -> bool:
        try:
            return answers(broker, curve) is want
        except AssertionError:
            return False

    wait_for(settled, DEADLINE, what)


def test_enrolling_a_key_admits_it_to_curve_and_revoking_refuses_it(
    workdir: Path, broker: BrokerProcess, keys: Path, idc: Identity, admin: str
) -> None:
    gauge = outside_key(workdir, keys, "gauge")
    eventually(False, broker, gauge, "an unknown key refused at the handshake")
    grant = {"name": "gauge", "kind": "module", "public_key": gauge.public.decode()}
    idc.ok("modules", "enroll", {**grant, "services": ["acme.Gauge"], "token": admin})
    eventually(True, broker, gauge, "the enrolled key's first handshake")
    w = Worker(
        broker.endpoint, "acme.Gauge", lambda f: f, heartbeat_ms=HEARTBEAT_MS, curve=gauge
    ).start()
    try:
        wait_for(lambda: live_workers(keys, broker, "acme.Gauge") == 1, DEADLINE, "the gauge")
    finally:
        w.stop()
    assert idc.ok("modules", "revoke", {"token": admin, "name": "gauge"})["revoked"]
    eventually(False, broker, gauge, "the revoked key refused at its next handshake")


# (last: it kills identity)


def test_enrolment_revocation_and_identity_down(
    broker: BrokerProcess, keys: Path, idc: Identity, admin: str, identity: ServiceProcess
) -> None:
    refused(broker, keys, "pump", PUMP)  # not enrolled yet: the file alone does not grant it

    enrol(idc, admin, keys, "pump", PUMP)
    enrol(idc, admin, keys, "valve", VALVE)
    pump = worker(broker, keys, "pump", PUMP)
    valve = worker(broker, keys, "valve", VALVE)
    try:
        wait_for(lambda: live_workers(keys, broker, PUMP) == 1, DEADLINE, "the enrolled pump")
        wait_for(lambda: live_workers(keys, broker, VALVE) == 1, DEADLINE, "the enrolled valve")
        refused(broker, keys, "pump", "acme.Other")  # only its own service
        refused(broker, keys, "pump", contract.SERVICE_STATE)  # never a plantd name
        info = broker_info(keys, broker)["registry"]
        assert info["mode"] == "registry" and info["enrolled"] == 2, info
        assert info["identity"]["ok"] is True and info["identity"]["failures"]["error"] == 0

        # Revoked in identity: within a poll the broker disconnects the worker and refuses it.
        assert idc.ok("modules", "revoke", {"token": admin, "name": "pump"})["revoked"]
        wait_for(lambda: live_workers(keys, broker, PUMP) == 0, DEADLINE, "the revoked pump out")
        refused(broker, keys, "pump", PUMP)
        assert live_workers(keys, broker, VALVE) == 1

        # Identity gone: the failures show in /metrics and the valve keeps its rights.
        def failures() -> float:
            text = metrics(broker)
            name = "plantd_broker_identity_registry_fetch_failures_total"
            return sum(metric_value(text, name, {"reason": r}) for r in ("unreachable", "error"))

        before = failures()
        identity.kill9()
        wait_for(lambda: failures() > before, DEADLINE, "failed fetches counted")
        wait_for(
            lambda: metric_value(metrics(broker), "plantd_broker_identity_registry_up") == 0,
            DEADLINE,
            "the registry fetch reported down",
        )
        age = metric_value(metrics(broker), "plantd_broker_identity_registry_age_seconds")
        assert age > 0
        state = broker_info(keys, broker)["registry"]["identity"]
        assert state["ok"] is False and state["last_error"], state
        valve.stop()
        again = worker(broker, keys, "valve", VALVE)  # a fresh registration still succeeds
        try:
            wait_for(lambda: live_workers(keys, broker, VALVE) == 1, DEADLINE, "the valve back")
        finally:
            again.stop()
        assert broker.alive()
    finally:
        pump.stop()
        valve.stop()


# ---------------------------------------------------------------------- in-process: the rule


class _Audit:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def publish(self, topic: str | bytes, payload: bytes) -> None:
        self.events.append(json.loads(payload))


@pytest.mark.parametrize("frames_on", [True, False])
async def test_the_caller_frame_is_believed_only_when_asked_for(
    tmp_path: Path, frames_on: bool
) -> None:
    store = SqliteStore(tmp_path / "data")
    await store.open()
    try:
        generate(tmp_path / "jwt")
        sink = _Audit()
        service = IdentityService(
            store, KeyRing.from_dir(tmp_path / "jwt"), Hasher(memory_kib=8192, time_cost=1),
            sink=sink, caller_frames=frames_on,
        )  # fmt: skip

        async def ask(who: bytes, op: bytes = b"registry") -> Any:
            (raw,) = await service.handle([MARKER, who, b"modules", op, b"{}"])
            return json.loads(raw)

        the_broker = encode(None, "broker", "plantd")
        doc = await ask(the_broker)
        if not frames_on:  # a worker that did not ask never sees the frame: not a request
            assert doc["code"] == "INVALID_MESSAGE"
            return
        assert doc["success"] is True and doc["data"] == {"version": 1, "identities": []}
        assert (await ask(the_broker, b"list"))["code"] == "UNAUTHENTICATED"  # that op only
        for other in (encode("k" * 40, "state", "plantd"), encode(None, "broker", "module")):
            assert (await ask(other))["code"] == "UNAUTHENTICATED"
        denied = [e for e in sink.events if e["decision"] == "deny"]
        assert [e["action"] for e in denied] == ["modules.list", *["modules.registry"] * 2]
    finally:
        await store.close()
