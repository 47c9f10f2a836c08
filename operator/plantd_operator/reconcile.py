"""The level-based reconcile: ensure Secrets, check references, render, apply, report.

One function serves create, update, resume, the drift timer and child-deletion events; it is
idempotent (server-side apply) and never writes the user's spec.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import kopf
from pydantic import ValidationError

from plantd.common import contract
from plantd_operator import admission, drift, naming, secrets, shipped, status
from plantd_operator.builders import render_children, workloads
from plantd_operator.context import Capabilities, ClusterContext
from plantd_operator.kube import ApiError, Kube
from plantd_operator.metrics import Metrics
from plantd_operator.models import PlantdClusterSpec, parse_spec
from plantd_operator.sentinel import SentinelView

log = logging.getLogger(__name__)

API_VERSION = f"{contract.API_GROUP}/{contract.API_VERSION}"
KIND = "PlantdCluster"
# Kinds that can disappear from the rendered set (a feature switched off): listed and pruned.
PRUNABLE = [
    ("v1", "Service", "services"),  # the edge Service (sidecars.grpc.edge)
    ("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
    ("security.istio.io/v1", "PeerAuthentication", "peerauthentications"),
    ("security.istio.io/v1", "AuthorizationPolicy", "authorizationpolicies"),
    ("security.istio.io/v1", "RequestAuthentication", "requestauthentications"),
    ("networking.istio.io/v1", "DestinationRule", "destinationrules"),
    ("monitoring.coreos.com/v1", "ServiceMonitor", "servicemonitors"),
    ("monitoring.coreos.com/v1", "PrometheusRule", "prometheusrules"),
]


# Pod owners: their config hash covers Secret contents, and their pods need ServiceAccounts.
WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet"})
# What pods need before they can start: applied first, together with the Secrets.
FIRST_KINDS = frozenset({"ServiceAccount", "ConfigMap"})


def mark(obj: dict[str, Any]) -> int:
    """Ordering mark of an object version: generation where it exists, else resourceVersion."""
    meta = obj.get("metadata") or {}
    try:
        return int(meta.get("generation") or meta.get("resourceVersion") or 0)
    except ValueError:
        return 0


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def key_of(obj: dict[str, Any]) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


@dataclass
class ClusterState:
    """What the operator remembers about one PlantdCluster between events (memory only)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Status writes are serialised so a slower, older computation never lands last.
    status_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # (kind, name) -> metadata.generation (or resourceVersion) our last apply returned:
    # watch events older than that describe the object before our write, not drift.
    applied_marks: dict[tuple[str, str], int] = field(default_factory=dict)
    rendered: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    problems: tuple[status.Problem, ...] = ()
    applied_generation: int | None = None
    workloads: dict[str, status.Workload] = field(default_factory=dict)
    ctx: ClusterContext | None = None
    body: dict[str, Any] | None = None
    # The status we last wrote: watch events can deliver older bodies, so comparing against
    # them would rewrite the status and re-post events for transitions already reported.
    written: dict[str, Any] | None = None
    # time.monotonic() of the last finished reconcile (the resync skips fresh clusters).
    last_reconciled: float = 0.0
    # What the Sentinels of a replicated managed Redis last said (plantd_operator.sentinel).
    sentinel: SentinelView | None = None


@dataclass
class Settings:
    default_repository: str = "plantd/plantd"
    default_version: str = "0.1.0"
    default_redis_image: str = shipped.DEFAULT_REDIS_IMAGE
    runbook_url: str = "https://plantd.dev/docs/operator"
    capability_ttl: float = 60.0
    # Concurrent API writes. More does not help on a busy API server: every request just gets
    # slower (and each extra one opens a connection, a TLS handshake, on first use). Enough
    # for one cluster's first wave plus its Services.
    apply_concurrency: int = 16
    # Image patterns a cluster may run (admission.image_allowed); empty: any image.
    allowed_images: tuple[str, ...] = ()


def paused_by(spec: PlantdClusterSpec, meta: dict[str, Any]) -> str:
    if spec.paused:
        return "spec.paused"
    value = (meta.get("annotations") or {}).get(naming.ANNOTATION_PAUSED, "")
    if value.lower() in ("true", "1", "yes"):
        return f"the {naming.ANNOTATION_PAUSED} annotation"
    return ""


class Reconciler:
    def __init__(self, kube: Kube, metrics: Metrics, settings: Settings | None = None) -> None:
        self.kube = kube
        self.metrics = metrics
        self.settings = settings or Settings()
        self.clusters: dict[tuple[str, str], ClusterState] = {}
        self._caps: tuple[float, Capabilities] | None = None
        self._caps_refresh: asyncio.Task[Capabilities] | None = None
        self._sem = asyncio.Semaphore(self.settings.apply_concurrency)

    def state(self, namespace: str, name: str) -> ClusterState:
        return self.clusters.setdefault((namespace, name), ClusterState())

    def forget(self, namespace: str, name: str) -> None:
        self.clusters.pop((namespace, name), None)
        self.metrics.forget_cluster(namespace, name)

    def due_for_resync(self, interval: float) -> list[dict[str, Any]]:
        """Bodies of the clusters not reconciled for ``interval`` seconds (not being deleted)."""
        now = time.monotonic()
        return [
            st.body
            for st in self.clusters.values()
            if st.body is not None
            and not st.body["metadata"].get("deletionTimestamp")
            and now - st.last_reconciled >= interval
            and not st.lock.locked()
        ]

    async def capabilities(self) -> Capabilities:
        """Optional APIs, cached: a stale answer is served while a refresh runs in the
        background, so only the very first reconcile waits for discovery."""
        cached = self._caps
        if cached is None:
            return await self._discover()
        if time.monotonic() - cached[0] >= self.settings.capability_ttl and (
            self._caps_refresh is None or self._caps_refresh.done()
        ):
            self._caps_refresh = asyncio.create_task(self._discover())
        return cached[1]

    async def _discover(self) -> Capabilities:
        istio, sm, pr = await asyncio.gather(
            self.kube.ahas_resource("security.istio.io/v1", "authorizationpolicies"),
            self.kube.ahas_resource("monitoring.coreos.com/v1", "servicemonitors"),
            self.kube.ahas_resource("monitoring.coreos.com/v1", "prometheusrules"),
        )
        caps = Capabilities(istio=istio, service_monitor=sm, prometheus_rule=pr)
        self._caps = (time.monotonic(), caps)
        return caps

    def context(
        self,
        body: dict[str, Any],
        spec: PlantdClusterSpec,
        caps: Capabilities,
        digests: dict[str, str],
        jwks: str = "",
        curve_keys: dict[str, str] | None = None,
    ) -> ClusterContext:
        meta = body["metadata"]
        return ClusterContext(
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta["uid"],
            spec=spec,
            default_repository=self.settings.default_repository,
            default_version=self.settings.default_version,
            default_redis_image=self.settings.default_redis_image,
            runbook_url=self.settings.runbook_url,
            capabilities=caps,
            secret_digests=digests,
            jwks=jwks,
            curve_public_keys=dict(curve_keys or {}),
            rotate_signing_key=(meta.get("annotations") or {}).get(naming.ANNOTATION_ROTATE, ""),
        )

    # ------------------------------------------------------------------ the reconcile
    async def reconcile(self, body: dict[str, Any], trigger: str) -> None:
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        st = self.state(ns, name)
        started = time.perf_counter()
        log.info("reconciling %s/%s (%s)", ns, name, trigger)
        result = "error"
        async with st.lock:
            try:
                result = await self._reconcile(body, st, trigger)
            finally:
                st.last_reconciled = time.monotonic()
                elapsed = time.perf_counter() - started
                self.metrics.reconciled(result, elapsed, trigger)
                log.info("reconciled %s/%s: %s in %.3fs", ns, name, result, elapsed)
        await self.refresh_status(ns, name)
        if result == "blocked":
            blocking = [p for p in st.problems if p.blocking]
            raise kopf.TemporaryError(f"{blocking[0].reason}: {blocking[0].message}", delay=10)

    async def _reconcile(self, body: dict[str, Any], st: ClusterState, trigger: str) -> str:
        meta = body["metadata"]
        st.body = body
        try:
            spec = parse_spec(body.get("spec") or {})
        except ValidationError as exc:
            # The schema should have caught this; say what the operator could not read.
            st.problems = (status.Problem("InvalidSpec", f"spec not understood: {exc}"),)
            return "blocked"
        caps = await self.capabilities()
        if paused_by(spec, meta):
            st.ctx = self.context(body, spec, caps, st.ctx.secret_digests if st.ctx else {})
            return "paused"
        digests: dict[str, str] = {}
        base = self.context(body, spec, caps, {})
        # The operator's policy first: a refused spec gets nothing applied (not even the
        # parts that look harmless), and its children stay as they were.
        checked = admission.check(base, self.settings.allowed_images)
        if any(p.blocking for p in checked):
            st.ctx = st.ctx or base
            st.problems = tuple(checked)
            return "blocked"
        early = [c for c in render_children(base) if c["kind"] not in WORKLOAD_KINDS]
        first = [c for c in early if c["kind"] in FIRST_KINDS]
        services = [c for c in early if c["kind"] == "Service"]
        # Latency: the critical path to running pods is identities, settings and Secrets
        # (together), then the workloads; everything else follows. Workloads wait for the
        # Secrets (their config hash covers them) and for their ServiceAccounts (a pod whose
        # ServiceAccount does not exist yet is refused by admission, and the ReplicaSet
        # controller then backs off). Services depend on nothing but are slow to create (the
        # API server allocates each ClusterIP in turn), so they start first, in the background.
        # With 2 cores, sending all ~20 objects at once makes every one of them slower.
        services_applied = asyncio.ensure_future(self._apply_all(services))
        try:
            secret_problems: list[status.Problem] = []
            ref_problems: list[status.Problem] = []
            public: dict[str, str] = {}
            curve_keys: dict[str, str] = {}
            failures, _, _ = await asyncio.gather(
                self._apply_all(first),
                self._ensure_secrets(
                    base,
                    digests,
                    secret_problems,
                    fresh=trigger == "create",
                    public=public,
                    curve_keys=curve_keys,
                ),
                self._check_references(base, digests, ref_problems),
            )
            ctx = self.context(body, spec, caps, digests, public.get("jwks", ""), curve_keys)
            children = render_children(ctx)
            # What the first render already applied is not sent again; the rest comes from
            # the final render, which knows the Secrets: the registry and JWKS ConfigMaps the
            # pods mount go with the workloads (kubelet retries a mount until its ConfigMap
            # exists, so waiting for them would only add a round trip), then the
            # RequestAuthentications with the JWKS inline and everything else.
            sent = {key_of(c): c for c in first + services}
            late = [c for c in children if sent.get(key_of(c)) != c]
            pod_inputs = WORKLOAD_KINDS | FIRST_KINDS
            failures += await self._apply_all([c for c in late if c["kind"] in pod_inputs])
            failures += await self._apply_all([c for c in late if c["kind"] not in pod_inputs])
        finally:
            service_failures = await services_applied
        failures += service_failures
        problems = (
            checked + secret_problems + ref_problems + self._missing_apis(spec, caps) + failures
        )
        if trigger != "create":  # a new cluster has nothing to prune
            await self._prune(ctx, {key_of(c) for c in children})
        st.ctx = ctx
        st.rendered = {key_of(c): c for c in children}
        st.problems = tuple(problems)
        if not failures:
            st.applied_generation = int(meta.get("generation") or 0)
        return "blocked" if any(p.blocking for p in problems) else "applied"

    @staticmethod
    def _missing_apis(spec: PlantdClusterSpec, caps: Capabilities) -> list[status.Problem]:
        """Features asked for whose CRDs are not installed."""
        problems = []
        if spec.mesh.istio.enabled and not caps.istio:
            problems.append(
                status.Problem(
                    "IstioNotInstalled",
                    "mesh.istio.enabled is true but Istio's CRDs (security.istio.io/v1) are not "
                    "installed: install Istio or set mesh.istio.enabled: false",
                )
            )
        for wanted, present, what in (
            (spec.monitoring.service_monitor.enabled, caps.service_monitor, "ServiceMonitor"),
            (spec.monitoring.prometheus_rule.enabled, caps.prometheus_rule, "PrometheusRule"),
        ):
            if wanted and not present:
                problems.append(
                    status.Problem(
                        f"{what}CRDMissing",
                        f"monitoring asks for a {what} but the monitoring.coreos.com/v1 CRD is "
                        "not installed: install the Prometheus Operator CRDs or disable it",
                        blocking=False,
                    )
                )
        return problems

    async def _apply_all(self, children: list[dict[str, Any]]) -> list[status.Problem]:
        """Apply concurrently (bounded); each refusal becomes a Problem naming the object."""

        async def one(obj: dict[str, Any]) -> status.Problem | None:
            async with self._sem:
                try:
                    await self.apply_one(obj)
                except ApiError as exc:
                    return status.Problem(
                        "ApplyFailed",
                        f"the API server refused {obj['kind']} {obj['metadata']['name']}: "
                        f"{exc.message} (HTTP {exc.status})",
                    )
            return None

        results = await asyncio.gather(*(one(c) for c in children))
        return [p for p in results if p is not None]

    async def apply_one(self, obj: dict[str, Any]) -> None:
        started = time.perf_counter()
        live = await self.kube.aapply(obj)
        log.debug(
            "applied %s %s in %.0f ms",
            obj["kind"],
            obj["metadata"]["name"],
            (time.perf_counter() - started) * 1000,
        )
        self.metrics.applied(obj["kind"])
        meta = obj["metadata"]
        st = self.clusters.get((meta["namespace"], meta["labels"][naming.LABEL_CLUSTER]))
        if st is not None:
            st.applied_marks[key_of(obj)] = mark(live)

    async def _ensure_secrets(
        self,
        ctx: ClusterContext,
        digests: dict[str, str],
        problems: list[status.Problem],
        *,
        fresh: bool = False,
        public: dict[str, str] | None = None,
        curve_keys: dict[str, str] | None = None,
    ) -> None:
        """Create each generated Secret once; add missing entries; never replace values
        (except the signing keys' rotation, asked for by annotation).

        ``fresh`` (a new cluster): create first and read only on a conflict, saving a round
        trip on the path every new cluster takes. ``public`` receives the JWKS (public keys
        only) of the signing-key Secret, for Istio and the state service; ``curve_keys`` the
        components' CURVE public keys, for the machine registry.
        """
        wanted = secrets.wanted(ctx)
        results = await asyncio.gather(
            *(self._ensure_secret(ctx, name, kind, fresh) for name, kind in wanted.items())
        )
        for (sname, kind), result in zip(wanted.items(), results, strict=True):
            if isinstance(result, ApiError):
                problems.append(
                    status.Problem(
                        "SecretFailed", f"could not ensure Secret {sname}: {result.message}"
                    )
                )
                continue
            data = result
            if kind == ["jwt"]:
                digests["identity:jwt"] = secrets.digest(data)
                if public is not None:
                    try:
                        public["jwks"] = json.dumps(secrets.jwks(data), separators=(",", ":"))
                    except ValueError as exc:  # an edited Secret with a broken PEM
                        problems.append(
                            status.Problem(
                                "SigningKeyInvalid",
                                f"Secret {sname} holds a signing key that is not a PEM key "
                                f"({type(exc).__name__}): delete the broken entry and the "
                                "operator adds a new next key",
                            )
                        )
            elif kind == ["redis"]:
                digests["redis:auth"] = secrets.digest(data, ["users.acl"])
                digests["state:redis"] = secrets.digest(data, ["password"])
            else:
                digests["curve"] = secrets.digest(data)
                if curve_keys is not None:
                    curve_keys.update(secrets.curve_public_keys(data, kind))

    async def _ensure_secret(
        self, ctx: ClusterContext, sname: str, kind: list[str], fresh: bool
    ) -> dict[str, str] | ApiError:
        """The Secret's data after making sure it exists with every entry ``kind`` needs."""
        try:
            if fresh:
                manifest = secrets.manifest(ctx, sname, secrets.missing_entries(kind, {}))
                try:
                    created = await self.kube.acreate(manifest)
                    log.info("generated Secret %s/%s", ctx.namespace, sname)
                    return dict(created.get("data") or {})
                except ApiError as exc:
                    if exc.status != 409:
                        raise
            live = await self.kube.aget("v1", "Secret", ctx.namespace, sname)
            if live is None:
                entries = secrets.missing_entries(kind, {})
                try:
                    live = await self.kube.acreate(secrets.manifest(ctx, sname, entries))
                    log.info("generated Secret %s/%s", ctx.namespace, sname)
                except ApiError as exc:
                    if exc.status != 409:
                        raise
                    live = await self.kube.aget("v1", "Secret", ctx.namespace, sname)
            else:
                if kind == ["jwt"]:
                    live = await self._maybe_rotate(ctx, sname, live)
                add = secrets.missing_entries(kind, live.get("data") or {})
                if add:
                    live = await self.kube.amerge_patch(
                        "v1", "Secret", ctx.namespace, sname, {"data": secrets.encode(add)}
                    )
                    log.info("added %s to Secret %s/%s", sorted(add), ctx.namespace, sname)
        except ApiError as exc:
            return exc
        return dict((live or {}).get("data") or {})

    async def _maybe_rotate(
        self, ctx: ClusterContext, sname: str, live: dict[str, Any]
    ) -> dict[str, Any]:
        """Rotate the signing keys once per new value of the plantd.io/rotate-signing-key
        annotation (the value done is kept on the Secret, so a re-run is a no-op)."""
        asked = ctx.rotate_signing_key
        done = (live["metadata"].get("annotations") or {}).get(naming.ANNOTATION_ROTATED, "")
        if not asked or asked == done:
            return live
        try:
            patch = secrets.rotate_jwt(live.get("data") or {})
        except ValueError as exc:
            log.warning("cannot rotate Secret %s/%s: %s", ctx.namespace, sname, exc)
            return live
        rotated = await self.kube.amerge_patch(
            "v1",
            "Secret",
            ctx.namespace,
            sname,
            {"metadata": {"annotations": {naming.ANNOTATION_ROTATED: asked}}, "data": patch},
        )
        log.info("rotated the signing keys in Secret %s/%s (%s)", ctx.namespace, sname, asked)
        return rotated

    async def _check_references(
        self, ctx: ClusterContext, digests: dict[str, str], problems: list[status.Problem]
    ) -> None:
        """Secrets and ConfigMaps the user names must exist, or the pods cannot start."""
        redis = ctx.spec.state.redis
        if redis.mode == "external" and redis.external is not None:
            refs = []
            if redis.external.secret_ref is not None:
                refs.append(("password", redis.external.secret_ref, "secretRef", "Redis"))
            if redis.external.tls.enabled and redis.external.tls.ca_secret_ref is not None:
                refs.append(("ca", redis.external.tls.ca_secret_ref, "tls.caSecretRef", "RedisCA"))
            for role, ref, where, prefix in refs:
                sec = await self.kube.aget("v1", "Secret", ctx.namespace, ref.name)
                problem = admission.secret_ref(
                    ctx.name,
                    ctx.namespace,
                    sec,
                    name=ref.name,
                    key=ref.key,
                    field_path=f"spec.state.redis.external.{where}",
                    prefix=prefix,
                )
                if problem is not None:
                    problems.append(problem)
                elif sec is not None:
                    digests[f"state:{role}"] = secrets.digest(sec.get("data") or {}, [ref.key])
        boot = ctx.spec.identity.bootstrap_secret_ref
        if boot is not None:
            sec = await self.kube.aget("v1", "Secret", ctx.namespace, boot.name)
            # Not blocking: after the bootstrap the Secret is no longer needed (deleting it
            # then is good hygiene), and the operator cannot tell whether the store has users.
            problem = admission.secret_ref(
                ctx.name,
                ctx.namespace,
                sec,
                name=boot.name,
                key=boot.key,
                field_path="spec.identity.bootstrapSecretRef",
                prefix="Bootstrap",
                blocking=False,
                hint="; until then identity on an empty store does not start. Once identity "
                "has its first administrator the Secret is not read again: remove "
                "spec.identity.bootstrapSecretRef",
            )
            if problem is not None:
                problems.append(problem)
            elif sec is not None:
                digests[workloads.BOOTSTRAP_DIGEST] = secrets.digest(
                    sec.get("data") or {}, [boot.key]
                )
        cm_name = ctx.spec.security.curve.client_keys_config_map
        if ctx.spec.security.curve.enabled and cm_name:
            cm = await self.kube.aget("v1", "ConfigMap", ctx.namespace, cm_name)
            if cm is None:
                problems.append(
                    status.Problem(
                        "ClientKeysNotFound",
                        f"ConfigMap {cm_name!r} (security.curve.clientKeysConfigMap) does not "
                        "exist: only the cluster's own components can reach the broker",
                        blocking=False,
                    )
                )
            else:
                digests["broker:clientkeys"] = secrets.digest(cm.get("data") or {})

    async def _prune(self, ctx: ClusterContext, keep: set[tuple[str, str]]) -> None:
        """Delete children of kinds that may vanish when a feature is turned off."""
        caps = ctx.capabilities
        kinds = [
            (api_version, kind, plural)
            for api_version, kind, plural in PRUNABLE
            if not (
                api_version.startswith(("security.istio", "networking.istio")) and not caps.istio
            )
            and not (kind == "ServiceMonitor" and not caps.service_monitor)
            and not (kind == "PrometheusRule" and not caps.prometheus_rule)
        ]
        await asyncio.gather(*(self._prune_kind(ctx, keep, *k) for k in kinds))

    async def _prune_kind(
        self,
        ctx: ClusterContext,
        keep: set[tuple[str, str]],
        api_version: str,
        kind: str,
        plural: str,
    ) -> None:
        group_root = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        root = f"{group_root}/namespaces/{ctx.namespace}/{plural}"
        try:
            found = await asyncio.to_thread(
                self.kube.request,
                "GET",
                root,
                query={"labelSelector": f"{naming.LABEL_CLUSTER}={ctx.name}"},
                what=f"list {plural}",
            )
        except ApiError as exc:
            log.warning("cannot list %s to prune: %s", plural, exc)
            return
        for item in (found or {}).get("items", []):
            meta = item["metadata"]
            owners = [o.get("uid") for o in meta.get("ownerReferences") or []]
            if (kind, meta["name"]) in keep or ctx.uid not in owners:
                continue
            try:
                await asyncio.to_thread(
                    self.kube.request, "DELETE", f"{root}/{meta['name']}", what="prune"
                )
                log.info("pruned %s %s/%s", kind, ctx.namespace, meta["name"])
            except ApiError as exc:
                if exc.status != 404:
                    log.warning("cannot prune %s %s: %s", kind, meta["name"], exc)

    # ------------------------------------------------------------------ children events
    async def child_changed(self, body: dict[str, Any], deleted: bool) -> None:
        """A Deployment/StatefulSet/Service/ConfigMap we manage changed or went away."""
        meta = body["metadata"]
        labels = meta.get("labels") or {}
        cluster, component = labels.get(naming.LABEL_CLUSTER), labels.get(naming.LABEL_COMPONENT)
        if not cluster:
            return
        ns = meta["namespace"]
        st = self.state(ns, cluster)
        kind = body.get("kind", "")
        if kind in ("Deployment", "StatefulSet") and component:
            if deleted:
                st.workloads.pop(component, None)
            else:
                st.workloads[component] = status.workload_from(body)
        # Judged after any reconcile in progress: the event of a reconcile's own write must be
        # compared with what that reconcile rendered, not with the previous render (else the
        # new template is "repaired" back to the old one and every pod rolls twice).
        async with st.lock:
            desired = st.rendered.get((kind, meta["name"]))
            spec = st.ctx.spec if st.ctx else PlantdClusterSpec.model_validate({})
            if deleted:
                st.applied_marks.pop((kind, meta["name"]), None)  # a recreated child starts over
            stale = mark(body) < st.applied_marks.get((kind, meta["name"]), 0)
            if (
                desired is not None
                and st.body is not None
                and not stale
                and not paused_by(spec, st.body["metadata"])
            ):
                where = "deleted" if deleted else drift.diff(desired, body)
                if where:
                    await self._repair(ns, cluster, desired, where)
        await self.refresh_status(ns, cluster)

    async def _repair(self, ns: str, cluster: str, desired: dict[str, Any], where: str) -> None:
        parent = await self.kube.aget(API_VERSION, KIND, ns, cluster)
        if parent is None or parent["metadata"].get("deletionTimestamp"):
            return  # the cluster is going away; let the garbage collector finish
        uid = desired["metadata"]["ownerReferences"][0]["uid"]
        if parent["metadata"]["uid"] != uid:
            return  # a new cluster with the same name: its own reconcile renders it
        log.info(
            "repairing %s %s/%s (drift at %s)",
            desired["kind"],
            ns,
            desired["metadata"]["name"],
            where,
        )
        self.metrics.drift(desired["kind"])
        try:
            await self.apply_one(desired)
        except ApiError as exc:
            log.warning("repair of %s failed: %s", desired["metadata"]["name"], exc)

    # ------------------------------------------------------------------ status
    async def refresh_status(self, ns: str, name: str) -> None:
        st = self.clusters.get((ns, name))
        if st is None:
            return
        async with st.status_lock:
            await self._refresh_status(ns, name, st)

    async def _refresh_status(self, ns: str, name: str, st: ClusterState) -> None:
        if st.body is None or st.ctx is None:
            return
        body = st.body
        meta = body["metadata"]
        reason = paused_by(st.ctx.spec, meta)
        obs = status.Observation(
            generation=int(meta.get("generation") or 0),
            applied_generation=st.applied_generation,
            paused=bool(reason),
            paused_by=reason,
            problems=st.problems,
            workloads=dict(st.workloads),
            sentinel=st.sentinel,
        )
        old = st.written if st.written is not None else (body.get("status") or {})
        new = status.build(st.ctx, obs, old, now())
        self.metrics.phase(ns, name, new["phase"])
        if status.same(old, new):
            return
        try:
            updated = await self.kube.amerge_patch(
                API_VERSION, KIND, ns, name, {"status": new}, subresource="status"
            )
        except ApiError as exc:
            if exc.status == 404:
                return
            log.warning("cannot write status of %s/%s: %s", ns, name, exc)
            return
        if old.get("phase") != new["phase"]:
            log.info("%s/%s: phase %s -> %s", ns, name, old.get("phase"), new["phase"])
        st.written = updated.get("status", new)
        events = [
            (t.event_type, t.reason, f"{t.type}: {t.message}")
            for t in status.transitions(old.get("conditions") or [], new["conditions"])
        ]
        for kind, reason, message in events:
            with contextlib.suppress(LookupError):  # no running operator (unit tests)
                kopf.event(
                    kopf.Body(body),  # type: ignore[arg-type]
                    type=kind,
                    reason=reason,
                    message=message,
                )

    def observe(self, body: dict[str, Any]) -> None:
        """Remember the latest body of a cluster (its status is what we compare against)."""
        meta = body["metadata"]
        st = self.state(meta["namespace"], meta["name"])
        st.body = body
