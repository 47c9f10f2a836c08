"""Prometheus Operator objects: one ServiceMonitor and one PrometheusRule per cluster."""

from __future__ import annotations

from typing import Any

from plantd_operator import naming
from plantd_operator.context import ClusterContext

API = "monitoring.coreos.com/v1"


def service_monitor(ctx: ClusterContext) -> dict[str, Any] | None:
    sm = ctx.spec.monitoring.service_monitor
    if not sm.enabled:
        return None
    endpoints = [
        {"port": port, "path": "/metrics", "interval": sm.interval}
        for port in ("http-metrics", "http-metrics-gw")
    ]
    return {
        "apiVersion": API,
        "kind": "ServiceMonitor",
        "metadata": ctx.metadata(ctx.name, extra_labels=dict(sm.labels)),
        "spec": {
            "selector": {
                "matchLabels": {naming.LABEL_CLUSTER: ctx.name, "plantd.io/metrics": "true"}
            },
            "namespaceSelector": {"matchNames": [ctx.namespace]},
            "endpoints": endpoints,
        },
    }


def prometheus_rule(ctx: ClusterContext) -> dict[str, Any] | None:
    pr = ctx.spec.monitoring.prometheus_rule
    if not pr.enabled:
        return None
    sel = f'namespace="{ctx.namespace}",service=~"{ctx.name}-(broker|state|identity)"'

    def rule(alert: str, expr: str, severity: str, summary: str, anchor: str) -> dict[str, Any]:
        return {
            "alert": alert,
            "expr": expr,
            "for": "5m",
            "labels": {"severity": severity, naming.LABEL_CLUSTER: ctx.name},
            "annotations": {
                "summary": summary,
                "runbook_url": f"{ctx.runbook_url}#{anchor}",
            },
        }

    return {
        "apiVersion": API,
        "kind": "PrometheusRule",
        "metadata": ctx.metadata(ctx.name, extra_labels=dict(pr.labels)),
        "spec": {
            "groups": [
                {
                    "name": f"plantd.{ctx.namespace}.{ctx.name}",
                    "rules": [
                        rule(
                            "PlantdComponentDown",
                            f"up{{{sel}}} == 0",
                            "critical",
                            "A plantd process is not answering /metrics.",
                            "plantdcomponentdown",
                        ),
                        rule(
                            "PlantdBrokerAbsent",
                            f'absent(up{{namespace="{ctx.namespace}",'
                            f'service="{ctx.name}-broker"}})',
                            "critical",
                            "No broker of this PlantdCluster is being scraped.",
                            "plantdbrokerabsent",
                        ),
                    ],
                }
            ]
        },
    }


def objects(ctx: ClusterContext) -> list[dict[str, Any]]:
    out = []
    if ctx.capabilities.service_monitor and (sm := service_monitor(ctx)):
        out.append(sm)
    if ctx.capabilities.prometheus_rule and (pr := prometheus_rule(ctx)):
        out.append(pr)
    return out
