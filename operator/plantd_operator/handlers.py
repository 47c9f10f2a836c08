"""kopf handler registration: one reconcile for create/update/resume, child watches, resync.

No handler needs kopf's finalizer: children go with their owner (garbage collection), and the
periodic resync is our own task rather than a ``kopf.timer`` (kopf's timers force a finalizer,
which costs a round trip before the first reconcile and blocks deletion while the operator is
down). kopf removes a finalizer left by an older version by itself.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any

import kopf

from plantd.common import contract
from plantd_operator import naming, resync, sentinel
from plantd_operator.kube import TRANSPORT_ERRORS, ApiError
from plantd_operator.reconcile import Reconciler

log = logging.getLogger(__name__)

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

    tasks: list[asyncio.Task[None]] = []

    # Started from kopf's startup (not beside it) so the task inherits kopf's context:
    # kopf.event() needs it to post Events for transitions the resync finds.
    @kopf.on.startup(registry=registry)
    async def start_resync(**_: Any) -> None:
        # Discovery and connections now, so the first new cluster waits for neither.
        try:
            await asyncio.gather(rec.capabilities(), rec.kube.awarm(rec.settings.apply_concurrency))
        except (ApiError, *TRANSPORT_ERRORS) as exc:
            log.warning("API discovery failed (retried on the first reconcile): %s", exc)
        tasks.append(asyncio.create_task(resync.loop(rec, drift_interval), name="resync"))
        # status.store of clusters whose managed Redis has Sentinels (primary, failovers).
        tasks.append(asyncio.create_task(sentinel.loop(rec), name="sentinel-probe"))

    @kopf.on.cleanup(registry=registry)
    async def stop_resync(**_: Any) -> None:
        for task in tasks:
            task.cancel()

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
                # Read-only use, and the most frequent event: a shallow copy, not a deep one.
                obj = dict(body)
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
