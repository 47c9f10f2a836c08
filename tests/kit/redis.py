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
    ) -> None:
        self.exe = require_redis()
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
            args += ["--requirepass", self.password]
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
