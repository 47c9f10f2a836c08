"""Pieces every plantd pod shares: restricted security, probes, env, volumes, config hash."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from plantd.common import contract
from plantd_operator import naming
from plantd_operator.context import ClusterContext
from plantd_operator.models import Resources

CURVE_VOLUME = "curve-keys"
JWT_VOLUME = "jwt-keys"
REDIS_TLS_VOLUME = "redis-tls"
TMP_VOLUME = "tmp"
# The sidecar's /metrics, /healthz, /readyz port (<= 15 characters, unique in its pod).
GATEWAY_METRICS_PORT_NAME = "http-metrics-gw"

# Requests when the user sets none: small, so a test cluster or laptop fits many clusters.
DEFAULT_REQUESTS: dict[str, dict[str, str]] = {
    naming.BROKER: {"cpu": "100m", "memory": "64Mi"},
    naming.STATE: {"cpu": "50m", "memory": "64Mi"},
    naming.IDENTITY: {"cpu": "50m", "memory": "64Mi"},
    naming.GATEWAY: {"cpu": "25m", "memory": "48Mi"},
    naming.REDIS: {"cpu": "50m", "memory": "64Mi"},
}


def container_security(uid: int | None = None) -> dict[str, Any]:
    """The restricted Pod Security profile, per container."""
    sc: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if uid is not None:
        sc["runAsUser"] = uid
        sc["runAsGroup"] = uid
    return sc


def pod_security(uid: int) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def resources(component: str, spec: Resources) -> dict[str, Any]:
    requests = dict(spec.requests) or dict(DEFAULT_REQUESTS[component])
    out: dict[str, Any] = {"requests": {k: str(v) for k, v in requests.items()}}
    if spec.limits:
        out["limits"] = {k: str(v) for k, v in spec.limits.items()}
    return out


def http_probes(port_name: str) -> dict[str, Any]:
    """Liveness on /healthz, readiness on /readyz, and a startup probe for slow starts."""

    def probe(path: str, period: int, failures: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": path, "port": port_name},
            "periodSeconds": period,
            "timeoutSeconds": 2,
            "failureThreshold": failures,
        }

    return {
        "startupProbe": probe(contract.PATH_HEALTHZ, 2, 30),
        "livenessProbe": probe(contract.PATH_HEALTHZ, 10, 3),
        "readinessProbe": probe(contract.PATH_READYZ, 5, 2),
    }


# Seconds a terminating pod keeps serving before SIGTERM: the endpoints controller and every
# kube-proxy take this pod out of its Services meanwhile, so a client refused by the draining
# process reconnects to another pod, not to this one again.
PRESTOP_SLEEP_S = 3
# What a plantd process may take after SIGTERM besides its own drain: the runner's margin
# before it cancels (plantd.common.service) and the exit.
STOP_MARGIN_S = 15


def drain_lifecycle() -> dict[str, Any]:
    """preStop: wait (kubelet's sleep action, no shell in the image) before SIGTERM."""
    return {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_S}}}


def termination_grace_s(drain_s: int) -> int:
    """terminationGracePeriodSeconds for a pod whose process drains for ``drain_s``."""
    return max(30, PRESTOP_SLEEP_S + drain_s + STOP_MARGIN_S)


def env_from_config(ctx: ClusterContext) -> list[dict[str, Any]]:
    return [{"configMapRef": {"name": naming.child(ctx.name, "config")}}]


def curve_volume(ctx: ClusterContext, component: str) -> dict[str, Any] | None:
    """This component's key pair, the broker's public key; for the broker, its allow-list."""
    if not ctx.spec.security.curve.enabled:
        return None
    pub, sec = contract.CURVE_PUBLIC_SUFFIX, contract.CURVE_SECRET_SUFFIX
    items = [{"key": f"{component}{sec}", "path": f"{component}{sec}", "mode": 0o400}]
    public = {naming.BROKER, component}
    if component == naming.BROKER:
        public |= set(curve_clients(ctx))
    items += [{"key": f"{c}{pub}", "path": f"{c}{pub}"} for c in sorted(public)]
    sources: list[dict[str, Any]] = [
        {"secret": {"name": naming.child(ctx.name, "curve"), "items": items}}
    ]
    extra = ctx.spec.security.curve.client_keys_config_map
    if component == naming.BROKER and extra:
        sources.append({"configMap": {"name": extra, "optional": True}})
    return {"name": CURVE_VOLUME, "projected": {"sources": sources, "defaultMode": 0o440}}


def curve_clients(ctx: ClusterContext) -> list[str]:
    """Components that connect to the broker, hence hold client key pairs."""
    out = [naming.STATE, naming.IDENTITY]
    if ctx.gateway_rendered:
        out.append(naming.GATEWAY)
    return out


def curve_mount() -> dict[str, Any]:
    return {"name": CURVE_VOLUME, "mountPath": contract.CONTAINER_CURVE_KEYS_DIR, "readOnly": True}


def tmp_volume() -> dict[str, Any]:
    return {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": "64Mi"}}


def tmp_mount() -> dict[str, Any]:
    # A private emptyDir, not a shared host /tmp: the root filesystem is read-only.
    return {"name": TMP_VOLUME, "mountPath": "/tmp"}  # noqa: S108


def plantd_container(
    ctx: ClusterContext,
    component: str,
    spec_resources: Resources,
    *,
    ports: list[dict[str, Any]],
    extra_env: list[dict[str, Any]] | None = None,
    extra_mounts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A container running ``plantd <component>`` from the one image."""
    mounts = [tmp_mount()]
    if ctx.spec.security.curve.enabled:
        mounts.append(curve_mount())
    mounts += extra_mounts or []
    container: dict[str, Any] = {
        "name": component,
        "image": ctx.image,
        "imagePullPolicy": ctx.spec.image_pull_policy,
        "command": contract.command_for(component),
        "envFrom": env_from_config(ctx),
        "ports": ports,
        "resources": resources(component, spec_resources),
        "securityContext": container_security(),
        "volumeMounts": mounts,
        "lifecycle": drain_lifecycle(),
        **http_probes(contract.PORT_NAME_METRICS),
    }
    if extra_env:
        container["env"] = extra_env
    return container


def grpc_probes(port: int) -> dict[str, Any]:
    """kubelet's own gRPC probes on grpc.health.v1 (plantd.gateway.health): liveness never
    depends on the broker (an outage must not restart every gateway); readiness does, so a
    sidecar that cannot reach the bus takes its pod out of the Services. gRPC probes name
    the port by number (Kubernetes has no named gRPC probe port)."""

    def probe(service: str, period: int, failures: int) -> dict[str, Any]:
        return {
            "grpc": {"port": port, "service": service},
            "periodSeconds": period,
            "timeoutSeconds": 2,
            "failureThreshold": failures,
        }

    return {
        "startupProbe": probe(contract.HEALTH_LIVENESS, 2, 30),
        "livenessProbe": probe(contract.HEALTH_LIVENESS, 10, 3),
        "readinessProbe": probe(contract.HEALTH_READINESS, 5, 2),
    }


def gateway_sidecar(ctx: ClusterContext) -> dict[str, Any]:
    """The gateway (``plantd gateway``) next to a service, talking to the services via the
    broker. Port names follow Istio's protocol selection (grpc, http-*)."""
    grpc = ctx.spec.sidecars.grpc
    ports = [{"name": contract.PORT_NAME_GRPC, "containerPort": grpc.port, "protocol": "TCP"}]
    if grpc.rest:
        ports.append(
            {"name": contract.PORT_NAME_REST, "containerPort": grpc.rest_port, "protocol": "TCP"}
        )
    ports.append(
        {
            "name": GATEWAY_METRICS_PORT_NAME,
            "containerPort": contract.HTTP_PORTS[naming.GATEWAY],
            "protocol": "TCP",
        }
    )
    container = plantd_container(ctx, naming.GATEWAY, grpc.resources, ports=ports)
    container.update(grpc_probes(grpc.port))
    return container


def config_hash(*parts: object) -> str:
    """Stable digest of what a pod reads at start; it changes only when those inputs change."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def pod_template(
    ctx: ClusterContext,
    component: str,
    containers: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    *,
    config_digest: str,
    uid: int = contract.IMAGE_UID,
    termination_grace: int = 30,
) -> dict[str, Any]:
    """Pod template with labels, the config hash, overrides, mesh injection and security."""
    overrides = ctx.pod_overrides(component)
    annotations = dict(overrides.annotations)
    annotations[naming.ANNOTATION_CONFIG_HASH] = config_digest
    pod_labels = {
        **naming.labels(ctx.name, component, ctx.version),
        **naming.selector_labels(ctx.name, component),
    }
    if component in (naming.STATE, naming.IDENTITY) and ctx.gateway_rendered:
        pod_labels[naming.LABEL_GATEWAY] = "true"
    if ctx.spec.mesh.istio.enabled:
        pod_labels["sidecar.istio.io/inject"] = "true"
        # ZeroMQ sockets connect at start: hold the app until the proxy is up.
        annotations["proxy.istio.io/config"] = '{"holdApplicationUntilProxyStarts": true}'
    spec: dict[str, Any] = {
        "serviceAccountName": ctx.service_account(component),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security(uid),
        "terminationGracePeriodSeconds": termination_grace,
        "containers": containers,
        "volumes": volumes,
    }
    if ctx.spec.image_pull_secrets and component != naming.REDIS:
        spec["imagePullSecrets"] = [{"name": n} for n in ctx.spec.image_pull_secrets]
    if overrides.node_selector:
        spec["nodeSelector"] = dict(overrides.node_selector)
    if overrides.tolerations:
        spec["tolerations"] = [
            t.model_dump(by_alias=True, exclude_none=True) for t in overrides.tolerations
        ]
    if overrides.affinity:
        spec["affinity"] = overrides.affinity
    return {"metadata": {"labels": pod_labels, "annotations": annotations}, "spec": spec}
