"""Errors, stats histogram, MMI constants, bench statistics helpers."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # bench/ lives at the repo root

from bench._stats import median, percentile, percentiles, ratio, table

from plantd.mdp.errors import (
    BrokerError,
    ErrorCode,
    RequestTimeout,
    error_body,
    parse_error_body,
)
from plantd.mdp.stats import LATENCY_BUCKETS, LatencyHistogram

pytestmark = pytest.mark.unit


def test_error_body_roundtrip() -> None:
    body = error_body(ErrorCode.WORKER_LOST, "worker expired: ü")
    assert body[0] == b"plantd.error"
    assert parse_error_body(body) == ("WORKER_LOST", "worker expired: ü")
    assert parse_error_body([b"ok"]) is None


def test_error_messages_say_what_to_do() -> None:
    e = BrokerError("QUEUE_FULL", "queue of 2 requests is full", "svc")
    assert e.code == "QUEUE_FULL" and "svc" in str(e)
    t = RequestTimeout("svc", 1.5, 3)
    assert "1.5" in str(t) and "3 attempts" in str(t) and "mmi.service" in str(t)


def test_histogram_buckets() -> None:
    h = LatencyHistogram()
    for v in (0.00005, 0.0003, 0.0003, 0.02, 99.0):
        h.observe(v)
    cum = h.cumulative()
    assert len(cum) == len(LATENCY_BUCKETS) + 1
    assert cum[0] == 1  # <= 100 us
    assert cum[LATENCY_BUCKETS.index(0.0005)] == 3
    assert cum[LATENCY_BUCKETS.index(0.025)] == 4
    assert cum[-1] == h.count == 5
    assert math.isclose(h.sum, 0.00005 + 0.0006 + 0.02 + 99.0)


def test_bench_stats() -> None:
    data = [float(i) for i in range(1, 1001)]
    assert percentile(data, 50) == 500.0
    assert percentiles(data)["p99"] == 990.0
    assert percentiles(data)["p99.9"] == 999.0
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert math.isnan(ratio(1.0, 0.0))
    out = table(["a", "b"], [["x", 1234.5], ["y", 0.25]])
    assert "1,234" in out and "0.25" in out
