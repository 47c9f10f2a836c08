"""Ports and HTTP for tests: free TCP ports, a GET that never raises, Prometheus samples."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Mapping


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now (another process may take it later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports: all held open at once, so the kernel cannot hand one out
    twice (separate ``free_port()`` calls can, and a broker then refuses its bus list)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    """``(status, body)`` of a GET; ``(0, reason)`` when nothing answers. Never raises."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - test URL
            return int(resp.status), resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode(errors="replace")
    except OSError as exc:  # URLError, refused, reset, timeout
        return 0, str(exc)


def metric_value(text: str, name: str, labels: Mapping[str, str] | None = None) -> float:
    """The value of one sample in Prometheus text output (0.0 when absent).

    ``labels`` must all be present on the sample; other labels on it are ignored.
    """
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
