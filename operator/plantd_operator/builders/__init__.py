"""Pure builders: a ClusterContext in, the child manifests out (apply order)."""

from __future__ import annotations

from typing import Any

from plantd_operator import naming
from plantd_operator.builders import config, istio, monitoring, policy, redis, trust, workloads
from plantd_operator.context import ClusterContext


def render_children(ctx: ClusterContext) -> list[dict[str, Any]]:
    """Every child except the generated Secrets (created once, never re-rendered).

    Order matters only for a first start: identities and config before the pods that use them.
    """
    out: list[dict[str, Any]] = [*config.service_accounts(ctx), config.config_map(ctx)]
    # The registry and JWKS ConfigMaps: only once the Secrets they come from were read.
    out += trust.config_maps(ctx)
    if ctx.spec.state.redis.mode == "managed":
        out += redis.services(ctx)
        out.append(redis.statefulset(ctx))
    out += workloads.services(ctx)
    out += [workloads.deployment(ctx, c) for c in (naming.BROKER, naming.STATE, naming.IDENTITY)]
    out += policy.pdbs(ctx)
    out += policy.network_policies(ctx)
    if ctx.capabilities.istio:
        out += istio.objects(ctx)
    out += monitoring.objects(ctx)
    return out
