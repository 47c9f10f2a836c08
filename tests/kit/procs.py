"""A plantd component as a real child process: ``python -m MODULE ARGS``, output in a log file,
readiness from its ``/readyz``, always stopped by its own PID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from .net import http_get
from .timing import START_TIMEOUT

PYTHON = sys.executable


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any ``PLANTD_*`` leaking in, output unbuffered."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLANTD_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> int:
    """SIGTERM, wait, then SIGKILL: never leave a child behind. Returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    return int(proc.returncode)


class ServiceProcess:
    """``python -m module args`` with stdout and stderr appended to ``log_path``.

    May be started again after it stopped (a restart appends to the same log).
    """

    def __init__(
        self,
        module: str,
        args: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        http_port: int | None = None,
        name: str | None = None,
    ) -> None:
        self.module = module
        self.args = list(args)
        self.log_path = log_path
        self.http_port = http_port
        self.name = name or module
        self.env = base_env(env)
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # ---- lifecycle ------------------------------------------------------------------------------

    def start(self) -> ServiceProcess:
        """Spawn the process (no waiting: see :meth:`wait_ready`)."""
        self._spawn()
        return self

    def _spawn(self) -> None:
        self._close_log()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [PYTHON, "-m", self.module, *self.args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def ready(self) -> bool:
        return http_get(self.url + "/readyz", timeout=1.0)[0] == 200

    def wait_ready(self, timeout: float = START_TIMEOUT) -> ServiceProcess:
        """Until ``/readyz`` answers 200; AssertionError with the log if it exits or times out."""
        if not self.start_or_exit(timeout):
            raise AssertionError(f"{self.name} exited with {self.returncode}:\n{self.text()}")
        return self

    def start_or_exit(
        self, timeout: float = START_TIMEOUT, ready: Callable[[], bool] | None = None
    ) -> bool:
        """True once ready; False if the process exited first (e.g. its port was taken)."""
        assert self.proc is not None, f"{self.name} was never started"
        check = ready or self.ready
        deadline = time.monotonic() + timeout
        while not check():
            if self.proc.poll() is not None:
                return False
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} not ready after {timeout} s:\n{self.log()}")
            time.sleep(0.05)
        return True

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.proc is not None, f"{self.name} was never started"
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still running after {timeout} s") from None

    def signal(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; SIGKILL as a last resort (returns -9: the test then fails on it).

        Idempotent: stopping a stopped (or never started) process returns its code (0 if none).
        """
        if self.proc is None:
            return 0
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            return -9
        finally:
            self._close_log()

    def kill9(self) -> None:
        """SIGKILL and reap: the crash case (no shutdown code runs)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    # ---- output ---------------------------------------------------------------------------------

    def text(self) -> str:
        """The whole log so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log(self, tail: int = 4000) -> str:
        """The last ``tail`` characters of the log (for assertion messages)."""
        return self.text()[-tail:]

    def json_lines(self) -> list[dict[str, Any]]:
        """The log's JSON lines (structured logging); other lines are skipped."""
        out: list[dict[str, Any]] = []
        for line in self.text().splitlines():
            line = line.strip()
            if line.startswith("{"):
                out.append(json.loads(line))
        return out
