"""When a new broker may take clients: once the plant's services have workers on it.

A rolling update replaces brokers one at a time, and Kubernetes moves on when the new pod is
ready. A broker that reported ready at once would take clients before any worker had found it
(they re-resolve the broker set every 10 s, every 1 s while one is silent), and its clients
would get ``UNKNOWN_SERVICE``. So a broker started with ``ready_services`` stays unready until
each of them has a worker registered here, or until ``ready_services_wait_ms`` has passed (a
service that never comes must not keep the whole bus down). Once open the gate stays open:
readiness must not flap when a worker restarts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable


class ReadyGate:
    """Pure: ``check(now, registered)``; ``missing`` says what it still waits for."""

    def __init__(self, services: Iterable[str], wait_s: float, started: float) -> None:
        self.services = frozenset(services)
        self.deadline = started + wait_s
        self.open = not self.services
        self.missing: frozenset[str] = self.services
        self.timed_out = False

    def check(self, now: float, registered: Callable[[], Iterable[str]]) -> bool:
        """True once every named service has a worker, or the wait is over (then for good)."""
        if self.open:
            return True
        self.missing = self.services.difference(registered())
        if not self.missing:
            self.open = True
        elif now >= self.deadline:
            self.open = self.timed_out = True
        return self.open
