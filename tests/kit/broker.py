"""The broker (and the echo module) as real processes on private ports."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from plantd.common import contract

from .net import free_port, free_ports
from .procs import ServiceProcess
from .timing import HEARTBEAT_MS, START_TIMEOUT


def _bus_ports() -> dict[str, tuple[int, int]]:
    ports = iter(free_ports(2 * len(contract.BUS_PORTS)))
    return {name: (next(ports), next(ports)) for name in contract.BUS_PORTS}


@dataclass
class BrokerPorts:
    """Free ports for one broker: MDP, HTTP and a (pub, sub) pair per bus, all distinct."""

    mdp: int = field(default_factory=free_port)
    http: int = field(default_factory=free_port)
    buses: dict[str, tuple[int, int]] = field(default_factory=_bus_ports)
    host: str = "127.0.0.1"  # the MDP port's address: 127.0.0.N, so brokers share one port

    def __post_init__(self) -> None:
        taken = {p for pair in self.buses.values() for p in pair}
        while self.mdp in taken:
            self.mdp = free_port()
        taken.add(self.mdp)
        while self.http in taken:
            self.http = free_port()

    @property
    def endpoint(self) -> str:
        return f"tcp://{self.host}:{self.mdp}"

    def bus(self, name: str) -> tuple[str, str]:
        """(publishers' endpoint, subscribers' endpoint) of bus ``name``."""
        pub, sub = self.buses[name]
        return f"tcp://127.0.0.1:{pub}", f"tcp://127.0.0.1:{sub}"

    def args(self) -> list[str]:
        buses = ",".join(f"{n}={p}:{s}" for n, (p, s) in self.buses.items())
        return [
            "--endpoint", self.endpoint,
            "--http-port", str(self.http),
            "--http-host", "127.0.0.1",
            "--bus-bind", "127.0.0.1",
            "--buses", buses,
        ]  # fmt: skip


class BrokerProcess(ServiceProcess):
    """``python -m plantd.broker`` on ``ports``; CURVE on with ``keys_dir``, else off."""

    def __init__(
        self,
        workdir: Path,
        ports: BrokerPorts | None = None,
        *,
        curve_keys: Path | None = None,
        extra: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        heartbeat_ms: int = HEARTBEAT_MS,
        shutdown_quiet_ms: int = 0,
        orphan_wait_ms: int = 0,
    ) -> None:
        self.workdir = workdir
        self.ports = ports or BrokerPorts()
        self.keys_dir = curve_keys
        self.extra = list(extra)
        # Through the environment, so a test's own --heartbeat-ms in ``extra`` still wins.
        # The quiet period after SIGTERM (1 s by default) only matters to a test of the drain
        # (those pass it); elsewhere it would add a second to every broker's teardown.
        env = {
            "PLANTD_BROKER_HEARTBEAT_MS": str(heartbeat_ms),
            "PLANTD_BROKER_SHUTDOWN_QUIET_MS": str(shutdown_quiet_ms),
            "PLANTD_BROKER_ORPHAN_WAIT_MS": str(orphan_wait_ms),
            **(env or {}),
        }
        super().__init__(
            "plantd.broker",
            self._args(),
            workdir / f"broker-{self.ports.mdp}.log",
            env=env,
            http_port=self.ports.http,
            name="broker",
        )

    def _args(self) -> list[str]:
        curve = ["--curve", "--curve-keys", str(self.keys_dir)] if self.keys_dir else ["--no-curve"]
        return [*self.ports.args(), *curve, *self.extra]

    @property
    def endpoint(self) -> str:
        return self.ports.endpoint

    def bus(self, name: str) -> tuple[str, str]:
        return self.ports.bus(name)

    @property
    def state_pub(self) -> str:
        return self.ports.bus("state")[0]

    @property
    def state_sub(self) -> str:
        return self.ports.bus("state")[1]

    def start_ready(self, attempts: int = 3, timeout: float = START_TIMEOUT) -> BrokerProcess:
        """Start and wait for ``/readyz``; if it exits first (another process took one of its
        free ports meanwhile), retry on fresh ports. AssertionError with the log otherwise."""
        for _ in range(attempts):
            self._spawn()
            if self.start_or_exit(timeout):
                return self
            self.ports = BrokerPorts()
            self.args = self._args()
            self.http_port = self.ports.http
            self.log_path = self.workdir / f"broker-{self.ports.mdp}.log"
        raise AssertionError(f"the broker did not start in {attempts} attempts:\n{self.log()}")


def broker_process(
    tmp: Path,
    ports: BrokerPorts | None = None,
    *,
    curve_keys: Path | None = None,
    extra: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    heartbeat_ms: int = HEARTBEAT_MS,
    shutdown_quiet_ms: int = 0,
    orphan_wait_ms: int = 0,
) -> BrokerProcess:
    """A broker process, not started yet: ``.start().wait_ready()`` or ``.start_ready()``."""
    return BrokerProcess(
        tmp,
        ports,
        curve_keys=curve_keys,
        extra=extra,
        env=env,
        heartbeat_ms=heartbeat_ms,
        shutdown_quiet_ms=shutdown_quiet_ms,
        orphan_wait_ms=orphan_wait_ms,
    )


def start_broker(
    tmp: Path,
    *,
    curve_keys: Path | None = None,
    extra: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    heartbeat_ms: int = HEARTBEAT_MS,
) -> BrokerProcess:
    """A broker process on fresh free ports, started and ready (retried on a port race)."""
    return broker_process(
        tmp, curve_keys=curve_keys, extra=extra, env=env, heartbeat_ms=heartbeat_ms
    ).start_ready()


def echo_process(
    tmp: Path,
    endpoint: str,
    *,
    curve_keys: Path | None = None,
    extra: Sequence[str] = (),
    heartbeat_ms: int = HEARTBEAT_MS,
) -> ServiceProcess:
    """``python -m plantd.echo`` attached to ``endpoint``, not started yet."""
    http = free_port()
    curve = ["--curve", "--curve-keys", str(curve_keys)] if curve_keys else ["--no-curve"]
    where = ["--broker-endpoint", endpoint, "--http-port", str(http), "--http-host", "127.0.0.1"]
    return ServiceProcess(
        "plantd.echo",
        [*where, *curve, *extra],
        tmp / f"echo-{http}.log",
        env={"PLANTD_ECHO_HEARTBEAT_MS": str(heartbeat_ms)},
        http_port=http,
        name="echo",
    )


def make_keys(directory: Path, names: Sequence[str] = (contract.STATE, contract.CLIENT)) -> Path:
    """A CURVE key directory: the broker's pair plus one per name, all admitted by the broker
    (the ``plantd keys generate`` layout)."""
    from plantd.common.curve import generate_keypair, write_keypair

    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name in dict.fromkeys((contract.BROKER, *names)):
        write_keypair(directory, name, generate_keypair())
    return directory
