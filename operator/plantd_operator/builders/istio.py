"""Istio policy: STRICT mTLS, ISTIO_MUTUAL DestinationRules, one AuthorizationPolicy per edge."""

from __future__ import annotations

from typing import Any

from plantd.common import contract
from plantd_operator import naming
from plantd_operator.builders.policy import broker_ports
from plantd_operator.context import ClusterContext

SECURITY = "security.istio.io/v1"
NETWORKING = "networking.istio.io/v1"


def objects(ctx: ClusterContext) -> list[dict[str, Any]]:
    istio = ctx.spec.mesh.istio
    if not istio.enabled:
        return []
    ns, name = ctx.namespace, ctx.name

    def sa(component: str) -> str:
        return naming.principal(ns, ctx.service_account(component))

    services = [sa(naming.STATE), sa(naming.IDENTITY)]
    clients = list(istio.client_principals)
    out: list[dict[str, Any]] = [
        {
            "apiVersion": SECURITY,
            "kind": "PeerAuthentication",
            "metadata": ctx.metadata(name),
            "spec": {
                "selector": {"matchLabels": {naming.LABEL_CLUSTER: name}},
                "mtls": {"mode": istio.mtls_mode},
            },
        }
    ]
    components = [naming.BROKER, naming.STATE, naming.IDENTITY]
    if ctx.spec.state.redis.mode == "managed":
        components.append(naming.REDIS)
    for c in components:
        out.append(
            {
                "apiVersion": NETWORKING,
                "kind": "DestinationRule",
                "metadata": ctx.metadata(naming.child(name, c), c),
                "spec": {
                    "host": f"{ctx.host(c)}.cluster.local",
                    "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}},
                },
            }
        )

    def allow(component: str, principals: list[str], ports: list[int]) -> dict[str, Any]:
        return {
            "apiVersion": SECURITY,
            "kind": "AuthorizationPolicy",
            "metadata": ctx.metadata(naming.child(name, f"{component}-allow"), component),
            "spec": {
                "selector": {"matchLabels": naming.selector_labels(name, component)},
                "action": "ALLOW",
                "rules": [
                    {
                        "from": [{"source": {"principals": sorted(set(principals))}}],
                        "to": [{"operation": {"ports": [str(p) for p in ports]}}],
                    },
                    # Health and metrics stay reachable for kubelet probes and Prometheus.
                    {
                        "to": [
                            {
                                "operation": {
                                    "ports": [
                                        str(contract.HTTP_PORTS[k]) for k in _http(component)
                                    ],
                                    "methods": ["GET"],
                                }
                            }
                        ]
                    },
                ],
            },
        }

    grpc = [ctx.spec.sidecars.grpc.port] if ctx.spec.sidecars.grpc.enabled else []
    out.append(allow(naming.BROKER, services + clients, broker_ports()))
    if grpc:
        out.append(allow(naming.STATE, services + clients, grpc))
        out.append(allow(naming.IDENTITY, services + clients, grpc))
    if ctx.spec.state.redis.mode == "managed":
        out.append(allow(naming.REDIS, [sa(naming.STATE)], [contract.REDIS_PORT]))
    return out


def _http(component: str) -> list[str]:
    if component == naming.REDIS:
        return []
    if component == naming.BROKER:
        return [naming.BROKER]
    return [component, naming.GATEWAY]
