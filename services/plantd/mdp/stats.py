"""Broker statistics: cheap counters on the hot path, immutable snapshots for exporters.

The broker increments plain ints (per service, indexed by dialect) and a fixed-bucket latency
histogram (one ``bisect`` per reply). :class:`BrokerStats` is a copy taken under the broker's
lock, so a Prometheus collector can read it without touching the hot path.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Final

# Upper bounds in seconds (Prometheus ``le`` labels); the last bucket is +Inf.
LATENCY_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


def top_names(traffic: dict[bytes, int], n: int) -> set[bytes]:
    """The ``n`` names with the most traffic (ties by name, so the choice is stable)."""
    if len(traffic) <= n:
        return set(traffic)
    return set(sorted(traffic, key=lambda k: (-traffic[k], k))[:n])


class LatencyHistogram:
    """Fixed buckets; ``observe`` is one C-level bisect and two adds."""

    __slots__ = ("count", "counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def cumulative(self) -> list[int]:
        """Cumulative counts per bucket, +Inf last (the Prometheus layout)."""
        out: list[int] = []
        total = 0
        for c in self.counts:
            total += c
            out.append(total)
        return out


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    buckets: tuple[float, ...]
    cumulative: tuple[int, ...]  # len(buckets) + 1; the last is +Inf (== count)
    sum: float
    count: int


@dataclass(frozen=True, slots=True)
class BrokerStats:
    """A point-in-time copy of every broker counter. Counters only grow; gauges are current."""

    uptime_s: float
    # Counters keyed by (service, dialect label: "mdp02" | "mdp01" | "legacy").
    requests: dict[tuple[str, str], int]
    replies: dict[tuple[str, str], int]
    partials: dict[tuple[str, str], int]
    # Error replies sent, keyed by (service, code): the sum over dialects of ``dialect_errors``.
    errors: dict[tuple[str, str], int]
    # Messages dropped, keyed by reason slug (ProtocolError.reason or broker reasons).
    malformed: dict[str, int]
    # Gauges.
    queue_depth: dict[str, int]
    workers: dict[str, int]
    busy_workers: dict[str, int]
    # CURVE handshake outcomes seen by the socket monitor (zero without CURVE).
    handshakes: dict[str, int] = field(default_factory=dict)
    latency: HistogramSnapshot = field(
        default_factory=lambda: HistogramSnapshot(LATENCY_BUCKETS, (0,) * 17, 0.0, 0)
    )
    # Error replies sent, keyed by (service, the client's dialect label, code).
    dialect_errors: dict[tuple[str, str, str], int] = field(default_factory=dict)
    # Budgets in use: bytes of queued requests (all services), clients with something
    # outstanding, names in the service table (the labels above are capped, this is not).
    queued_bytes: int = 0
    clients: int = 0
    services_known: int = 0

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    @property
    def total_replies(self) -> int:
        return sum(self.replies.values())

    @property
    def total_errors(self) -> int:
        return sum(self.errors.values())

    @property
    def total_malformed(self) -> int:
        return sum(self.malformed.values())


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    identity: str  # hex of the ROUTER routing id
    service: str
    dialect: str
    credit: int
    in_flight: int
    expires_in_s: float


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    name: str
    workers: int
    idle: int
    queued: int
    in_flight: int


@dataclass(frozen=True, slots=True)
class BrokerSnapshot:
    endpoints: tuple[str, ...]
    uptime_s: float
    draining: bool
    services: tuple[ServiceInfo, ...]
    workers: tuple[WorkerInfo, ...]
