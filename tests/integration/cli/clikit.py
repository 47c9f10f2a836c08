"""Helpers for the CLI integration tests: run `plant`/`plantd` as real processes, run a stack."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# The shared kit (tests/kit); re-exported under the names the CLI tests import.
from tests.kit import HEARTBEAT_MS as HEARTBEAT_MS
from tests.kit import BrokerProcess, RedisServer
from tests.kit import free_port as free_port
from tests.kit import in_ci as in_ci
from tests.kit import require as require
from tests.kit import wait_for as wait_for

from plantd.common import contract

ROOT = Path(__file__).resolve().parents[3]

Redis = RedisServer  # a throwaway redis-server: `Redis(workdir, password=...)`


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """An environment with HOME in a temp dir and no PLANTD_* leaking in from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLANTD_")}
    env.pop("XDG_CONFIG_HOME", None)
    env["HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    env["COLUMNS"] = "200"  # rich: keep table rows on one line for assertions
    env.update(extra)
    return env


def run_cli(
    prog: str,
    args: Sequence[str],
    env: Mapping[str, str],
    timeout: float = 30.0,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``plant ARGS`` or ``plantd ARGS`` via this interpreter (no PATH dependence)."""
    return subprocess.run(
        [sys.executable, "-m", f"plantd.cli.{prog}", *args],
        env=dict(env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it has exited all the same.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def children_of(pid: int) -> dict[int, str]:
    """{child pid: command line} of the direct children of ``pid`` (Linux /proc)."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found[int(entry.name)] = cmdline
    return found


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_offset(
    components: Sequence[str] = ("broker", "identity", "echo", "state", "gateway"),
) -> int:
    """A ``--port-offset`` whose every port is free (the gateway's gRPC port, 50051 + offset,
    must stay a port: at most 65535)."""
    for _ in range(200):
        off = random.randrange(100, 15000, 7)
        ports = [contract.MDP_PORT + off]
        ports += [p + off for pair in contract.BUS_PORTS.values() for p in pair]
        ports += [contract.HTTP_PORTS[c] + off for c in components]
        if "gateway" in components:
            ports += [contract.GRPC_PORT + off, contract.REST_PORT + off]
        if all(_port_free(p) for p in ports):
            return off
    raise AssertionError("no free port offset found")


class Stack:
    """``plantd up`` as a subprocess, with its output collected line by line."""

    def __init__(self, home: Path, *args: str, env_extra: Mapping[str, str] | None = None) -> None:
        self.home = home
        self.offset = free_port_offset()
        self.endpoint = f"tcp://127.0.0.1:{contract.MDP_PORT + self.offset}"
        self.env = clean_env(home, **(env_extra or {}))
        # A short heartbeat (every component gets it): dead workers expire in a fraction of the
        # default time. The kit's, so it agrees with every other test peer.
        hb = str(HEARTBEAT_MS)
        self.args = ["up", "--port-offset", str(self.offset), "--heartbeat-ms", hb, *args]
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self.proc: subprocess.Popen[str] | None = None
        self.known_pids: set[int] = set()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "plantd.cli.plantd", *self.args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def has_line(self, text: str) -> bool:
        with self._lock:
            return any(text in line for line in self.lines)

    def wait_ready(self, timeout: float = 40.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.has_line("plantd up: ready in"):
                return
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"plantd up exited with {self.proc.returncode}:\n{self.output()}"
                )
            time.sleep(0.05)
        raise AssertionError(f"plantd up not ready after {timeout}s:\n{self.output()}")

    def children(self) -> dict[str, int]:
        """{component: pid} of the running children."""
        assert self.proc is not None
        out: dict[str, int] = {}
        for pid, cmd in children_of(self.proc.pid).items():
            parts = cmd.split()
            if "plantd.cli.plantd" in parts:
                out[parts[parts.index("plantd.cli.plantd") + 1]] = pid
        self.known_pids.update(out.values())
        return out

    def plant(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return run_cli("plant", ["--endpoint", self.endpoint, *args], self.env, timeout)

    @property
    def state_dir(self) -> Path:
        """The default --state-dir under this stack's HOME."""
        return self.home / ".local" / "state" / "plantd"

    def login_admin(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``plant auth login -u admin --password-stdin < STATE_DIR/admin-credentials``, the
        command the banner prints (``args`` go before ``auth``, e.g. ``--no-curve``)."""
        login = ["auth", "login", "-u", "admin", "--password-stdin"]
        with (self.state_dir / "admin-credentials").open("rb") as creds:
            return subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "plantd.cli.plant",
                    "--endpoint",
                    self.endpoint,
                    *args,
                    *login,
                ],
                env=self.env,
                stdin=creds,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )

    def stop(self, sig: signal.Signals = signal.SIGINT, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_all()
            raise

    def kill_all(self) -> None:
        """Last resort in teardown: nothing of ours may outlive the test."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.children()
        for pid in self.known_pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def run_in_process(
    prog: str, args: Sequence[str], env: Mapping[str, str]
) -> subprocess.CompletedProcess[str]:
    """Like :func:`run_cli` but in this process (click's runner): for file-only commands,
    where a fresh interpreter per call would only add seconds."""
    from click.testing import CliRunner

    module = importlib.import_module(f"plantd.cli.{prog}")
    # Only variables that differ are passed; None removes one the caller does not have.
    overrides: dict[str, str | None] = {k: v for k, v in env.items() if os.environ.get(k) != v}
    overrides.update({k: None for k in os.environ if k not in env})
    result = CliRunner().invoke(module.cli, list(args), env=overrides, prog_name=prog)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(
        [prog, *args], result.exit_code, result.stdout, result.stderr
    )


class Plant:
    """`plant` in its own HOME, pointed at a test broker (CURVE with the broker's key dir)."""

    def __init__(self, home: Path, broker: BrokerProcess) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.home = home
        self.env = clean_env(home)
        assert broker.keys_dir is not None
        self.base = [
            "--endpoint", broker.endpoint,
            "--curve-keys", str(broker.keys_dir),
            "--timeout", "20",  # logins are argon2-bound and the machine is shared
        ]  # fmt: skip

    def __call__(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return run_cli("plant", [*self.base, *args], self.env, timeout=60, stdin=stdin)

    def json(self, *args: str, stdin: str | None = None) -> Any:
        r = self("--json", *args, stdin=stdin)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    @property
    def credentials(self) -> Path:
        return self.home / ".local" / "state" / "plantd" / "credentials" / "default.json"

    def stored(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.credentials.read_text())
        return doc
