"""Operator metrics (kopf has none): reconciliations, durations, clusters by phase, applies."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

PHASES = ("Pending", "Progressing", "Ready", "Degraded", "Failed", "Paused")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.reconciliations = Counter(
            "plantd_operator_reconciliations",
            "Reconciliations of PlantdClusters, by result and trigger.",
            ["result", "trigger"],
            registry=r,
        )
        self.duration = Histogram(
            "plantd_operator_reconcile_duration_seconds",
            "Time to render and apply one PlantdCluster's children.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.children = Counter(
            "plantd_operator_children_applied",
            "Children server-side applied, by kind.",
            ["kind"],
            registry=r,
        )
        self.repairs = Counter(
            "plantd_operator_drift_repairs",
            "Children re-applied because they were deleted or edited, by kind.",
            ["kind"],
            registry=r,
        )
        self.clusters = Gauge(
            "plantd_operator_clusters",
            "PlantdClusters by phase.",
            ["phase"],
            registry=r,
        )
        self.cluster_phase = Gauge(
            "plantd_cluster_phase",
            "1 for the current phase of each PlantdCluster.",
            ["namespace", "name", "phase"],
            registry=r,
        )
        self.leader = Gauge(
            "plantd_operator_leader",
            "1 while this replica holds the leader Lease and acts, 0 while it stands by.",
            registry=r,
        )
        self._phases: dict[tuple[str, str], str] = {}
        for p in PHASES:
            self.clusters.labels(p).set(0)

    def reconciled(self, result: str, seconds: float, trigger: str) -> None:
        self.reconciliations.labels(result, trigger).inc()
        self.duration.observe(seconds)

    def applied(self, kind: str) -> None:
        self.children.labels(kind).inc()

    def drift(self, kind: str) -> None:
        self.repairs.labels(kind).inc()

    def phase(self, namespace: str, name: str, phase: str) -> None:
        key = (namespace, name)
        old = self._phases.get(key)
        if old == phase:
            return
        if old is not None:
            self.cluster_phase.remove(namespace, name, old)
        self._phases[key] = phase
        self.cluster_phase.labels(namespace, name, phase).set(1)
        self._recount()

    def forget_cluster(self, namespace: str, name: str) -> None:
        old = self._phases.pop((namespace, name), None)
        if old is not None:
            self.cluster_phase.remove(namespace, name, old)
            self._recount()

    def _recount(self) -> None:
        for p in PHASES:
            self.clusters.labels(p).set(sum(1 for v in self._phases.values() if v == p))

    def render(self) -> bytes:
        return generate_latest(self.registry)
