"""Helpers for tests that run the broker service (and modules) as real processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plantd.common import contract
from plantd.common.curve import generate_keypair, write_keypair

PYTHON = sys.executable
# The box is shared and loaded: process start-up alone can take a few seconds.
START_TIMEOUT = 40.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports: all held open at once, so the kernel cannot hand one out
    twice (separate ``free_port()`` calls can, and the broker then refuses its bus list)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_for(cond: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``cond`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - test URL
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, OSError):
        return 0, ""


def metric_value(text: str, name: str, labels: Mapping[str, str] | None = None) -> float:
    """The value of one sample in Prometheus text output (0.0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        if head.split("{", 1)[0] != name:
            continue
        if labels and not all(f'{k}="{v}"' in head for k, v in labels.items()):
            continue
        return float(value)
    return 0.0


def _bus_ports() -> dict[str, tuple[int, int]]:
    ports = iter(free_ports(2 * len(contract.BUS_PORTS)))
    return {name: (next(ports), next(ports)) for name in contract.BUS_PORTS}


@dataclass
class BrokerPorts:
    mdp: int = field(default_factory=free_port)
    http: int = field(default_factory=free_port)
    buses: dict[str, tuple[int, int]] = field(default_factory=_bus_ports)

    def __post_init__(self) -> None:
        # Distinct from each other as well (the bus ports are distinct among themselves).
        taken = {p for pair in self.buses.values() for p in pair}
        while self.mdp in taken:
            self.mdp = free_port()
        taken.add(self.mdp)
        while self.http in taken:
            self.http = free_port()

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.mdp}"

    def bus(self, name: str) -> tuple[str, str]:
        pub, sub = self.buses[name]
        return f"tcp://127.0.0.1:{pub}", f"tcp://127.0.0.1:{sub}"

    def args(self) -> list[str]:
        buses = ",".join(f"{n}={p}:{s}" for n, (p, s) in self.buses.items())
        return [
            "--endpoint",
            f"tcp://127.0.0.1:{self.mdp}",
            "--http-port",
            str(self.http),
            "--http-host",
            "127.0.0.1",
            "--bus-bind",
            "127.0.0.1",
            "--buses",
            buses,
        ]


class ServiceProcess:
    """A plantd component run as ``python -m <module>``, its stderr captured to a file."""

    def __init__(
        self,
        module: str,
        args: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        http_port: int | None = None,
    ) -> None:
        self.module = module
        self.args = list(args)
        self.log_path = log_path
        self.http_port = http_port
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PLANTD_")}
        self.env.update(env or {})
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [PYTHON, "-m", self.module, *self.args],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            env=self.env,
        )
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def ready(self) -> bool:
        return http_get(self.url + contract.PATH_READYZ, timeout=1.0)[0] == 200

    def wait_ready(self, timeout: float = START_TIMEOUT) -> ServiceProcess:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while not self.ready():
            code = self.proc.poll()
            if code is not None:
                raise AssertionError(f"{self.module} exited with {code}:\n{self.text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.module} not ready after {timeout} s:\n{self.text()}")
            time.sleep(0.05)
        return self

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.module} still running after {timeout} s") from None

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; SIGKILL as a last resort (the test then fails on the code)."""
        assert self.proc is not None
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            return -9
        finally:
            self._log.close()

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text().splitlines() if line.strip()]


def broker_process(
    tmp: Path,
    ports: BrokerPorts,
    *,
    curve_keys: Path | None = None,
    extra: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> ServiceProcess:
    curve = ["--curve", "--curve-keys", str(curve_keys)] if curve_keys else ["--no-curve"]
    return ServiceProcess(
        "plantd.broker",
        [*ports.args(), *curve, *extra],
        tmp / f"broker-{ports.mdp}.log",
        env={"PLANTD_BROKER_HEARTBEAT_MS": "500", **(env or {})},
        http_port=ports.http,
    )


def echo_process(
    tmp: Path,
    endpoint: str,
    *,
    curve_keys: Path | None = None,
    extra: Sequence[str] = (),
) -> ServiceProcess:
    http = free_port()
    curve = ["--curve", "--curve-keys", str(curve_keys)] if curve_keys else ["--no-curve"]
    return ServiceProcess(
        "plantd.echo",
        [
            "--broker-endpoint",
            endpoint,
            "--http-port",
            str(http),
            "--http-host",
            "127.0.0.1",
            *curve,
            *extra,
        ],
        tmp / f"echo-{http}.log",
        env={"PLANTD_ECHO_HEARTBEAT_MS": "500"},
        http_port=http,
    )


def make_keys(directory: Path, names: Sequence[str]) -> Path:
    """A curve_keys directory: broker pair plus a pair per name (all admitted by the broker)."""
    for name in (contract.BROKER, *names):
        write_keypair(directory, name, generate_keypair())
    return directory
