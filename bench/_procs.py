"""Process helpers shared by the benchmarks: free ports, stopping children, reading their CPU
and memory."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Sequence

_TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_endpoint() -> str:
    """A ``tcp://127.0.0.1:PORT`` endpoint on a free port."""
    return f"tcp://127.0.0.1:{free_port()}"


def stop(procs: Sequence[subprocess.Popen[str]], timeout: float = 10.0) -> None:
    """SIGTERM every child, then wait for each; SIGKILL one that outlives ``timeout``."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) from /proc; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def memory_kb(pid: int) -> tuple[int, int]:
    """``(VmRSS, VmHWM)`` of a process in KiB from /proc (HWM = peak RSS); (0, 0) if gone."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except (OSError, ValueError):
        return 0, 0
    return rss, hwm
