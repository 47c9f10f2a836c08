"""Helpers for identity's integration tests: a real identity process, MDP calls, a bus tap."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.kit import (
    HEARTBEAT_MS,
    BrokerProcess,
    ServiceProcess,
    free_port,
    make_keys,
    start_broker,
)

from plantd.bus import Subscriber
from plantd.common import contract
from plantd.common.keys import load_client
from plantd.mdp import Client

ADMIN = "root-admin"
ADMIN_PASSWORD = "correct battery staple horse, but longer"


def write_bootstrap(path: Path) -> Path:
    doc = {
        "username": ADMIN,
        "email": "root@plant.example",
        "password": ADMIN_PASSWORD,
        "must_change_password": False,
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f)
    return path


def identity_process(
    tmp: Path,
    broker: BrokerProcess,
    *,
    jwt_dir: Path,
    data_dir: Path,
    extra: Sequence[str] = (),
    name: str = "identity",
) -> ServiceProcess:
    """``python -m plantd.identity`` attached to ``broker`` (CURVE on), not started yet."""
    http = free_port()
    assert broker.keys_dir is not None
    args = [
        "--broker-endpoint", broker.endpoint,
        "--bus-endpoint", broker.bus("event")[0],
        "--http-port", str(http),
        "--http-host", "127.0.0.1",
        "--curve-keys", str(broker.keys_dir),
        "--jwt-keys-dir", str(jwt_dir),
        "--data-dir", str(data_dir),
        "--heartbeat-ms", str(HEARTBEAT_MS),
        "--log-format", "json",
        "--republish-s", "0.5",
        *extra,
    ]  # fmt: skip
    return ServiceProcess(
        "plantd.identity", args, tmp / f"{name}-{http}.log", http_port=http, name=name
    )


@contextmanager
def curve_broker(workdir: Path) -> Iterator[BrokerProcess]:
    """A started broker with CURVE on and key pairs for identity and a client; stopped after."""
    keys = make_keys(workdir / "curve", (contract.IDENTITY, contract.CLIENT))
    b = start_broker(workdir, curve_keys=keys)
    try:
        yield b
    finally:
        b.stop()


@contextmanager
def bootstrapped_identity(
    workdir: Path, broker: BrokerProcess, *, jwt_dir: Path, extra: Sequence[str] = ()
) -> Iterator[ServiceProcess]:
    """identity on ``broker`` with the bootstrap admin (:data:`ADMIN`), its store in
    ``workdir/data``, ready; stopped after, which must exit 0."""
    boot = write_bootstrap(workdir / "bootstrap.json")
    proc = identity_process(
        workdir,
        broker,
        jwt_dir=jwt_dir,
        data_dir=workdir / "data",
        extra=["--bootstrap-file", str(boot), *extra],
    )
    proc.start().wait_ready()
    try:
        yield proc
    finally:
        code = proc.stop()
        assert code == 0, f"identity exited {code}:\n{proc.log()}"


class Identity:
    """A blocking MDP client for org.plantd.Identity with the original's frames."""

    def __init__(self, broker: BrokerProcess, timeout: float = 10.0) -> None:
        assert broker.keys_dir is not None
        self.client = Client(
            broker.endpoint,
            timeout=timeout,
            retries=0,
            curve=load_client(broker.keys_dir, contract.CLIENT),
        )

    def call(self, category: str, operation: str, body: dict[str, Any] | None = None) -> Any:
        reply = self.client.request(
            contract.SERVICE_IDENTITY, category, operation, json.dumps(body or {})
        )
        assert len(reply) == 1, reply
        return json.loads(reply[0])

    def ok(self, category: str, operation: str, body: dict[str, Any] | None = None) -> Any:
        doc = self.call(category, operation, body)
        assert doc["success"] is True, doc
        return doc["data"]

    def login(self, identifier: str, password: str, **extra: Any) -> Any:
        return self.call("auth", "login", {"identifier": identifier, "password": password, **extra})

    def close(self) -> None:
        self.client.close()


class BusTap:
    """Collects ``[topic, payload]`` messages of some topics on a bus, in a thread."""

    def __init__(self, endpoint: str, keys_dir: Path, topics: Sequence[bytes]) -> None:
        self.sub = Subscriber(endpoint, topics, curve=load_client(keys_dir, contract.CLIENT))
        self.messages: list[tuple[bytes, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self.sub.recv(timeout=0.1)
            if msg is not None:
                self.messages.append((msg.topic, json.loads(msg.payload)))

    def events(self, topic: bytes) -> list[dict[str, Any]]:
        return [doc for t, doc in list(self.messages) if t == topic]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sub.close()
