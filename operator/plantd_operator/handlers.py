"""kopf handler registration: one reconcile for create/update/resume/timer, plus child watches."""

from __future__ import annotations

import copy
from typing import Any

import kopf

from plantd.common import contract
from plantd_operator import naming
from plantd_operator.reconcile import Reconciler

CLUSTERS = (contract.API_GROUP, contract.API_VERSION, "plantdclusters")
# Children watched for drift and readiness (server-side label selector keeps streams small).
WATCHED_CHILDREN = (
    ("apps", "v1", "deployments", "Deployment"),
    ("apps", "v1", "statefulsets", "StatefulSet"),
    ("", "v1", "services", "Service"),
    ("", "v1", "configmaps", "ConfigMap"),
)


def _plain(body: Any) -> dict[str, Any]:
    return copy.deepcopy(dict(body))


def configure(settings: kopf.OperatorSettings) -> None:
    """kopf's own state under plantd.io/ (not kopf.zalando.org), and robust watches."""
    settings.persistence.finalizer = naming.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=naming.PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=naming.PREFIX, key="last-handled-configuration"
    )
    # Watches go silent without timeouts (kopf #698, #787): reconnect regularly.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 30
    settings.execution.max_workers = 16
    # Our own Events describe transitions; kopf's per-handler INFO chatter is noise.
    settings.posting.level = 30  # logging.WARNING
    selector = f"{naming.LABEL_MANAGED_BY}={naming.MANAGER}"
    for group, _version, plural, _kind in WATCHED_CHILDREN:
        settings.watching.label_selectors[(group or "v1", plural)] = selector


def register(registry: kopf.OperatorRegistry, rec: Reconciler, drift_interval: float) -> None:
    # A private registry has none of kopf's default login handlers: use the official
    # client's credentials (in-cluster ServiceAccount token or $KUBECONFIG), as the rest does.
    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)

    @kopf.on.resume(*CLUSTERS, registry=registry, id="reconcile")
    @kopf.on.create(*CLUSTERS, registry=registry, id="reconcile")
    @kopf.on.update(*CLUSTERS, registry=registry, id="reconcile")
    async def reconcile(body: kopf.Body, reason: str, **_: Any) -> None:
        await rec.reconcile(_plain(body), trigger=str(reason))

    @kopf.timer(
        *CLUSTERS,
        registry=registry,
        id="drift",
        interval=drift_interval,
        initial_delay=drift_interval,
        idle=min(drift_interval, 10.0),
    )
    async def drift(body: kopf.Body, **_: Any) -> None:
        await rec.reconcile(_plain(body), trigger="timer")

    @kopf.on.event(*CLUSTERS, registry=registry)
    async def cluster_event(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        meta = body.get("metadata", {})
        if event.get("type") == "DELETED":
            rec.forget(meta.get("namespace", ""), meta.get("name", ""))
        else:
            rec.observe(_plain(body))

    for group, version, plural, kind in WATCHED_CHILDREN:

        def make(kind: str) -> Any:
            async def child_event(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
                obj = _plain(body)
                obj.setdefault("kind", kind)
                await rec.child_changed(obj, deleted=event.get("type") == "DELETED")

            return child_event

        kopf.on.event(
            group,
            version,
            plural,
            registry=registry,
            id=f"child-{plural}",
            labels={naming.LABEL_MANAGED_BY: naming.MANAGER},
        )(make(kind))
