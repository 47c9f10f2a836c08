"""Prometheus metrics of the state service (``/metrics``).

Counts are added once per batch from local tallies: a labelled ``inc()`` per request would cost
more than the rest of the request's Python work at these rates.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


class BatchHistogram(Collector):
    """A histogram fed ``n`` equal observations at once (every request of a batch waited the
    same time); prometheus_client's Histogram would need ``n`` locked ``observe`` calls."""

    def __init__(self, name: str, doc: str, buckets: tuple[float, ...]) -> None:
        self.name = name
        self.doc = doc
        self.bounds = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0

    def add(self, seconds: float, n: int) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += n
        self.sum += seconds * n

    def collect(self) -> Iterator[HistogramMetricFamily]:
        buckets = []
        total = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), total))
        family = HistogramMetricFamily(self.name, self.doc)
        family.add_metric([], buckets, self.sum)
        yield family


class StateMetrics:
    def __init__(self, registry: CollectorRegistry, store_up: Callable[[], bool]) -> None:
        self.operations = Counter(
            "plantd_state_operations",
            "State requests by operation and result (ok or the error code)",
            ["operation", "result"],
            registry=registry,
        )
        self.latency = BatchHistogram(
            "plantd_state_request_seconds",
            "Time a request spends in the worker, store round trip included",
            _LATENCY_BUCKETS,
        )
        registry.register(self.latency)
        self.batch_size = Histogram(
            "plantd_state_batch_requests",
            "Requests handled together in one store round trip",
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.store_errors = Counter(
            "plantd_state_store_errors",
            "Batches that failed because the store was unreachable or refused",
            registry=registry,
        )
        self.events = Counter(
            "plantd_state_watch_events_published",
            "Change events published on the state bus",
            registry=registry,
        )
        self.expired = Counter(
            "plantd_state_expired_keys", "Keys deleted because their TTL passed", registry=registry
        )
        up = Gauge("plantd_state_store_up", "1 while the store is reachable", registry=registry)
        up.set_function(lambda: 1.0 if store_up() else 0.0)

    def record(self, tally: Tally[tuple[str, str]], seconds: float, size: int) -> None:
        for (op, result), n in tally.items():
            self.operations.labels(op, result).inc(n)
        self.latency.add(seconds, size)
        self.batch_size.observe(size)
