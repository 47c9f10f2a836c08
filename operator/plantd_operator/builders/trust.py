"""Public trust material as ConfigMaps: the machine registry and the JWKS.

Both hold public keys only (CURVE public keys, JWT verification keys), so a ConfigMap, not a
Secret, is right. Their contents come from the generated Secrets, so they are rendered only
once those were read (like the inline JWKS of Istio's RequestAuthentication); the settings
that point at the files depend on the spec alone, so the pods' environment never waits for a
Secret. A pod whose ConfigMap does not exist yet waits in ContainerCreating: kubelet retries
the mount until the reconcile has applied it.
"""

from __future__ import annotations

import hashlib
from typing import Any

from plantd.common import contract
from plantd.common.registry import FILE_NAME as REGISTRY_FILE_NAME
from plantd.common.registry import plantd_registry
from plantd_operator import naming
from plantd_operator.context import ClusterContext

REGISTRY_VOLUME = "registry"
JWKS_VOLUME = "jwks"
REGISTRY_PATH = f"{contract.CONTAINER_REGISTRY_DIR}/{REGISTRY_FILE_NAME}"
JWKS_PATH = f"{contract.CONTAINER_JWKS_DIR}/{contract.JWKS_FILE_NAME}"


def registry_enabled(ctx: ClusterContext) -> bool:
    """A registry is rendered with CURVE: without keys on the bus there is nothing to grant."""
    return ctx.spec.security.curve.enabled


def jwks_enabled(ctx: ClusterContext) -> bool:
    """State verifies tokens against a mounted JWKS (no identity round trip at start)."""
    return ctx.state_auth


def registry_name(ctx: ClusterContext) -> str:
    return naming.child(ctx.name, "registry")


def jwks_name(ctx: ClusterContext) -> str:
    return naming.child(ctx.name, "jwks")


def registry_json(ctx: ClusterContext) -> str:
    """plantd's own components and what they may serve and publish (plantd.common.registry's
    grants, the one authority); '' until the CURVE Secret was read."""
    if not registry_enabled(ctx) or not ctx.curve_public_keys:
        return ""
    own = {key: name for name, key in ctx.curve_public_keys.items()}
    return plantd_registry(own).to_json().decode()


def jwks_json(ctx: ClusterContext) -> str:
    return ctx.jwks if jwks_enabled(ctx) else ""


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16] if text else "absent"


def config_maps(ctx: ClusterContext) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name, file_name, text in (
        (registry_name(ctx), REGISTRY_FILE_NAME, registry_json(ctx)),
        (jwks_name(ctx), contract.JWKS_FILE_NAME, jwks_json(ctx)),
    ):
        if text:
            out.append(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": ctx.metadata(name),
                    "data": {file_name: text},
                }
            )
    return out


def _volume(volume: str, config_map: str, file_name: str) -> dict[str, Any]:
    # 0444: the registry loader refuses a file group or others can write.
    return {
        "name": volume,
        "configMap": {
            "name": config_map,
            "defaultMode": 0o444,
            "items": [{"key": file_name, "path": file_name}],
        },
    }


def wiring(
    ctx: ClusterContext, component: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Volumes and read-only mounts of the registry (broker, state) and JWKS (state)."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    if registry_enabled(ctx) and component in (naming.BROKER, naming.STATE):
        volumes.append(_volume(REGISTRY_VOLUME, registry_name(ctx), REGISTRY_FILE_NAME))
        mounts.append(
            {
                "name": REGISTRY_VOLUME,
                "mountPath": contract.CONTAINER_REGISTRY_DIR,
                "readOnly": True,
            }
        )
    if _pod_reads_jwks(ctx, component):
        volumes.append(_volume(JWKS_VOLUME, jwks_name(ctx), contract.JWKS_FILE_NAME))
    if jwks_enabled(ctx) and component == naming.STATE:
        mounts.append(jwks_mount())
    return volumes, mounts


def jwks_mount() -> dict[str, Any]:
    """The JWKS, read-only, for state and for the gateway sidecars (their pods' volume)."""
    return {"name": JWKS_VOLUME, "mountPath": contract.CONTAINER_JWKS_DIR, "readOnly": True}


def _pod_reads_jwks(ctx: ClusterContext, component: str) -> bool:
    """State verifies tokens against the JWKS, and so does a gateway sidecar in any pod."""
    if not jwks_enabled(ctx):
        return False
    return component == naming.STATE or (component != naming.BROKER and ctx.gateway_rendered)


def digests(ctx: ClusterContext, component: str) -> dict[str, str]:
    """What of the ConfigMaps a component's pods read, for their config hash: a key rotation
    (CURVE or signing key) rolls exactly the pods that trust those keys."""
    out: dict[str, str] = {}
    if registry_enabled(ctx) and component in (naming.BROKER, naming.STATE):
        out["registry"] = digest(registry_json(ctx))
    if _pod_reads_jwks(ctx, component):
        out["jwks"] = digest(jwks_json(ctx))
    return out
