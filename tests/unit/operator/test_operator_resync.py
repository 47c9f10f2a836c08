"""Which clusters the periodic resync re-applies (pure bookkeeping, no API calls)."""

from __future__ import annotations

import time
from typing import Any, cast

import pytest

from plantd_operator.kube import Kube
from plantd_operator.metrics import Metrics
from plantd_operator.reconcile import Reconciler

pytestmark = pytest.mark.unit


def body(name: str, **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", **meta}, "spec": {}}


def test_only_clusters_idle_for_an_interval_and_not_being_deleted_are_due() -> None:
    rec = Reconciler(cast(Kube, None), Metrics())
    now = time.monotonic()
    for name, last, extra in (
        ("stale", now - 100, {}),
        ("fresh", now - 1, {}),
        ("going", now - 100, {"deletionTimestamp": "2026-01-01T00:00:00Z"}),
    ):
        st = rec.state("ns", name)
        st.body = body(name, **extra)
        st.last_reconciled = last
    rec.state("ns", "children-only")  # seen through a child event only: no body yet
    due = [b["metadata"]["name"] for b in rec.due_for_resync(60)]
    assert due == ["stale"]
    assert {b["metadata"]["name"] for b in rec.due_for_resync(0.5)} == {"stale", "fresh"}
