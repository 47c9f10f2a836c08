"""A redis-server of our own: free port, temporary directory, no persistence unless asked,
stopped by its PID. Plain TCP or TLS (``tls_dir`` with ``server.crt``/``server.key``/``ca.crt``)."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from .net import free_port
from .prereq import require

REDIS_SERVER = shutil.which("redis-server")
INSTALL_HINT = "apt-get install -y redis-server"


def require_redis() -> str:
    """The redis-server executable; skips (locally) or fails (under CI) when it is missing."""
    require(REDIS_SERVER is not None, f"redis-server is not installed ({INSTALL_HINT})")
    assert REDIS_SERVER is not None
    return REDIS_SERVER


class RedisServer:
    """``redis-server`` on 127.0.0.1; :meth:`start` returns once it answers (PING, or a TCP
    connect for TLS). Restarting keeps the port and directory (so an AOF is replayed)."""

    def __init__(
        self,
        workdir: Path,
        *,
        appendonly: bool = False,
        fsync: str = "everysec",
        password: str | None = None,
        tls_dir: Path | None = None,
        replica_of: RedisServer | None = None,
    ) -> None:
        self.exe = require_redis()
        self.replica_of = replica_of
        self.workdir = workdir
        self.port = free_port()
        self.appendonly = appendonly
        self.fsync = fsync
        self.password = password
        self.tls_dir = tls_dir
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls_dir else "redis"
        auth = f":{self.password}@" if self.password else ""
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.workdir / "redis.log"

    def _args(self) -> list[str]:
        args = [
            self.exe,
            "--bind", "127.0.0.1",
            "--dir", str(self.workdir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.fsync,
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(self.log_path),
        ]  # fmt: skip
        if self.tls_dir:
            d = self.tls_dir
            args += ["--port", "0", "--tls-port", str(self.port)]
            args += ["--tls-cert-file", str(d / "server.crt")]
            args += ["--tls-key-file", str(d / "server.key")]
            args += ["--tls-ca-cert-file", str(d / "ca.crt"), "--tls-auth-clients", "no"]
        else:
            args += ["--port", str(self.port)]
        if self.password:
            args += ["--requirepass", self.password, "--masterauth", self.password]
        if self.replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(self.replica_of.port)]
        return args

    def start(self, timeout: float = 10.0) -> RedisServer:
        first_start = self.proc is None and not self.log_path.exists()
        for _ in range(3):
            self.proc = subprocess.Popen(
                self._args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                if self.answering():
                    return self
                time.sleep(0.05)
            if self.proc.poll() is None or not first_start:
                break
            # It exited at once: another process took the free port between our probe and
            # its bind. A first start may move to a new port; a restart must keep its own.
            self.port = free_port()
        log = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
        self.stop(signal.SIGKILL)
        raise AssertionError(
            f"redis-server on port {self.port} did not answer within {timeout} s; log:\n{log}"
        )

    def answering(self) -> bool:
        """PING answered (any reply counts: NOAUTH means it is up); for TLS, a TCP connect."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                if self.tls_dir:
                    return True
                s.sendall(b"PING\r\n")
                return s.recv(64)[:1] in (b"+", b"-")
        except OSError:
            return False

    def ping(self) -> bool:
        """True when a plain-TCP, password-less server answers PING with PONG."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: the crash case (whatever is not yet fsynced is lost)."""
        self.stop(signal.SIGKILL)

    def command(self, *args: str) -> str:
        """One command in the RESP protocol over plain TCP (no password); the raw reply."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            parts = [f"${len(a.encode())}\r\n{a}\r\n" for a in args]
            s.sendall(f"*{len(args)}\r\n{''.join(parts)}".encode())
            return s.recv(65536).decode(errors="replace")


class RedisSentinels:
    """``count`` Sentinels (``redis-server --sentinel``) watching ``primary`` as ``master``,
    quorum a majority; quick to act (down after ``down_after_ms``) so a test sees a failover
    within seconds. Each has its own directory: Sentinel rewrites its config file."""

    def __init__(
        self,
        workdir: Path,
        primary: RedisServer,
        *,
        count: int = 3,
        master: str = "plant",
        down_after_ms: int = 1000,
    ) -> None:
        self.exe = require_redis()
        self.workdir = workdir
        self.primary = primary
        self.master = master
        self.down_after_ms = down_after_ms
        self.ports = [free_port() for _ in range(count)]
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.ports)
        auth = f":{self.primary.password}@" if self.primary.password else ""
        return f"redis+sentinel://{auth}{hosts}/{self.master}/0?sentinel_auth=no"

    def start(self, timeout: float = 10.0) -> RedisSentinels:
        quorum = len(self.ports) // 2 + 1
        for i, port in enumerate(self.ports):
            d = self.workdir / f"sentinel-{i}"
            d.mkdir(parents=True, exist_ok=True)
            lines = [
                f"port {port}",
                "bind 127.0.0.1",
                f"dir {d}",
                f"logfile {d / 'sentinel.log'}",
                f"sentinel monitor {self.master} 127.0.0.1 {self.primary.port} {quorum}",
                f"sentinel down-after-milliseconds {self.master} {self.down_after_ms}",
                f"sentinel failover-timeout {self.master} 10000",
                f"sentinel parallel-syncs {self.master} 1",
            ]
            if self.primary.password:
                lines.append(f"sentinel auth-pass {self.master} {self.primary.password}")
            conf = d / "sentinel.conf"
            conf.write_text("\n".join(lines) + "\n")
            conf.chmod(0o600)
            self.procs.append(
                subprocess.Popen(
                    [self.exe, str(conf), "--sentinel"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        deadline = time.monotonic() + timeout
        while self.primary_port() != self.primary.port:
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"the Sentinels did not see the primary in {timeout} s")
            time.sleep(0.05)
        return self

    def primary_port(self) -> int | None:
        """The primary's port as the first answering Sentinel names it."""
        for port in self.ports:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                    s.sendall(b"SENTINEL get-master-addr-by-name " + self.master.encode() + b"\r\n")
                    reply = s.recv(256).decode(errors="replace").split("\r\n")
            except OSError:
                continue
            # *2 $9 127.0.0.1 $4 6379: the port is the fifth line
            if reply[0] == "*2" and len(reply) >= 5 and reply[4].isdigit():
                return int(reply[4])
        return None

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.procs = []
