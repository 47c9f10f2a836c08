"""The broker's Prometheus collector renders BrokerStats and BusStats faithfully."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from plantd.broker.metrics import BrokerCollector
from plantd.bus.proxy import BusStats
from plantd.mdp.stats import LATENCY_BUCKETS, BrokerStats, HistogramSnapshot

pytestmark = pytest.mark.unit


def _render(stats: BrokerStats, buses: dict[str, BusStats]) -> str:
    reg = CollectorRegistry()
    reg.register(BrokerCollector(lambda: stats, lambda: buses))
    return generate_latest(reg).decode()


def test_counters_gauges_and_histogram() -> None:
    cumulative = tuple(min(i, 5) for i in range(len(LATENCY_BUCKETS) + 1))
    stats = BrokerStats(
        uptime_s=7.0,
        requests={("svc", "mdp02"): 10, ("svc", "legacy"): 2},
        replies={("svc", "mdp02"): 9},
        partials={},
        errors={("svc", "QUEUE_FULL"): 1},
        malformed={"bad_header": 4},
        queue_depth={"svc": 3},
        workers={"svc": 2},
        busy_workers={"svc": 1},
        handshakes={"auth_failed": 2, "no_detail": 1, "succeeded": 9},
        latency=HistogramSnapshot(LATENCY_BUCKETS, cumulative, 0.5, 5),
        dialect_errors={("svc", "mdp02", "QUEUE_FULL"): 1, ("svc", "legacy", "WORKER_LOST"): 2},
    )
    buses = {"state": BusStats(10, 100, 8, 80, 2, 3)}
    text = _render(stats, buses)
    expected = [
        'plantd_broker_requests_total{dialect="mdp02",service="svc"} 10.0',
        'plantd_broker_requests_total{dialect="legacy",service="svc"} 2.0',
        'plantd_broker_replies_total{dialect="mdp02",service="svc"} 9.0',
        'plantd_broker_errors_total{code="QUEUE_FULL",dialect="mdp02",service="svc"} 1.0',
        'plantd_broker_errors_total{code="WORKER_LOST",dialect="legacy",service="svc"} 2.0',
        'plantd_broker_malformed_messages_total{reason="bad_header"} 4.0',
        'plantd_broker_queue_depth{service="svc"} 3.0',
        'plantd_broker_workers{service="svc"} 2.0',
        'plantd_broker_busy_workers{service="svc"} 1.0',
        'plantd_broker_request_duration_seconds_bucket{le="0.0001"} 0.0',
        'plantd_broker_request_duration_seconds_bucket{le="+Inf"} 5.0',
        "plantd_broker_request_duration_seconds_count 5.0",
        "plantd_broker_request_duration_seconds_sum 0.5",
        "plantd_broker_uptime_seconds 7.0",
        'plantd_bus_messages_total{bus="state"} 5.0',
        'plantd_bus_frames_total{bus="state",direction="in"} 10.0',
        'plantd_bus_bytes_total{bus="state",direction="out"} 80.0',
        'plantd_curve_handshake_failures_total{socket="bus-state"} 3.0',
        'plantd_curve_handshake_failures_total{socket="mdp"} 3.0',
    ]
    for line in expected:
        assert line in text, line


def test_empty_broker_renders() -> None:
    stats = BrokerStats(0.0, {}, {}, {}, {}, {}, {}, {}, {})
    text = _render(stats, {})
    assert 'plantd_broker_request_duration_seconds_bucket{le="+Inf"} 0.0' in text
    assert 'plantd_curve_handshake_failures_total{socket="mdp"} 0.0' in text
