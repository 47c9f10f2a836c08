"""Pure status logic: observed children + reconcile outcome -> status, conditions, events.

The status contract (docs/operator.md): ``observedGeneration``, ``phase``, and the conditions
Ready, Reconciling, Degraded, Paused, BrokerReady, StateReady, StateStoreReady, IdentityReady,
each with a CamelCase reason and a message that tells the user what to do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from plantd_operator import naming
from plantd_operator.context import ClusterContext
from plantd_operator.sentinel import SentinelView, pod_of

READY = "Ready"
RECONCILING = "Reconciling"
DEGRADED = "Degraded"
PAUSED = "Paused"
COMPONENT_CONDITIONS = {
    naming.BROKER: "BrokerReady",
    naming.STATE: "StateReady",
    naming.IDENTITY: "IdentityReady",
}
STORE = "StateStoreReady"
ORDER = [READY, RECONCILING, DEGRADED, PAUSED, *COMPONENT_CONDITIONS.values(), STORE]
# For these, True is the healthy value (events are Normal); for the rest, False is.
POSITIVE = {READY, STORE, *COMPONENT_CONDITIONS.values()}


@dataclass(frozen=True)
class Workload:
    """What a Deployment or StatefulSet reports."""

    kind: str
    desired: int
    ready: int
    updated: int
    total: int
    generation: int
    observed_generation: int

    @property
    def rolled_out(self) -> bool:
        return (
            self.observed_generation >= self.generation
            and self.updated >= self.desired
            and self.total <= self.desired
        )

    @property
    def healthy(self) -> bool:
        return self.rolled_out and self.ready >= self.desired


def workload_from(obj: dict[str, Any]) -> Workload:
    spec, st, meta = obj.get("spec") or {}, obj.get("status") or {}, obj.get("metadata") or {}
    kind = obj.get("kind", "Deployment")
    desired = int(spec.get("replicas", 1))
    updated = int(st.get("updatedReplicas") or 0)
    if (
        kind == "StatefulSet"
        and st.get("updateRevision")
        and (st.get("updateRevision") == st.get("currentRevision"))
    ):
        updated = max(updated, int(st.get("currentReplicas") or 0))
    return Workload(
        kind=kind,
        desired=desired,
        ready=int(st.get("readyReplicas") or 0),
        updated=updated,
        total=int(st.get("replicas") or 0),
        generation=int(meta.get("generation") or 0),
        observed_generation=int(st.get("observedGeneration") or 0),
    )


@dataclass(frozen=True)
class Problem:
    """Something that stops the spec from being honoured (blocking) or weakens it (not)."""

    reason: str
    message: str
    blocking: bool = True


@dataclass(frozen=True)
class Observation:
    generation: int
    applied_generation: int | None
    paused: bool
    paused_by: str = ""
    problems: tuple[Problem, ...] = ()
    workloads: dict[str, Workload] = field(default_factory=dict)
    sentinel: SentinelView | None = None  # a replicated managed Redis's Sentinels' account


def _cond(kind: str, ok: bool, reason: str, message: str) -> dict[str, str]:
    return {"type": kind, "status": "True" if ok else "False", "reason": reason, "message": message}


def _component(name: str, want: int, w: Workload | None) -> dict[str, str]:
    kind = COMPONENT_CONDITIONS[name]
    if w is None:
        return _cond(kind, False, "Creating", f"waiting for the {name} Deployment to appear")
    if w.healthy:
        return _cond(kind, True, "AllReplicasReady", f"{w.ready}/{w.desired} pods ready")
    if not w.rolled_out:
        return _cond(
            kind,
            False,
            "RollingOut",
            f"{w.updated}/{w.desired} pods updated, {w.ready} ready; the rollout is in progress",
        )
    reason = "NoReplicasReady" if w.ready == 0 else "ReplicasNotReady"
    return _cond(
        kind,
        False,
        reason,
        f"{w.ready}/{w.desired} pods ready; see `kubectl describe pods -l "
        f"app.kubernetes.io/component={name}` for why",
    )


def _store(ctx: ClusterContext, obs: Observation) -> dict[str, str]:
    store_problems = [p for p in obs.problems if p.reason.startswith("Redis")]
    if store_problems:
        p = store_problems[0]
        return _cond(STORE, False, p.reason, p.message)
    redis = ctx.spec.state.redis
    if redis.mode == "external":
        return _cond(
            STORE,
            True,
            "ExternalConfigured",
            f"state service wired to external Redis {ctx.redis_address}; reachability shows "
            "in StateReady (the state pods' /readyz)",
        )
    w = obs.workloads.get(naming.REDIS)
    if w is None:
        return _cond(STORE, False, "Creating", "waiting for the Redis StatefulSet to appear")
    if ctx.managed_sentinel:
        return _sentinel_store(ctx, w, obs.sentinel)
    if w.ready >= 1 and w.rolled_out:
        return _cond(STORE, True, "RedisReady", f"managed Redis ready at {ctx.redis_address}")
    return _cond(
        STORE,
        False,
        "RedisNotReady",
        "managed Redis pod not ready; check its PersistentVolumeClaim is Bound "
        f"(`kubectl get pvc -l app.kubernetes.io/instance={ctx.name}`)",
    )


def _sentinel_store(ctx: ClusterContext, w: Workload, view: SentinelView | None) -> dict[str, str]:
    """A primary with replicas: ready when the Sentinels name a primary that is up."""
    pods_hint = (
        f"see `kubectl logs -n {ctx.namespace} -l app.kubernetes.io/instance={ctx.name},"
        "app.kubernetes.io/component=redis -c sentinel`"
    )
    if view is None:
        return _cond(STORE, False, "SentinelUnknown", "waiting for the first Sentinel probe")
    if view.error is not None:
        return _cond(
            STORE,
            False,
            "SentinelUnreachable",
            f"no Sentinel answered the operator ({view.error}); {w.ready}/{w.desired} Redis "
            f"pods ready; {pods_hint}",
        )
    if view.failing_over or view.down or view.primary is None:
        return _cond(
            STORE,
            False,
            "FailingOver",
            f"the Sentinels judge the primary {pod_of(view.primary)} down and are promoting "
            "a replica; writes fail with STORE_UNAVAILABLE until it is done",
        )
    message = (
        f"primary {pod_of(view.primary)}, {view.replicas_in_sync}/{w.desired - 1} replicas in "
        f"sync, {view.sentinels}/{w.desired} Sentinels"
    )
    if view.sentinels < view.quorum:
        return _cond(STORE, False, "NoQuorum", f"{message}: a failover needs {view.quorum}")
    return _cond(STORE, True, "SentinelReady", message)


def store_status(view: SentinelView | None, old: dict[str, Any], now: str) -> dict[str, Any]:
    """``status.store``: the Sentinels' account; a new primary is recorded as a failover."""
    out: dict[str, Any] = {k: v for k, v in old.items() if k == "lastFailover"}
    if view is None or view.error is not None:
        out.update({k: old[k] for k in ("primary", "replicasInSync", "sentinels") if k in old})
        return out
    primary = pod_of(view.primary)
    before = old.get("primary")
    if primary and before and primary != before:
        out["lastFailover"] = {"from": before, "to": primary, "time": now}
    out.update(
        {
            "primary": primary or before,
            "replicasInSync": view.replicas_in_sync,
            "sentinels": view.sentinels,
        }
    )
    return {k: v for k, v in out.items() if v is not None}


def conditions(ctx: ClusterContext, obs: Observation) -> list[dict[str, str]]:
    """The conditions, without timestamps (see :func:`merge_conditions`)."""
    spec = ctx.spec
    wants = {
        naming.BROKER: spec.broker.replicas,
        naming.STATE: spec.state.replicas,
        naming.IDENTITY: ctx.identity_replicas,
    }
    comps = [_component(c, n, obs.workloads.get(c)) for c, n in wants.items()]
    store = _store(ctx, obs)
    parts = [*comps, store]
    blocking = [p for p in obs.problems if p.blocking]
    warnings = [p for p in obs.problems if not p.blocking]
    pending = obs.applied_generation != obs.generation
    not_ready = [c for c in parts if c["status"] != "True"]

    if blocking:
        p = blocking[0]
        more = f" (and {len(blocking) - 1} more problem(s))" if len(blocking) > 1 else ""
        ready = _cond(READY, False, p.reason, p.message + more)
    elif pending and not obs.paused:
        ready = _cond(READY, False, "Reconciling", f"applying generation {obs.generation}")
    elif not_ready:
        summary = "; ".join(f"{c['type']}: {c['message']}" for c in not_ready)
        ready = _cond(READY, False, not_ready[0]["reason"], summary)
    else:
        ready = _cond(READY, True, "AllComponentsReady", "broker, state, identity and store ready")

    rolling = [c for c in comps if c["reason"] in ("RollingOut", "Creating")]
    if obs.paused:
        reconciling = _cond(
            RECONCILING,
            False,
            "Paused",
            f"reconciliation paused by {obs.paused_by}; children are left as they are",
        )
    elif blocking:
        reconciling = _cond(RECONCILING, False, "Failed", "blocked: see the Ready condition")
    elif pending or rolling:
        what = ", ".join(c["type"] for c in rolling) or f"generation {obs.generation}"
        reconciling = _cond(RECONCILING, True, "Progressing", f"in progress: {what}")
    else:
        reconciling = _cond(RECONCILING, False, "Reconciled", "children match the spec")

    partial = [
        c
        for c, w in ((c, obs.workloads.get(c)) for c in wants)
        if w is not None and w.rolled_out and 0 < w.ready < w.desired
    ]
    if blocking or warnings:
        p = (blocking or warnings)[0]
        degraded = _cond(DEGRADED, True, p.reason, p.message)
    elif partial:
        degraded = _cond(
            DEGRADED,
            True,
            "ReplicasMissing",
            f"running below desired replicas: {', '.join(partial)}",
        )
    else:
        degraded = _cond(DEGRADED, False, "AsExpected", "nothing is degraded")

    if obs.paused:
        paused = _cond(PAUSED, True, "PausedByUser", f"{obs.paused_by} is set; remove it to resume")
    else:
        paused = _cond(PAUSED, False, "NotPaused", "the operator applies changes")
    return [ready, reconciling, degraded, paused, *comps, store]


def merge_conditions(
    old: list[dict[str, Any]], new: list[dict[str, str]], now: str, generation: int
) -> list[dict[str, Any]]:
    """Keep lastTransitionTime unless a condition's status flipped."""
    before = {c.get("type"): c for c in old}
    out: list[dict[str, Any]] = []
    for c in new:
        prev = before.get(c["type"])
        when = prev["lastTransitionTime"] if prev and prev.get("status") == c["status"] else now
        out.append({**c, "lastTransitionTime": when, "observedGeneration": generation})
    return out


def phase(conds: list[dict[str, Any]], obs: Observation) -> str:
    by = {c["type"]: c for c in conds}
    if obs.paused:
        return "Paused"
    if any(p.blocking for p in obs.problems):
        return "Failed"
    if by[READY]["status"] == "True":
        return "Degraded" if by[DEGRADED]["status"] == "True" else "Ready"
    if not any(w.ready for w in obs.workloads.values()):
        return "Pending"
    if by[DEGRADED]["status"] == "True":
        return "Degraded"
    return "Progressing"


def _counts(want: int, w: Workload | None) -> dict[str, Any]:
    ready = w.ready if w else 0
    desired = w.desired if w else want
    return {"ready": ready, "desired": desired, "replicas": f"{ready}/{desired}"}


def build(ctx: ClusterContext, obs: Observation, old: dict[str, Any], now: str) -> dict[str, Any]:
    """The whole status stanza."""
    conds = merge_conditions(old.get("conditions") or [], conditions(ctx, obs), now, obs.generation)
    comps = {
        naming.BROKER: _counts(ctx.spec.broker.replicas, obs.workloads.get(naming.BROKER)),
        naming.STATE: _counts(ctx.spec.state.replicas, obs.workloads.get(naming.STATE)),
        naming.IDENTITY: _counts(ctx.identity_replicas, obs.workloads.get(naming.IDENTITY)),
    }
    if ctx.spec.state.redis.mode == "managed":
        comps[naming.REDIS] = _counts(ctx.redis_replicas, obs.workloads.get(naming.REDIS))
    endpoints: dict[str, Any] = {
        "broker": ctx.broker_endpoint,
        "buses": {
            bus: f"{ctx.bus_endpoint(bus, 'pub')},{ctx.bus_endpoint(bus, 'sub')}"
            for bus in ("state", "event", "metric")
        },
        "redis": ctx.redis_address,
    }
    if ctx.gateway_rendered:
        port = ctx.spec.sidecars.grpc.port
        endpoints["stateGrpc"] = f"{ctx.host(naming.STATE)}:{port}"
        endpoints["identityGrpc"] = f"{ctx.host(naming.IDENTITY)}:{port}"
        grpc = ctx.spec.sidecars.grpc
        if grpc.rest:
            endpoints["rest"] = f"http://{ctx.host(naming.STATE)}:{grpc.rest_port}"
        if grpc.edge.enabled:
            endpoints["edge"] = f"{ctx.host(naming.EDGE)}:{port}"
    applied = obs.applied_generation
    if applied is None:
        applied = old.get("observedGeneration")
    out: dict[str, Any] = {
        "phase": phase(conds, obs),
        "version": ctx.version,
        "conditions": conds,
        "components": comps,
        "brokerReplicas": comps[naming.BROKER]["replicas"],
        "endpoints": endpoints,
    }
    if applied is not None:
        out["observedGeneration"] = applied
    if ctx.managed_sentinel:
        out["store"] = store_status(obs.sentinel, old.get("store") or {}, now)
    return out


@dataclass(frozen=True)
class Transition:
    type: str
    status: str
    reason: str
    message: str

    @property
    def event_type(self) -> str:
        good = (self.status == "True") == (self.type in POSITIVE)
        return "Normal" if good else "Warning"


def transitions(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[Transition]:
    """Conditions whose status or reason changed: one Kubernetes Event each."""
    before = {c.get("type"): c for c in old}
    out = []
    for c in new:
        prev = before.get(c["type"])
        if prev is None or prev.get("status") != c["status"] or prev.get("reason") != c["reason"]:
            if prev is None and c["type"] in (PAUSED,) and c["status"] == "False":
                continue  # "not paused" on creation is not news
            out.append(Transition(c["type"], c["status"], c["reason"], c["message"]))
    return out


def same(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """True when writing ``new`` would change nothing (so no API call is needed)."""
    return {k: old.get(k) for k in new} == new
