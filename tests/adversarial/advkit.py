"""What the adversarial tier (and ``bench.soak``) needs beyond tests.kit: a CURVE stack of real
``plantd`` processes on private loopback ports, a live probe in its own process, RSS readings,
raw hostile sockets.

The probe runs as a separate process (``python -m tests.adversarial.advkit probe ...``) so that an
attack driven from the test process (which holds the GIL while it builds millions of frames)
cannot slow the probe down and be mistaken for the broker stalling.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
from bench._procs import cpu_seconds, memory_kb
from bench._stats import percentile
from tests.kit.net import free_ports, http_get
from tests.kit.procs import ServiceProcess
from tests.kit.timing import HEARTBEAT_MS
from tests.kit.wait import wait_for

from plantd.common.curve import CurveClient
from plantd.common.keys import load_client
from plantd.mdp import BrokerError, Client, RequestTimeout
from plantd.mdp.errors import parse_error_body
from plantd.state.client import StateClient

REPO_ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
ECHO = "org.plantd.module.Echo"
STATE = "org.plantd.State"
# Key pairs every stack gets: the components', the probe's and an attacker's (the probe must not
# share the attacker's key: per-key caps would then throttle the probe too).
KEY_NAMES = ("broker", "echo", "state", "client", "probe", "attacker")
BUS_NAMES = ("state", "event", "metric")
START_TIMEOUT = 60.0  # three Python processes starting at once on a loaded 2-core box


def run_plantd(args: Sequence[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``plantd ARGS`` via this interpreter (what the console script runs)."""
    return subprocess.run(
        [PYTHON, "-m", "plantd.cli.plantd", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=_env(),
    )


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLANTD_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    return env


def generate_keys(directory: Path, names: Sequence[str] = KEY_NAMES) -> Path:
    """Key pairs as ``plantd up`` makes them (``plantd keys generate``)."""
    args = ["keys", "generate", "--dir", str(directory)]
    for name in names:
        args += ["--name", name]
    done = run_plantd(args)
    assert done.returncode == 0, f"plantd keys generate failed:\n{done.stderr}"
    return directory


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    """Broker, echo and (optionally) state as ``plantd <component>`` children, CURVE on."""

    tmp: Path
    with_state: bool = True
    broker_args: Sequence[str] = ()
    echo_args: Sequence[str] = ()
    state_args: Sequence[str] = ()
    heartbeat_ms: int = HEARTBEAT_MS
    keys: Path = field(init=False)
    procs: dict[str, ServiceProcess] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.keys = generate_keys(self.tmp / "keys")
        ports = free_ports(4 + 2 * len(BUS_NAMES))
        self.mdp_port, self.http = (
            ports[0],
            dict(zip(("broker", "echo", "state"), ports[1:4], strict=True)),
        )
        rest = ports[4:]
        self.bus_ports = {n: (rest[2 * i], rest[2 * i + 1]) for i, n in enumerate(BUS_NAMES)}

    # ---- addresses ------------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.mdp_port}"

    def bus(self, name: str) -> tuple[str, str]:
        """(publisher endpoint, subscriber endpoint) of a bus."""
        pub, sub = self.bus_ports[name]
        return f"tcp://127.0.0.1:{pub}", f"tcp://127.0.0.1:{sub}"

    def url(self, component: str, path: str) -> str:
        return f"http://127.0.0.1:{self.http[component]}{path}"

    def metrics(self, component: str = "broker") -> str:
        status, body = http_get(self.url(component, "/metrics"), timeout=5.0)
        assert status == 200, f"{component} /metrics answered {status}: {body[:200]}"
        return body

    # ---- processes ------------------------------------------------------------------------------

    def _common(self, component: str) -> list[str]:
        return [
            "--http-port",
            str(self.http[component]),
            "--http-host",
            "127.0.0.1",
            "--curve",
            "--curve-keys",
            str(self.keys),
            "--heartbeat-ms",
            str(self.heartbeat_ms),
            "--log-format",
            "json",
        ]

    def _argv(self, component: str) -> list[str]:
        if component == "broker":
            buses = ",".join(f"{n}={p}:{s}" for n, (p, s) in self.bus_ports.items())
            return [
                "broker",
                *self._common("broker"),
                "--endpoint",
                self.endpoint,
                "--bus-bind",
                "127.0.0.1",
                "--buses",
                buses,
                *self.broker_args,
            ]
        worker = [component, *self._common(component), "--broker-endpoint", self.endpoint]
        if component == "echo":
            return [*worker, *self.echo_args]
        return [
            *worker,
            "--data-dir",
            str(self.tmp / "state-data"),
            "--bus-endpoint",
            self.bus("state")[0],
            *self.state_args,
        ]

    def _process(self, component: str) -> ServiceProcess:
        return ServiceProcess(
            "plantd.cli.plantd",
            self._argv(component),
            self.tmp / f"{component}.log",
            http_port=self.http[component],
            name=f"plantd {component}",
        )

    def start(self) -> Stack:
        names = ["broker", "echo", *(["state"] if self.with_state else [])]
        for name in names:  # all at once: the workers retry until the broker is up
            self.procs[name] = self._process(name).start()
        for name in names:
            self.procs[name].wait_ready(START_TIMEOUT)
        return self

    def spawn_echo(self, service: str) -> ServiceProcess:
        """One more echo worker, registered under ``service``, on its own HTTP port."""
        name = f"echo-{len(self.procs)}"
        self.http[name] = free_ports(1)[0]
        argv = [*self._argv("echo")]
        argv[argv.index("--http-port") + 1] = str(self.http[name])
        proc = ServiceProcess(
            "plantd.cli.plantd",
            [*argv, "--service", service],
            self.tmp / f"{name}.log",
            http_port=self.http[name],
            name=f"plantd echo ({service})",
        )
        self.procs[name] = proc
        return proc.start()

    @property
    def _keys_arg(self) -> list[str]:
        return ["--curve-keys", str(self.keys)]

    def plant(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """``plant --endpoint E --curve-keys K ARGS`` (the ``client`` key), HOME in tmp."""
        env = {**_env(), "HOME": str(self.tmp / "home"), "COLUMNS": "200"}
        return subprocess.run(
            [PYTHON, "-m", "plantd.cli.plant", "--endpoint", self.endpoint, *self._keys_arg, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=env,
        )

    def restart(self, component: str, *, kill9: bool = True) -> None:
        """Crash (SIGKILL) or stop a component and start it again, waiting for ``/readyz``."""
        proc = self.procs[component]
        if kill9:
            proc.kill9()
        else:
            proc.stop()
        proc.start().wait_ready(START_TIMEOUT)

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            self.procs[name].stop(timeout=15)

    def pid(self, component: str) -> int:
        return self.procs[component].pid

    # ---- clients --------------------------------------------------------------------------------

    def curve(self, name: str = "client") -> CurveClient:
        return load_client(self.keys, name)

    def client(self, name: str = "client", timeout: float = 10.0, **kw: Any) -> Client:
        return Client(self.endpoint, timeout=timeout, retries=0, curve=self.curve(name), **kw)

    def state_client(self, name: str = "client", timeout: float = 10.0) -> StateClient:
        return StateClient(self.client(name, timeout))

    def dealer(
        self, name: str = "attacker", *, rcvhwm: int = 1000, rcvbuf: int = -1, sndhwm: int = 0
    ) -> zmq.Socket[bytes]:
        """A raw CURVE DEALER to the broker: an attacker's socket (``rcvbuf`` small = slow)."""
        sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
        sock.linger = 0
        sock.rcvhwm = rcvhwm
        sock.sndhwm = sndhwm
        if rcvbuf > 0:
            sock.rcvbuf = rcvbuf
        self.curve(name).apply(sock)
        sock.connect(self.endpoint)
        return sock


# ``make_stack(**Stack options)``: the fixture that starts a stack and stops it after the test.
MakeStack = Callable[..., Stack]


def recv_until(sock: zmq.Socket[bytes], timeout: float, count: int = 1) -> list[list[bytes]]:
    """Up to ``count`` messages arriving within ``timeout`` seconds."""
    out: list[list[bytes]] = []
    deadline = time.monotonic() + timeout
    while len(out) < count:
        left = deadline - time.monotonic()
        if left <= 0 or not sock.poll(max(1, int(left * 1000))):
            break
        out.append(sock.recv_multipart())
    return out


def error_code(reply: Sequence[bytes]) -> str | None:
    """The ``plantd.error`` code in a client's reply (``[MDPC02, FINAL, service, *body]``)."""
    body = list(reply[3:]) if reply[:1] == [b"MDPC02"] else list(reply)
    found = parse_error_body(body)
    return found[0] if found else None


# --------------------------------------------------------------------------- memory


@dataclass
class MemoryWatch:
    """RSS baseline per process now; :meth:`growth_mb` = peak (VmHWM) since then minus baseline."""

    pids: dict[str, int]
    baseline_kb: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.baseline_kb = {n: memory_kb(p)[0] for n, p in self.pids.items()}

    def now(self) -> dict[str, tuple[float, float]]:
        """name -> (RSS MB, HWM MB)."""
        out: dict[str, tuple[float, float]] = {}
        for name, pid in self.pids.items():
            rss, hwm = memory_kb(pid)
            out[name] = (rss / 1024, hwm / 1024)
        return out

    def growth_mb(self) -> dict[str, float]:
        return {n: (memory_kb(p)[1] - self.baseline_kb[n]) / 1024 for n, p in self.pids.items()}

    def report(self) -> str:
        parts = []
        for name, (rss, hwm) in self.now().items():
            base = self.baseline_kb[name] / 1024
            parts.append(f"{name} RSS {base:.0f}->{rss:.0f} MB (peak {hwm:.0f} MB)")
        return "; ".join(parts)


def wait_settled(pids: Sequence[int], quiet: float = 2.0, timeout: float = 40.0) -> float:
    """Wait until the processes have done their worst with a flood: no RSS growth and under
    20% of a core of CPU each for ``quiet`` seconds. Returns the seconds waited; bounded by
    ``timeout`` (then returns even if still busy: the bounds decide)."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    since = time.monotonic()
    rss = {p: memory_kb(p)[0] for p in pids}
    cpu = {p: cpu_seconds(p) for p in pids}
    while time.monotonic() < deadline and time.monotonic() - since < quiet:
        time.sleep(0.25)
        for p in pids:
            now_rss, now_cpu = memory_kb(p)[0], cpu_seconds(p)
            # Grew by more than 1 MiB, or busy (> 20% of a core since the last look).
            if now_rss > rss[p] + 1024 or now_cpu - cpu[p] > 0.05:
                since = time.monotonic()
            rss[p], cpu[p] = max(rss[p], now_rss), now_cpu
    return time.monotonic() - t0


# --------------------------------------------------------------------------- the probe


@dataclass
class ProbeResult:
    sent: int
    answered: int
    latencies_ms: list[float]
    failures: dict[str, int]

    @property
    def availability(self) -> float:
        return self.answered / self.sent if self.sent else 0.0

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_ms, 99)

    def report(self, name: str) -> str:
        return (
            f"{name} probe: {self.answered}/{self.sent} answered "
            f"({100 * self.availability:.2f}%), p50 {percentile(self.latencies_ms, 50):.1f} ms, "
            f"p99 {self.p99_ms:.1f} ms, max {max(self.latencies_ms, default=0):.1f} ms, "
            f"failures {self.failures or 'none'}"
        )


class Probe:
    """A round trip every ``interval`` s with a short ``timeout``, from its own process."""

    def __init__(
        self,
        stack: Stack,
        kind: str = "echo",
        *,
        key: str = "probe",
        interval: float = 0.02,
        timeout: float = 1.0,
    ) -> None:
        self.kind = kind
        self.out = stack.tmp / f"probe-{kind}-{time.monotonic_ns()}.json"
        self.argv = [
            PYTHON,
            "-m",
            "tests.adversarial.advkit",
            "probe",
            "--endpoint",
            stack.endpoint,
            "--keys",
            str(stack.keys),
            "--key",
            key,
            "--kind",
            kind,
            "--interval",
            str(interval),
            "--timeout",
            str(timeout),
            "--out",
            str(self.out),
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready_timeout: float = 30.0) -> Probe:
        # Its own log: an inherited stdout would keep a caller's pipe open if it were orphaned.
        with self.out.with_suffix(".log").open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv, env=_env(), cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT
            )
        ready = self.out.with_suffix(".ready")
        wait_for(
            lambda: ready.exists() or self.proc is None or self.proc.poll() is not None,
            ready_timeout,
            f"the {self.kind} probe's first answer",
        )
        assert ready.exists(), f"the {self.kind} probe exited with {self.proc.poll()}"
        return self

    def stop(self) -> ProbeResult:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        doc = json.loads(self.out.read_text())
        return ProbeResult(doc["sent"], doc["answered"], doc["latencies_ms"], doc["failures"])


def _probe_call(client: Client, kind: str) -> None:
    if kind == "echo":
        reply = client.request(ECHO, b"echo", b"probe")
        if reply != [b"probe"]:
            raise ValueError(f"wrong echo reply {reply[:3]!r}")
    else:
        doc = json.loads(client.request(STATE, b"health", b"{}")[0])
        if doc.get("success") is not True:
            raise ValueError(f"state health failed: {doc}")


def probe_main(argv: Sequence[str]) -> int:
    ap = argparse.ArgumentParser(prog="advkit probe")
    for opt in ("--endpoint", "--keys", "--key", "--kind", "--out"):
        ap.add_argument(opt, required=True)
    ap.add_argument("--interval", type=float, default=0.02)
    ap.add_argument("--timeout", type=float, default=1.0)
    args = ap.parse_args(argv)
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    out = Path(args.out)
    curve = load_client(Path(args.keys), args.key)
    client = Client(args.endpoint, timeout=args.timeout, retries=0, curve=curve)
    # Warm up (CURVE handshake, worker registered) before counting anything.
    deadline = time.monotonic() + 30
    while not stopping:
        try:
            _probe_call(client, args.kind)
            break
        except (RequestTimeout, BrokerError, ValueError, IndexError):
            if time.monotonic() > deadline:
                return 3
    out.with_suffix(".ready").touch()
    sent = answered = 0
    latencies: list[float] = []
    failures: dict[str, int] = {}
    while not stopping:
        t0 = time.monotonic()
        sent += 1
        try:
            _probe_call(client, args.kind)
            answered += 1
            latencies.append((time.monotonic() - t0) * 1000)
        except RequestTimeout:
            failures["timeout"] = failures.get("timeout", 0) + 1
        except BrokerError as exc:
            failures[exc.code] = failures.get(exc.code, 0) + 1
        except (ValueError, IndexError):
            failures["bad reply"] = failures.get("bad reply", 0) + 1
        time.sleep(max(0.0, args.interval - (time.monotonic() - t0)))
    client.close()
    doc = {"sent": sent, "answered": answered, "latencies_ms": latencies, "failures": failures}
    out.write_text(json.dumps(doc))
    return 0


# --------------------------------------------------------------------------- the verdict


@dataclass(frozen=True)
class Bounds:
    """What an attack may cost: RSS growth per process (MB), probe availability and p99."""

    rss_mb: dict[str, float]
    availability: float = 0.99
    # The probe's own timeout (1 s): a slower answer already counts as unavailable. On an idle
    # 2-core machine the attacks leave p99 at 4-290 ms; under three times that machine's load the
    # costliest (CURVE-decrypting 100k frames on libzmq's one I/O thread) reached 872 ms.
    p99_ms: float = 1000.0


@contextlib.contextmanager
def under_attack(
    stack: Stack, case: str, bounds: Bounds, probes: Sequence[str] = ("echo",)
) -> Iterator[MemoryWatch]:
    """Probes answering and memory watched for the ``with`` body (the attack); print the
    figures, then (on a clean exit) assert the bounds. An exception from the body passes
    through."""
    watch = MemoryWatch({n: stack.pid(n) for n in bounds.rss_mb})
    running = [Probe(stack, kind).start() for kind in probes]
    try:
        yield watch
    finally:
        results = {p.kind: p.stop() for p in running}
        print(f"\n[{case}] {watch.report()}")  # also when the attack itself failed
        for kind, res in results.items():
            print(f"[{case}] {res.report(kind)}")
    growth = watch.growth_mb()
    problems = [
        f"{name} peak RSS grew {growth[name]:.0f} MB (bound {limit:.0f} MB)"
        for name, limit in bounds.rss_mb.items()
        if growth[name] > limit
    ]
    for kind, res in results.items():
        if res.availability < bounds.availability:
            problems.append(
                f"{kind} probe answered {100 * res.availability:.2f}% "
                f"(bound {100 * bounds.availability:.1f}%): {res.failures}"
            )
        if res.p99_ms > bounds.p99_ms:
            problems.append(f"{kind} probe p99 {res.p99_ms:.0f} ms (bound {bounds.p99_ms:.0f})")
    dead = [n for n, p in stack.procs.items() if not p.alive()]
    if dead:
        problems.append(f"died during the attack: {dead}")
    assert not problems, f"[{case}] " + "; ".join(problems)


__all__ = [
    "Bounds",
    "MakeStack",
    "MemoryWatch",
    "Probe",
    "ProbeResult",
    "Stack",
    "error_code",
    "recv_until",
    "under_attack",
    "wait_settled",
]


if __name__ == "__main__":
    if sys.argv[1:2] == ["probe"]:
        sys.exit(probe_main(sys.argv[2:]))
    sys.exit(f"usage: {sys.argv[0]} probe --endpoint ... (see probe_main)")
