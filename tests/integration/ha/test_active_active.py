"""Active-active brokers (docs/ha.md), all real processes on CURVE: one module serves the
clients of every broker, a client with the broker set rides out the loss of one broker, and
a publisher reaches subscribers on every broker, once each.

Figures (requests, failures, time to recover) are printed: run with -s to see them.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from tests.integration.broker.brokerkit import (
    BrokerProcess,
    ServiceProcess,
    broker_process,
    echo_process,
    make_keys,
)
from tests.kit.procs import PYTHON, base_env
from tests.kit.proxy import TcpRelay
from tests.kit.timing import HEARTBEAT_MS
from tests.kit.wait import wait_for

from plantd.bus import Publisher, Subscriber
from plantd.common import contract
from plantd.common.keys import load_client
from plantd.mdp import AsyncWorker, Client, Worker
from plantd.mdp.errors import BrokerError, EndpointError, RequestTimeout

pytestmark = pytest.mark.integration

ECHO = contract.SERVICE_ECHO
ORPHAN_WAIT_MS = 250  # as the operator renders for several brokers
QUIET_MS = 1_000  # the broker's default shutdown_quiet_ms


@dataclass
class Plant:
    keys: Path
    brokers: list[BrokerProcess]
    echo: ServiceProcess

    @property
    def broker_set(self) -> str:
        return ",".join(b.endpoint for b in self.brokers)

    def client(self, endpoint: str, **kw: float) -> Client:
        return Client(endpoint, curve=load_client(self.keys, contract.CLIENT), **kw)  # type: ignore[arg-type]


def start_plant(tmp: Path, brokers: int = 3) -> Plant:
    keys = make_keys(tmp / "keys", (contract.ECHO, contract.CLIENT, contract.STATE))
    # The product's drain settings (docs/ha.md), the quiet period included.
    procs = [
        broker_process(tmp, curve_keys=keys, shutdown_quiet_ms=QUIET_MS).start_ready()
        for _ in range(brokers)
    ]
    endpoints = ",".join(b.endpoint for b in procs)
    echo = echo_process(tmp, endpoints, curve_keys=keys).start()
    echo.wait_ready()
    plant = Plant(keys, procs, echo)
    for broker in procs:  # readiness needs one broker; the test wants all three
        wait_for(
            lambda b=broker: served_by(plant, b), 20, f"echo registered with {broker.endpoint}"
        )
    return plant


def stop_plant(plant: Plant) -> None:
    plant.echo.stop()
    for broker in plant.brokers:
        broker.stop()


def served_by(plant: Plant, broker: BrokerProcess, service: str = ECHO) -> bool:
    with plant.client(broker.endpoint, timeout=2.0, retries=0) as c:
        return c.mmi("mmi.service", service) == [b"200"]


@pytest.fixture
def plant(tmp_path: Path) -> Iterator[Plant]:
    p = start_plant(tmp_path)
    try:
        yield p
    finally:
        stop_plant(p)


def test_one_module_serves_the_clients_of_every_broker(plant: Plant) -> None:
    for i, broker in enumerate(plant.brokers):
        with plant.client(broker.endpoint, timeout=5.0, retries=0) as c:
            assert c.request(ECHO, "echo", f"via broker {i}") == [f"via broker {i}".encode()]
    # A client of the whole set is spread over the brokers (libzmq's round robin).
    with plant.client(plant.broker_set, timeout=5.0, retries=0) as c:
        for n in range(30):
            assert c.request(ECHO, "echo", str(n)) == [str(n).encode()]
    # The module's log names every broker it serves on.
    for broker in plant.brokers:
        assert f"serving on broker {broker.endpoint}" in plant.echo.text()


@dataclass
class Load:
    """A client of the broker set sending echo requests back to back in a thread."""

    plant: Plant
    idempotent: bool
    ok: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    last_error: dict[str, str] = field(default_factory=dict)  # code -> when, and what it said
    first_ok_after: dict[float, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _times: list[tuple[float, bool]] = field(default_factory=list)

    def run(self) -> None:
        # Timeouts as a user would set them: 1 s a try; 3 tries for an idempotent request.
        retries = 3 if self.idempotent else 0
        with self.plant.client(self.plant.broker_set, timeout=1.0, retries=retries) as c:
            n = 0
            while not self._stop.is_set():
                n += 1
                try:
                    got = c.request(ECHO, "echo", str(n), idempotent=self.idempotent)
                    assert got == [str(n).encode()], got
                    self.ok += 1
                    self._times.append((time.monotonic(), True))
                except (RequestTimeout, BrokerError) as exc:
                    code = exc.code if isinstance(exc, BrokerError) else "RequestTimeout"
                    self.errors[code] = self.errors.get(code, 0) + 1
                    self.last_error[code] = f"{time.monotonic():.2f} {exc}"
                    self.failed += 1
                    self._times.append((time.monotonic(), False))

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        return thread

    def stop(self, thread: threading.Thread) -> None:
        self._stop.set()
        thread.join(10)

    def failed_after(self, since: float) -> int:
        return sum(1 for t, ok in self._times if not ok and t > since)

    def longest_silence(self, since: float) -> float:
        """The longest time without an answer from ``since`` on (the time to recover)."""
        answered = [since] + [t for t, ok in self._times if ok and t > since]
        return max(b - a for a, b in itertools.pairwise(answered))


def test_losing_one_of_three_brokers_under_load(plant: Plant) -> None:
    loads = [Load(plant, idempotent=True), Load(plant, idempotent=False)]
    threads = [load.start() for load in loads]
    try:
        wait_for(lambda: all(load.ok >= 50 for load in loads), 20, "load running")
        killed = time.monotonic()
        plant.brokers[0].kill9()
        before = [load.ok for load in loads]
        wait_for(
            lambda: all(load.ok >= b + 200 for load, b in zip(loads, before, strict=True)),
            30,
            "200 more requests each, with one broker gone",
        )
    finally:
        for load, thread in zip(loads, threads, strict=True):
            load.stop(thread)
    safe, unsafe = loads
    print(
        f"\n[ha] kill -9 of 1 of 3 brokers: idempotent {safe.ok} ok / {safe.failed} failed, "
        f"longest silence {safe.longest_silence(killed):.2f}s; non-idempotent {unsafe.ok} "
        f"ok / {unsafe.failed} failed, longest silence {unsafe.longest_silence(killed):.2f}s"
    )
    # Retried on another broker: nothing an idempotent caller sees fails.
    assert safe.failed == 0
    # One request at a time: only the one in flight at the dying broker can be lost.
    assert unsafe.failed <= 1
    # Recovered within a request timeout and its retries, well inside the 10 s target.
    assert safe.longest_silence(killed) < 5.0 and unsafe.longest_silence(killed) < 5.0
    # The module still serves on the other two.
    assert all(served_by(plant, b) for b in plant.brokers[1:])


def test_a_publisher_reaches_subscribers_on_every_broker_once(plant: Plant) -> None:
    pub_endpoints = ",".join(b.bus("event")[0] for b in plant.brokers)
    curve = load_client(plant.keys, contract.CLIENT)
    subs = [Subscriber(b.bus("event")[1], [b"ha."], curve=curve) for b in plant.brokers]
    publisher = Publisher(pub_endpoints, curve=load_client(plant.keys, contract.STATE))
    try:
        assert publisher.connected_to == pub_endpoints.split(",")
        got: list[list[bytes]] = [[] for _ in subs]

        def drain() -> None:
            for i, sub in enumerate(subs):
                while (msg := sub.recv(timeout=0)) is not None:
                    got[i].append(msg.payload)

        def everyone_hears_a_probe() -> bool:
            publisher.publish("ha.probe", b"probe")  # the slow joiner: until all subscribed
            drain()
            return all(b"probe" in g for g in got)

        wait_for(everyone_hears_a_probe, 20, "every broker's subscriber hears the publisher")
        sent = [str(n).encode() for n in range(100)]
        for payload in sent:
            publisher.publish("ha.n", payload)

        def all_arrived() -> bool:
            drain()
            return all(len([p for p in g if p != b"probe"]) >= len(sent) for g in got)

        wait_for(all_arrived, 20, "100 messages at every subscriber")
        # One path per subscriber keeps order: a duplicate would arrive before this marker.
        publisher.publish("ha.end", b"end")

        def all_ended() -> bool:
            drain()
            return all(b"end" in g for g in got)

        wait_for(all_ended, 20, "the end marker at every subscriber")
        for g in got:
            assert [p for p in g if p not in (b"probe", b"end")] == sent  # once each, in order
    finally:
        publisher.close()
        for sub in subs:
            sub.close()


def test_plant_services_asks_every_broker_of_a_set_and_says_which_answered(
    plant: Plant, tmp_path: Path
) -> None:
    def plant_services() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PYTHON, "-m", "plantd.cli.plant", "--curve-keys", str(plant.keys), "--timeout", "2",
             "-e", plant.broker_set, "--json", "services"],
            capture_output=True, text=True, timeout=60, env=base_env({"HOME": str(tmp_path)}),
        )  # fmt: skip

    done = plant_services()
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout)["brokers"]
    assert [a["endpoint"] for a in answers] == [b.endpoint for b in plant.brokers]
    for answer in answers:
        echo = next(s for s in answer["services"] if s["service"] == ECHO)
        assert echo["workers"] == 1  # the one module, registered with each broker

    plant.brokers[1].kill9()
    done = plant_services()
    assert done.returncode == 3  # unreachable: one broker of the plant is down
    answers = json.loads(done.stdout)["brokers"]
    assert "error" in answers[1] and answers[1]["endpoint"] == plant.brokers[1].endpoint
    assert all(any(s["service"] == ECHO for s in answers[i]["services"]) for i in (0, 2))
    assert f"1 of 3 brokers did not answer: {plant.brokers[1].endpoint}" in done.stderr


def test_a_blocking_worker_takes_a_broker_set_and_an_async_one_says_what_to_use(
    plant: Plant,
) -> None:
    def shout(frames: list[bytes]) -> list[bytes]:
        return [f.upper() for f in frames]

    curve = load_client(plant.keys, contract.STATE)
    worker = Worker(
        plant.broker_set, "test.shout", shout, credit=3, curve=curve, heartbeat_ms=HEARTBEAT_MS
    ).start()
    try:
        for broker in plant.brokers:
            with plant.client(broker.endpoint, timeout=5.0, retries=2) as c:
                got = wait_for(
                    lambda c=c: c.request("test.shout", "hi", idempotent=True),
                    20,
                    f"the blocking worker on {broker.endpoint}",
                    retry_on=(BrokerError,),
                )
                assert got == [b"HI"]
        assert worker.inner.handled >= 3
    finally:
        worker.stop()
    with pytest.raises(EndpointError, match="WorkerFleet"):
        AsyncWorker(plant.broker_set, "test.shout", shout)


def test_a_draining_broker_refuses_and_the_client_moves_to_another(plant: Plant) -> None:
    """SIGTERM: the broker finishes what its workers hold and refuses new requests unrun
    (SHUTTING_DOWN); a client of the set sends those again elsewhere, so none fails."""
    draining = plant.brokers[0]
    release, started = threading.Event(), threading.Event()

    def slow(frames: list[bytes]) -> list[bytes]:
        started.set()
        release.wait(10)  # holds the draining broker open while the test sends
        return frames

    curve = load_client(plant.keys, contract.STATE)
    worker = Worker(
        draining.endpoint, "test.slow", slow, curve=curve, heartbeat_ms=HEARTBEAT_MS
    ).start()
    held: list[list[bytes]] = []
    try:
        wait_for(lambda: served_by(plant, draining, "test.slow"), 20, "the slow worker")
        holder = threading.Thread(
            target=lambda: held.append(
                plant.client(draining.endpoint, timeout=15.0, retries=0).request("test.slow", "x")
            )
        )
        holder.start()
        assert started.wait(10), "the slow request never reached its worker"
        draining.signal()  # SIGTERM: drain
        wait_for(lambda: not draining.ready(), 10, "the broker draining (unready)")
        t_sent = time.monotonic()
        with plant.client(plant.broker_set, timeout=5.0, retries=0) as c:
            for n in range(30):  # round robin: about a third reach the draining broker first
                assert c.request(ECHO, "echo", str(n)) == [str(n).encode()]
        assert draining.alive()  # still draining: the refusals came from it
        print(f"[ha] 30 requests during the drain in {time.monotonic() - t_sent:.2f}s")
        release.set()
        holder.join(10)
        assert held == [[b"x"]], draining.log()  # what it held in flight was finished
        assert draining.wait_exit(10) == 0
    finally:
        release.set()
        worker.stop()


def test_a_draining_broker_closes_only_once_its_clients_stopped_sending(plant: Plant) -> None:
    """Closing a socket loses what a client has just sent to it, so after SIGTERM a broker
    keeps refusing (SHUTTING_DOWN) while requests come, and closes shutdown_quiet_ms after the
    last one. A client of this broker alone sees a refusal for every request, never silence."""
    draining = plant.brokers[0]
    draining.signal()  # SIGTERM; nothing in flight, so only the quiet period keeps it open
    wait_for(lambda: not draining.ready(), 10, "the broker draining (unready)")
    refused = 0
    until = time.monotonic() + 2.5  # more than twice the quiet period
    with plant.client(draining.endpoint, timeout=0.5, retries=0) as c:
        while time.monotonic() < until:
            with pytest.raises(BrokerError) as refusal:  # not RequestTimeout: it answered
                c.request(ECHO, "late")
            assert refusal.value.code == "SHUTTING_DOWN"
            refused += 1
            last = time.monotonic()
            assert draining.alive(), draining.log()
    wait_for(lambda: not draining.alive(), 10, "the broker closing once the client stopped")
    quiet_for = time.monotonic() - last
    print(f"[ha] {refused} requests refused while draining; closed {quiet_for:.2f}s after the last")
    assert refused >= 5
    assert quiet_for >= 0.8 * QUIET_MS / 1000, "closed before the quiet period"
    assert draining.wait_exit(5) == 0


def test_a_worker_partitioned_from_one_broker(tmp_path: Path) -> None:
    """The echo module reaches broker 0 through a relay that the test cuts (a silent
    partition: no FIN, no RST) for 4 s, then heals. Broker 0 expires the worker after its
    heartbeat liveness; from then on it refuses echo requests unrun within ORPHAN_WAIT_MS
    (SERVICE_UNAVAILABLE) and the clients send them to another broker, so nothing fails; the
    module re-registers once the link is back."""
    keys = make_keys(tmp_path / "keys", (contract.ECHO, contract.CLIENT, contract.STATE))
    brokers = [
        broker_process(
            tmp_path, curve_keys=keys, shutdown_quiet_ms=QUIET_MS, orphan_wait_ms=ORPHAN_WAIT_MS
        ).start_ready()
        for _ in range(3)
    ]
    relay = TcpRelay(brokers[0].ports.mdp, brokers[0].ports.host).start()
    endpoints = ",".join([relay.endpoint, *(b.endpoint for b in brokers[1:])])
    echo = echo_process(tmp_path, endpoints, curve_keys=keys).start()
    plant = Plant(keys, brokers, echo)
    try:
        echo.wait_ready()
        for broker in brokers:
            wait_for(lambda b=broker: served_by(plant, b), 20, f"echo at {broker.endpoint}")
        loads = [Load(plant, idempotent=True), Load(plant, idempotent=False)]
        threads = [load.start() for load in loads]
        try:
            wait_for(lambda: all(load.ok >= 50 for load in loads), 20, "load running")
            relay.cut()
            cut = time.monotonic()
            wait_for(lambda: not served_by(plant, brokers[0]), 20, "broker 0 expiring echo")
            expired = time.monotonic() - cut
            time.sleep(4.0 - expired if expired < 4.0 else 0)
            relay.heal()
            healed = time.monotonic()
            wait_for(lambda: served_by(plant, brokers[0]), 20, "echo back at broker 0")
            back = time.monotonic() - healed
            ok_at_back = [load.ok for load in loads]
            wait_for(
                lambda: all(load.ok >= b + 100 for load, b in zip(loads, ok_at_back, strict=True)),
                30,
                "100 more requests each after the partition healed",
            )
            settled = healed + back
        finally:
            for load, thread in zip(loads, threads, strict=True):
                load.stop(thread)
        safe, unsafe = loads
        print(
            f"\n[ha] worker partitioned from 1 of 3 brokers for 4 s: expired after {expired:.2f}s, "
            f"re-registered {back:.2f}s after the heal; idempotent {safe.ok} ok / {safe.failed} "
            f"failed {safe.errors}; non-idempotent {unsafe.ok} ok / {unsafe.failed} failed "
            f"{unsafe.errors}"
        )
        # Retried on another broker: an idempotent caller sees nothing fail.
        assert safe.failed == 0, (safe.errors, safe.last_error, f"cut at {cut:.2f}")
        # Once broker 0 knows the worker is gone, its refusals send every request elsewhere:
        # only requests it had handed to the cut-off worker (or sent just then) failed.
        assert unsafe.failed_after(cut + expired + 1.0) == 0, unsafe.errors
        # Nothing fails once the module is registered at broker 0 again.
        assert safe.failed_after(settled) == 0 and unsafe.failed_after(settled + 1.0) == 0
        assert back < 10.0  # recovery target
    finally:
        echo.stop()
        relay.stop()
        for broker in brokers:
            broker.stop()
