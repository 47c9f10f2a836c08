"""PodDisruptionBudgets and NetworkPolicies (default deny plus the allowed edges)."""

from __future__ import annotations

from typing import Any

from plantd.common import contract
from plantd_operator import naming
from plantd_operator.context import ClusterContext

# The chart's name label on the operator's own pods (charts/plantd-operator).
OPERATOR_NAME = "plantd-operator"


def workloads(ctx: ClusterContext) -> list[str]:
    out = [naming.BROKER, naming.STATE, naming.IDENTITY]
    if ctx.spec.state.redis.mode == "managed":
        out.append(naming.REDIS)
    return out


def pdbs(ctx: ClusterContext) -> list[dict[str, Any]]:
    """At most one pod of each component down at a time through voluntary disruptions.

    maxUnavailable (not minAvailable) so a single-replica component never blocks a node drain.
    """
    return [
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": ctx.metadata(naming.child(ctx.name, c), c),
            "spec": {
                "maxUnavailable": 1,
                "selector": {"matchLabels": naming.selector_labels(ctx.name, c)},
            },
        }
        for c in workloads(ctx)
    ]


def _pods(ctx: ClusterContext, component: str) -> dict[str, Any]:
    return {"podSelector": {"matchLabels": naming.selector_labels(ctx.name, component)}}


def _ports(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": p} for p in ports]


def broker_ports() -> list[int]:
    ports = [contract.MDP_PORT]
    for front, back in contract.BUS_PORTS.values():
        ports += [front, back]
    return ports


def network_policies(ctx: ClusterContext) -> list[dict[str, Any]]:
    if not ctx.spec.network_policy.enabled:
        return []
    clients = {
        "podSelector": {"matchLabels": dict(ctx.spec.network_policy.client_selector.match_labels)}
    }
    members = [_pods(ctx, c) for c in (naming.STATE, naming.IDENTITY)]
    gateway = ctx.gateway_ports
    cluster_pods = {"matchLabels": {naming.LABEL_CLUSTER: ctx.name}}
    anywhere_metrics: dict[str, Any] = {"from": [{"namespaceSelector": {}}]}

    def policy(suffix: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": ctx.metadata(naming.child(ctx.name, suffix)),
            "spec": spec,
        }

    dns = {
        "to": [{"namespaceSelector": {}}],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }
    to_broker = {"to": [_pods(ctx, naming.BROKER)], "ports": _ports(*broker_ports())}
    out = [
        # Everything the cluster runs starts closed, both ways.
        policy(
            "default-deny",
            {"podSelector": cluster_pods, "policyTypes": ["Ingress", "Egress"]},
        ),
        # Every pod may resolve names and be scraped.
        policy(
            "allow-dns-metrics",
            {
                "podSelector": cluster_pods,
                "policyTypes": ["Ingress", "Egress"],
                "egress": [dns],
                "ingress": [
                    {
                        **anywhere_metrics,
                        "ports": _ports(*sorted(set(contract.HTTP_PORTS.values()))),
                    }
                ],
            },
        ),
        # Broker: MDP and buses from the cluster's services and from labelled clients.
        policy(
            "broker",
            {
                "podSelector": {"matchLabels": naming.selector_labels(ctx.name, naming.BROKER)},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [*members, clients], "ports": _ports(*broker_ports())}],
            },
        ),
    ]
    # Services (and their sidecars) talk to the broker; clients reach the gRPC sidecars.
    for c in (naming.STATE, naming.IDENTITY):
        spec: dict[str, Any] = {
            "podSelector": {"matchLabels": naming.selector_labels(ctx.name, c)},
            "policyTypes": ["Egress", "Ingress"],
            "egress": [to_broker],
            "ingress": [],
        }
        if gateway and ctx.spec.sidecars.grpc.edge.enabled:
            # The edge Service is for clients outside the cluster (an ingress controller, a
            # load balancer): any source; the gateway authenticates every call itself.
            spec["ingress"].append({"ports": _ports(*gateway)})
        elif gateway:
            spec["ingress"].append({"from": [clients, *members], "ports": _ports(*gateway)})
        if c == naming.STATE or (c == naming.IDENTITY and ctx.identity_store == "redis"):
            spec["egress"].append(_to_redis(ctx))
        out.append(policy(c, spec))
    if ctx.spec.state.redis.mode == "managed":
        out.append(policy(naming.REDIS, _redis_policy(ctx)))
    return out


def _managed_redis_ports(ctx: ClusterContext) -> list[int]:
    if ctx.managed_sentinel:
        return [contract.REDIS_PORT, contract.SENTINEL_PORT]
    return [contract.REDIS_PORT]


def _redis_policy(ctx: ClusterContext) -> dict[str, Any]:
    ports = _ports(*_managed_redis_ports(ctx))
    spec: dict[str, Any] = {
        "podSelector": {"matchLabels": naming.selector_labels(ctx.name, naming.REDIS)},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [_pods(ctx, c) for c in redis_clients(ctx)], "ports": ports}],
    }
    if ctx.managed_sentinel:
        # Replication and the Sentinels' gossip run between the Redis pods, both ways; the
        # operator asks a Sentinel who the primary is (status.redisPrimary). Its pods may be
        # in any namespace; the Sentinels take the password, so the label alone opens nothing.
        spec["policyTypes"] = ["Ingress", "Egress"]
        spec["ingress"].append({"from": [_pods(ctx, naming.REDIS)], "ports": ports})
        spec["ingress"].append(
            {
                "from": [
                    {
                        "namespaceSelector": {},
                        "podSelector": {"matchLabels": {"app.kubernetes.io/name": OPERATOR_NAME}},
                    }
                ],
                "ports": _ports(contract.SENTINEL_PORT),
            }
        )
        spec["egress"] = [{"to": [_pods(ctx, naming.REDIS)], "ports": ports}]
    return spec


def redis_clients(ctx: ClusterContext) -> list[str]:
    """Components that connect to the cluster's Redis: state, and identity on Redis."""
    out = [naming.STATE]
    if ctx.identity_store == "redis":
        out.append(naming.IDENTITY)
    return out


def _to_redis(ctx: ClusterContext) -> dict[str, Any]:
    redis = ctx.spec.state.redis
    if redis.mode == "managed":
        return {"to": [_pods(ctx, naming.REDIS)], "ports": _ports(*_managed_redis_ports(ctx))}
    # An external Redis may be anywhere: allow its ports, not its (unknown) addresses.
    assert redis.external is not None
    if redis.external.sentinel is not None:
        sentinel = redis.external.sentinel
        ports = {int(a.rsplit(":", 1)[1]) for a in sentinel.addresses} | {sentinel.redis_port}
        return {"ports": _ports(*sorted(ports))}
    assert redis.external.address is not None
    port = int(redis.external.address.rsplit(":", 1)[1])
    return {"ports": _ports(port)}
