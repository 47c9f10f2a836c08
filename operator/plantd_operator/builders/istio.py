"""Istio policy: STRICT mTLS, ISTIO_MUTUAL DestinationRules, one AuthorizationPolicy per edge,
and RequestAuthentication with the JWKS written inline.

Inline, not ``jwksUri``: istiod cannot fetch a JWKS served behind STRICT mTLS, fails closed for
everyone when its first fetch loses the start-up race with the identity pod, and refreshes only
every 20 minutes (reference identity-anchors.md §3.2). The operator owns the signing-key Secret,
so it writes the public keys (next, active, retired) into the RequestAuthentication itself, and a
rotation reaches every sidecar by xDS at once.
"""

from __future__ import annotations

from typing import Any

from plantd.common import contract
from plantd_operator import naming
from plantd_operator.builders.config import AUDIENCES
from plantd_operator.builders.policy import broker_ports, redis_clients
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
        source: dict[str, Any] = {"principals": sorted(set(principals))}
        return {
            "apiVersion": SECURITY,
            "kind": "AuthorizationPolicy",
            "metadata": ctx.metadata(naming.child(name, f"{component}-allow"), component),
            "spec": {
                "selector": {"matchLabels": naming.selector_labels(name, component)},
                "action": "ALLOW",
                "rules": [
                    {
                        "from": [{"source": source}],
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

    gateway = ctx.gateway_ports
    out.append(allow(naming.BROKER, services + clients, broker_ports()))
    if gateway:
        # Every sidecar serves the whole API, Login included, so the mesh cannot demand a
        # token on these ports; the gateway verifies each token itself (offline, this JWKS,
        # the audience of the service it forwards to) and the service verifies it again.
        out.append(allow(naming.STATE, services + clients, gateway))
        out.append(allow(naming.IDENTITY, services + clients, gateway))
    out += request_authentications(ctx)
    if ctx.spec.state.redis.mode == "managed":
        out.append(allow(naming.REDIS, [sa(c) for c in redis_clients(ctx)], [contract.REDIS_PORT]))
    return out


def _http(component: str) -> list[str]:
    if component == naming.REDIS:
        return []
    if component == naming.BROKER:
        return [naming.BROKER]
    return [component, naming.GATEWAY]


def request_authentications(ctx: ClusterContext) -> list[dict[str, Any]]:
    """One per service pod (state, identity): tokens of this cluster's issuer, its audiences,
    the JWKS inline, and the token forwarded (the gateway puts it on the bus, where each
    service verifies it again offline). None until the signing-key Secret has been read: an
    invalid inline JWKS would keep the pods' sidecars from ever becoming ready."""
    if not ctx.jwks:
        return []
    rule = {
        "issuer": ctx.issuer,
        "audiences": list(AUDIENCES),
        "jwks": ctx.jwks,
        "forwardOriginalToken": True,
    }
    return [
        {
            "apiVersion": SECURITY,
            "kind": "RequestAuthentication",
            "metadata": ctx.metadata(naming.child(ctx.name, f"{c}-jwt"), c),
            "spec": {
                "selector": {"matchLabels": naming.selector_labels(ctx.name, c)},
                "jwtRules": [rule],
            },
        }
        for c in (naming.STATE, naming.IDENTITY)
    ]
