"""Names, labels and selectors of everything the operator creates for a PlantdCluster."""

from __future__ import annotations

from typing import Final

from plantd.common import contract

MANAGER: Final = contract.FIELD_MANAGER
PREFIX: Final = "plantd.io"
LABEL_CLUSTER: Final = f"{PREFIX}/cluster"
LABEL_COMPONENT: Final = f"{PREFIX}/component"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
# On pods that run a gateway sidecar: what the edge Service selects.
LABEL_GATEWAY: Final = f"{PREFIX}/gateway"
ANNOTATION_CONFIG_HASH: Final = f"{PREFIX}/config-hash"
ANNOTATION_PAUSED: Final = f"{PREFIX}/paused"
FINALIZER: Final = f"{PREFIX}/finalizer"
# Set on a PlantdCluster (any new value) to rotate its signing keys once; the Secret keeps
# the value it was rotated for in ANNOTATION_ROTATED.
ANNOTATION_ROTATE: Final = f"{PREFIX}/rotate-signing-key"
ANNOTATION_ROTATED: Final = f"{PREFIX}/rotated-for"

# Components with their own workload. Redis is "redis"; the gRPC sidecar is the gateway.
BROKER: Final = contract.BROKER
STATE: Final = contract.STATE
IDENTITY: Final = contract.IDENTITY
GATEWAY: Final = contract.GATEWAY
REDIS: Final = "redis"
EDGE: Final = "edge"  # the optional Service in front of every gateway sidecar
WORKLOADS: Final = (BROKER, STATE, IDENTITY, REDIS)


def child(cluster: str, suffix: str) -> str:
    """``<cluster>-<suffix>``: every child is named after its cluster."""
    return f"{cluster}-{suffix}"


def headless(cluster: str, component: str) -> str:
    return f"{cluster}-{component}-headless"


def selector_labels(cluster: str, component: str) -> dict[str, str]:
    """Immutable labels a workload selects its pods by (never includes the version)."""
    return {
        "app.kubernetes.io/name": "plantd",
        "app.kubernetes.io/instance": cluster,
        "app.kubernetes.io/component": component,
    }


def gateway_selector(cluster: str) -> dict[str, str]:
    """Every pod of the cluster that runs a gateway sidecar (state and identity)."""
    return {
        "app.kubernetes.io/name": "plantd",
        "app.kubernetes.io/instance": cluster,
        LABEL_GATEWAY: "true",
    }


def labels(
    cluster: str, component: str | None = None, version: str | None = None
) -> dict[str, str]:
    """Recommended labels plus plantd.io/cluster (what the operator's watches select on)."""
    out = {
        "app.kubernetes.io/name": "plantd",
        "app.kubernetes.io/instance": cluster,
        "app.kubernetes.io/part-of": "plantd",
        LABEL_MANAGED_BY: MANAGER,
        LABEL_CLUSTER: cluster,
    }
    if component:
        out["app.kubernetes.io/component"] = component
        out[LABEL_COMPONENT] = component
    if version:
        out["app.kubernetes.io/version"] = version
    return out


def service_host(cluster: str, component: str, namespace: str) -> str:
    return f"{child(cluster, component)}.{namespace}.svc"


def principal(namespace: str, service_account: str) -> str:
    """Istio/SPIFFE principal of a ServiceAccount."""
    return f"cluster.local/ns/{namespace}/sa/{service_account}"
