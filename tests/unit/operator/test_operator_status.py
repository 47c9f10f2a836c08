"""Status contract: conditions, reasons, phase, transitions (events)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from plantd_operator import status
from plantd_operator.context import ClusterContext
from plantd_operator.status import Observation, Problem, Workload

pytestmark = pytest.mark.unit
Factory = Callable[..., ClusterContext]
T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z"


def wl(desired: int = 1, ready: int = 1, updated: int | None = None, gen: int = 1) -> Workload:
    return Workload(
        kind="Deployment",
        desired=desired,
        ready=ready,
        updated=desired if updated is None else updated,
        total=desired,
        generation=gen,
        observed_generation=gen,
    )


def all_ready() -> dict[str, Workload]:
    return {c: wl() for c in ("broker", "state", "identity", "redis")}


def conds(ctx: ClusterContext, obs: Observation) -> dict[str, dict[str, str]]:
    return {c["type"]: c for c in status.conditions(ctx, obs)}


def test_ready_when_everything_is_ready(ctx_factory: Factory) -> None:
    c = conds(ctx_factory(), Observation(1, 1, False, workloads=all_ready()))
    assert c["Ready"]["status"] == "True" and c["Ready"]["reason"] == "AllComponentsReady"
    assert c["Reconciling"]["status"] == "False" and c["Degraded"]["status"] == "False"
    for t in ("BrokerReady", "StateReady", "IdentityReady", "StateStoreReady"):
        assert c[t]["status"] == "True", t


def test_not_ready_names_the_component(ctx_factory: Factory) -> None:
    w = all_ready() | {"broker": wl(desired=2, ready=1)}
    c = conds(ctx_factory(), Observation(1, 1, False, workloads=w))
    assert c["Ready"]["status"] == "False"
    assert "BrokerReady" in c["Ready"]["message"]
    assert c["BrokerReady"]["reason"] == "ReplicasNotReady"
    assert c["Degraded"]["status"] == "True" and c["Degraded"]["reason"] == "ReplicasMissing"


def test_rollout_in_progress_is_reconciling(ctx_factory: Factory) -> None:
    w = all_ready() | {"state": wl(desired=1, ready=1, updated=0)}
    c = conds(ctx_factory(), Observation(2, 2, False, workloads=w))
    assert c["StateReady"]["reason"] == "RollingOut"
    assert c["Reconciling"]["status"] == "True"


def test_unapplied_generation_is_not_ready(ctx_factory: Factory) -> None:
    c = conds(ctx_factory(), Observation(3, 2, False, workloads=all_ready()))
    assert c["Ready"]["status"] == "False" and c["Ready"]["reason"] == "Reconciling"


def test_blocking_problem_tells_the_user_what_to_fix(ctx_factory: Factory) -> None:
    p = Problem("RedisSecretNotFound", "Secret 'x' ... create it with key 'password'")
    ctx = ctx_factory({"state": {"redis": {"mode": "external", "external": {"address": "r:6379"}}}})
    obs = Observation(1, 1, False, problems=(p,), workloads=all_ready())
    c = conds(ctx, obs)
    assert c["Ready"]["status"] == "False" and c["Ready"]["reason"] == "RedisSecretNotFound"
    assert "create it" in c["Ready"]["message"]
    assert c["StateStoreReady"]["reason"] == "RedisSecretNotFound"
    assert status.phase(status.conditions(ctx, obs), obs) == "Failed"


def test_non_blocking_problem_degrades_but_stays_ready(ctx_factory: Factory) -> None:
    p = Problem("ServiceMonitorCRDMissing", "install the CRDs", blocking=False)
    obs = Observation(1, 1, False, problems=(p,), workloads=all_ready())
    c = conds(ctx_factory(), obs)
    assert c["Ready"]["status"] == "True" and c["Degraded"]["reason"] == "ServiceMonitorCRDMissing"
    assert status.phase(status.conditions(ctx_factory(), obs), obs) == "Degraded"


def test_paused_says_so(ctx_factory: Factory) -> None:
    obs = Observation(2, 1, True, paused_by="spec.paused", workloads=all_ready())
    c = conds(ctx_factory(), obs)
    assert c["Paused"]["status"] == "True" and "spec.paused" in c["Paused"]["message"]
    assert c["Reconciling"]["reason"] == "Paused"
    assert status.phase(status.conditions(ctx_factory(), obs), obs) == "Paused"


def test_phases(ctx_factory: Factory) -> None:
    ctx = ctx_factory()
    empty = Observation(1, 1, False)
    assert status.phase(status.conditions(ctx, empty), empty) == "Pending"
    ready = Observation(1, 1, False, workloads=all_ready())
    assert status.phase(status.conditions(ctx, ready), ready) == "Ready"


def test_transition_time_kept_until_status_flips(ctx_factory: Factory) -> None:
    ctx = ctx_factory()
    first = status.build(ctx, Observation(1, 1, False), {}, T0)
    again = status.build(ctx, Observation(1, 1, False), first, T1)
    assert status.same(first, again), "no change means no status write"
    flipped = status.build(ctx, Observation(1, 1, False, workloads=all_ready()), first, T1)
    by = {c["type"]: c for c in flipped["conditions"]}
    assert by["Ready"]["lastTransitionTime"] == T1
    assert by["Paused"]["lastTransitionTime"] == T0
    assert flipped["observedGeneration"] == 1 and flipped["brokerReplicas"] == "1/1"
    assert flipped["endpoints"]["broker"] == "tcp://demo-broker.plant.svc:9797"


def test_transitions_become_events_with_the_right_type(ctx_factory: Factory) -> None:
    ctx = ctx_factory()
    first = status.build(ctx, Observation(1, 1, False), {}, T0)["conditions"]
    ready = status.build(ctx, Observation(1, 1, False, workloads=all_ready()), {}, T1)["conditions"]
    ts = {t.type: t for t in status.transitions(first, ready)}
    assert ts["Ready"].event_type == "Normal" and ts["Ready"].status == "True"
    back = status.transitions(ready, first)
    assert {t.type: t.event_type for t in back}["Ready"] == "Warning"
    assert status.transitions(ready, ready) == []


def test_workload_from_deployment_and_statefulset() -> None:
    dep: dict[str, Any] = {
        "kind": "Deployment",
        "metadata": {"generation": 3},
        "spec": {"replicas": 2},
        "status": {
            "observedGeneration": 3,
            "replicas": 2,
            "readyReplicas": 2,
            "updatedReplicas": 2,
        },
    }
    assert status.workload_from(dep).healthy
    dep["status"]["observedGeneration"] = 2
    assert not status.workload_from(dep).healthy
    sts = {
        "kind": "StatefulSet",
        "metadata": {"generation": 1},
        "spec": {"replicas": 1},
        "status": {
            "observedGeneration": 1,
            "replicas": 1,
            "readyReplicas": 1,
            "currentReplicas": 1,
            "currentRevision": "a",
            "updateRevision": "a",
        },
    }
    assert status.workload_from(sts).healthy
