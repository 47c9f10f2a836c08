"""Prometheus metrics of the broker service, read from the broker at scrape time.

Nothing here runs on the broker's hot path: the collector asks :meth:`Broker.stats` (one lock
hand-off) and each bus proxy (one inproc round trip) when Prometheus scrapes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from plantd.bus.proxy import BusStats
from plantd.mdp.stats import BrokerStats


class BrokerCollector(Collector):
    """Exports ``plantd_broker_*`` and ``plantd_bus_*`` from live broker and bus counters."""

    def __init__(
        self,
        broker_stats: Callable[[], BrokerStats],
        bus_stats: Callable[[], Mapping[str, BusStats]],
    ) -> None:
        self._broker_stats = broker_stats
        self._bus_stats = bus_stats

    def collect(self) -> Iterable[Metric]:
        s = self._broker_stats()
        yield from self._broker(s)
        yield from self._buses(self._bus_stats(), s.handshakes)

    def _broker(self, s: BrokerStats) -> Iterable[Metric]:
        labels = ["service", "dialect"]
        for name, doc, data in (
            ("plantd_broker_requests", "Client requests received", s.requests),
            ("plantd_broker_replies", "Final replies sent to clients", s.replies),
            ("plantd_broker_partials", "Partial (streamed) replies sent to clients", s.partials),
        ):
            c = CounterMetricFamily(name, doc, labels=labels)
            for (service, dialect), n in sorted(data.items()):
                c.add_metric([service, dialect], n)
            yield c
        errors = CounterMetricFamily(
            "plantd_broker_errors",
            "Error replies sent, by service, the client's dialect and code "
            '(service "" gathers names the broker does not track)',
            labels=["service", "dialect", "code"],
        )
        for (service, dialect, code), n in sorted(s.dialect_errors.items()):
            errors.add_metric([service, dialect, code], n)
        yield errors
        malformed = CounterMetricFamily(
            "plantd_broker_malformed_messages",
            "Messages dropped (malformed, over a limit, unroutable) or held for a peer that "
            "is not reading (send_held), by reason; docs/protocol.md section 2",
            labels=["reason"],
        )
        for reason, n in sorted(s.malformed.items()):
            malformed.add_metric([reason], n)
        yield malformed
        for name, doc, gauge_data in (
            ("plantd_broker_queue_depth", "Requests waiting for a worker", s.queue_depth),
            ("plantd_broker_workers", "Workers registered", s.workers),
            ("plantd_broker_busy_workers", "Workers with a request in flight", s.busy_workers),
        ):
            g = GaugeMetricFamily(name, doc, labels=["service"])
            for service, n in sorted(gauge_data.items()):
                g.add_metric([service], n)
            yield g
        for name, doc, value in (
            (
                "plantd_broker_queued_bytes",
                "Bytes of requests waiting for a worker, all services (budget: max_queued_bytes)",
                s.queued_bytes,
            ),
            (
                "plantd_broker_clients",
                "Clients (routing ids, or CURVE keys) with requests outstanding",
                s.clients,
            ),
            (
                "plantd_broker_services_known",
                "Names in the service table (labels above: the top services plus 'other')",
                s.services_known,
            ),
        ):
            yield GaugeMetricFamily(name, doc, value=value)
        h = s.latency
        buckets = [(_le(b), c) for b, c in zip(h.buckets, h.cumulative, strict=False)]
        buckets.append(("+Inf", h.cumulative[-1] if h.cumulative else h.count))
        yield HistogramMetricFamily(
            "plantd_broker_request_duration_seconds",
            "Time from a request entering the broker to its final reply",
            buckets=buckets,
            sum_value=h.sum,
        )
        yield GaugeMetricFamily(
            "plantd_broker_uptime_seconds", "Seconds since the broker started", value=s.uptime_s
        )

    def _buses(
        self, buses: Mapping[str, BusStats], mdp_handshakes: Mapping[str, int]
    ) -> Iterable[Metric]:
        messages = CounterMetricFamily(
            "plantd_bus_messages",
            "Messages published into a bus (two-frame [topic, payload] messages)",
            labels=["bus"],
        )
        frames = CounterMetricFamily(
            "plantd_bus_frames", "Frames forwarded by a bus proxy", labels=["bus", "direction"]
        )
        nbytes = CounterMetricFamily(
            "plantd_bus_bytes", "Bytes forwarded by a bus proxy", labels=["bus", "direction"]
        )
        dropped = CounterMetricFamily(
            "plantd_bus_dropped_messages",
            "Messages published into a bus and dropped, never forwarded (too_large: over "
            "bus_max_message_bytes; too_many_frames: over bus_max_frames; forbidden: a topic "
            "the publisher's key may not publish, per the registry)",
            labels=["bus", "reason"],
        )
        disconnects = CounterMetricFamily(
            "plantd_bus_publisher_disconnects",
            "Publisher connections closed (a frame over bus_max_message_bytes closes one)",
            labels=["bus"],
        )
        rejected = CounterMetricFamily(
            "plantd_curve_handshake_failures",
            "CURVE handshakes refused (unknown key, bad key, protocol error), by socket",
            labels=["socket"],
        )
        for bus, st in sorted(buses.items()):
            messages.add_metric([bus], st.frames_in // 2)
            frames.add_metric([bus, "in"], st.frames_in)
            frames.add_metric([bus, "out"], st.frames_out)
            nbytes.add_metric([bus, "in"], st.bytes_in)
            nbytes.add_metric([bus, "out"], st.bytes_out)
            rejected.add_metric([f"bus-{bus}"], st.handshake_failures)
            dropped.add_metric([bus, "too_large"], st.dropped_too_large)
            dropped.add_metric([bus, "too_many_frames"], st.dropped_too_many_frames)
            dropped.add_metric([bus, "forbidden"], st.dropped_forbidden)
            disconnects.add_metric([bus], st.disconnects)
        failed = sum(n for k, n in mdp_handshakes.items() if k != "succeeded")
        rejected.add_metric(["mdp"], failed)
        yield messages
        yield frames
        yield nbytes
        yield dropped
        yield disconnects
        yield rejected


def _le(bound: float) -> str:
    return repr(float(bound))
