"""Operator restarts without redoing or losing work; of two replicas exactly one acts (Lease
leader election), a killed leader is replaced within the lease duration, a leader that loses
its Lease stops at once; deleting a cluster does not depend on the operator."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from k8skit import (
    FAST_ELECTION,
    Lease,
    OperatorProcess,
    TestEnv,
    condition,
    delete_clusters,
    pdc,
    wait_for,
)

from plantd_operator.leader import EXIT_LEASE_LOST

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(600)]
# External Redis over TLS: the operator refuses plaintext without allowPlaintext.
EXTERNAL = {
    "state": {
        "redis": {
            "mode": "external",
            "external": {"address": "r.example:6379", "tls": {"enabled": True}},
        }
    }
}


def is_ready(env: TestEnv, ns: str, name: str) -> bool:
    obj = env.get("pdc", name, ns)
    c = condition(obj, "Ready")
    return bool(
        c
        and c["status"] == "True"
        and obj["status"].get("observedGeneration") == obj["metadata"]["generation"]  # type: ignore[index]
    )


def versions(env: TestEnv, ns: str, cluster: str) -> dict[str, str]:
    out = {}
    for kind in (
        "deployments",
        "services",
        "configmaps",
        "serviceaccounts",
        "secrets",
        "poddisruptionbudgets",
    ):
        for item in env.list(kind, ns, f"plantd.io/cluster={cluster}"):
            # generation moves only on spec writes (status updates by controllers do not count)
            meta = item["metadata"]
            out[f"{kind}/{meta['name']}"] = str(meta.get("generation") or meta["resourceVersion"])
    return out


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def test_restart_neither_redoes_nor_loses_work(
    testenv: TestEnv, namespace: str, operator_kubeconfig: Path, lease: Lease, workdir: Path
) -> None:
    ns = namespace
    op = OperatorProcess(
        operator_kubeconfig, ns, workdir / "a.log", lease=lease, drift_interval=300
    )
    try:
        op.wait_ready()
        testenv.apply(pdc("keep", EXTERNAL, namespace=ns))
        wait_for(lambda: is_ready(testenv, ns, "keep"), "keep Ready")
        secret_before = testenv.get("secret", "keep-curve", ns)
    finally:
        op.stop()
    before = versions(testenv, ns, "keep")
    # A change made while no operator runs...
    testenv.kubectl(
        "patch",
        "pdc",
        "keep",
        "-n",
        ns,
        "--type=merge",
        "-p",
        '{"spec":{"state":{"replicas":2}}}',
    )
    op = OperatorProcess(
        operator_kubeconfig, ns, workdir / "b.log", lease=lease, drift_interval=300
    )
    try:
        op.wait_ready()
        # ...is applied after the restart (not lost),
        wait_for(
            lambda: testenv.get("deployment", "keep-state", ns)["spec"]["replicas"] == 2,  # type: ignore[index]
            "state scaled after restart",
        )
        wait_for(lambda: is_ready(testenv, ns, "keep"), "keep Ready again")
        after = versions(testenv, ns, "keep")
        # ...and nothing else was rewritten (server-side apply of unchanged objects is a no-op).
        changed = {k for k in before if before[k] != after.get(k)}
        assert changed == {"deployments/keep-state"}, changed
        secret_after = testenv.get("secret", "keep-curve", ns)
        assert secret_before is not None and secret_after is not None
        assert secret_after["data"] == secret_before["data"], "generated keys must be kept"
        delete_clusters(testenv, ns)
    finally:
        op.stop()


def lease_spec(env: TestEnv, lease: Lease) -> dict[str, Any]:
    obj = env.get("lease", lease.name, lease.namespace)
    return dict((obj or {}).get("spec") or {})


def reconciles(op: OperatorProcess) -> list[str]:
    """Every reconcile an operator started, from its log (one line each)."""
    return [line for line in op.log().splitlines() if "reconciling " in line]


def wait_gone(op: OperatorProcess, timeout: float) -> int:
    wait_for(lambda: op.proc.poll() is not None, "the operator to exit", timeout)
    return int(op.proc.returncode)


@pytest.fixture
def fresh_lease(testenv: TestEnv, lease: Lease) -> Iterator[Lease]:
    """The chart's Lease, free (deleted) before and after: these tests kill holders."""
    testenv.kubectl("delete", "lease", lease.name, "-n", lease.namespace, check=False)
    yield lease
    testenv.kubectl("delete", "lease", lease.name, "-n", lease.namespace, check=False)


def test_two_replicas_started_together_exactly_one_acts_and_the_standby_takes_over(
    testenv: TestEnv,
    namespace: str,
    operator_kubeconfig: Path,
    workdir: Path,
    fresh_lease: Lease,
) -> None:
    ns = namespace
    duration, _, retry = FAST_ELECTION
    # A cluster exists before any operator runs: every replica that acts reconciles it at
    # start (kopf's resume), so a replica that acts when it should not shows in its log.
    testenv.apply(pdc("ha0", EXTERNAL, namespace=ns))
    ops = [
        OperatorProcess(
            operator_kubeconfig,
            ns,
            workdir / f"{who}.log",
            lease=fresh_lease,
            identity=who,
            election=FAST_ELECTION,
        )
        for who in ("replica-a", "replica-b")
    ]
    try:
        wait_for(
            lambda: sorted(op.role() for op in ops) == ["leader", "standby"],
            "one leader and one standby",
        )
        leader = next(op for op in ops if op.role() == "leader")
        standby = next(op for op in ops if op is not leader)
        assert lease_spec(testenv, fresh_lease)["holderIdentity"] == leader.identity
        wait_for(lambda: is_ready(testenv, ns, "ha0"), "ha0 Ready")
        testenv.kubectl(
            "patch",
            "pdc",
            "ha0",
            "-n",
            ns,
            "--type=merge",
            "-p",
            '{"spec":{"broker":{"replicas":2}}}',
        )
        wait_for(lambda: is_ready(testenv, ns, "ha0"), "ha0 Ready after scaling")
        assert len(reconciles(leader)) >= 2
        assert leader.metric("plantd_operator_leader") == 1
        # The standby never acted: no reconcile, no apply, not even a kopf start.
        assert reconciles(standby) == [], "the standby reconciled"
        assert standby.metric("plantd_operator_reconciliations_total") == 0
        assert standby.metric("plantd_operator_children_applied_total") == 0
        assert standby.metric("plantd_operator_leader") == 0
        transitions = int(lease_spec(testenv, fresh_lease).get("leaseTransitions") or 0)

        # Kill the leader hard: no goodbye, the Lease stays held until it expires.
        leader.stop(signal.SIGKILL)
        killed = time.monotonic()
        wait_for(
            lambda: standby.metric("plantd_operator_leader") == 1,
            "the standby to take the Lease",
            timeout=30,
            interval=0.1,
        )
        took = time.monotonic() - killed
        # It waits out the lease (it cannot tell a dead leader from a slow one) and no more
        # than one retry period past it (plus slack for this loaded machine).
        assert took <= duration + retry + 2.0, f"takeover took {took:.1f}s"
        spec = lease_spec(testenv, fresh_lease)
        assert spec["holderIdentity"] == standby.identity
        standby.wait_ready("leader")
        assert int(spec["leaseTransitions"]) == transitions + 1
        # It resumes the existing cluster, and its first reconcile came after it led.
        wait_for(lambda: reconciles(standby), "the new leader to reconcile ha0")
        log = standby.log()
        assert log.index("became the leader") < log.index("reconciling ")
        testenv.apply(pdc("ha1", EXTERNAL, namespace=ns))
        wait_for(lambda: is_ready(testenv, ns, "ha1"), "ha1 Ready via the new leader")
        delete_clusters(testenv, ns)
        # A graceful stop hands the Lease over at once (no holder, 1 s).
        standby.stop()
        assert standby.proc.returncode == 0
        assert lease_spec(testenv, fresh_lease).get("holderIdentity") in (None, "")
    finally:
        for op in ops:
            op.stop()


def test_a_leader_that_loses_its_lease_stops_acting_at_once(
    testenv: TestEnv,
    namespace: str,
    operator_kubeconfig: Path,
    workdir: Path,
    fresh_lease: Lease,
) -> None:
    _, _, retry = FAST_ELECTION
    op = OperatorProcess(
        operator_kubeconfig,
        namespace,
        workdir / "loser.log",
        lease=fresh_lease,
        identity="loser",
        election=FAST_ELECTION,
    )
    try:
        op.wait_ready("leader")
        # Someone else takes the Lease (as a replica would after a network partition). A merge
        # patch carries no resourceVersion, so the leader's renewals cannot make it conflict.
        testenv.kubectl(
            "patch",
            "lease",
            fresh_lease.name,
            "-n",
            fresh_lease.namespace,
            "--type=merge",
            "-p",
            json.dumps({"spec": {"holderIdentity": "intruder", "leaseDurationSeconds": 3600}}),
        )
        taken = time.monotonic()
        # At its next renewal it sees the conflict and exits with the documented status,
        # instead of acting on until the renew deadline.
        assert wait_gone(op, timeout=retry * 3 + 5) == EXIT_LEASE_LOST
        assert time.monotonic() - taken <= retry * 2 + 3
        assert "lost the Lease" in op.log()
    finally:
        op.stop()


def test_deleting_a_cluster_needs_no_running_operator(
    testenv: TestEnv, namespace: str, operator_kubeconfig: Path, lease: Lease, workdir: Path
) -> None:
    ns = namespace
    op = OperatorProcess(operator_kubeconfig, ns, workdir / "del.log", lease=lease)
    try:
        op.wait_ready()
        # As left by an operator version that used kopf's finalizer: the upgrade removes it.
        testenv.apply(pdc("orphan", EXTERNAL, namespace=ns, finalizers=["plantd.io/finalizer"]))
        wait_for(lambda: is_ready(testenv, ns, "orphan"), "orphan Ready")
        wait_for(
            lambda: not (testenv.get("pdc", "orphan", ns) or {})["metadata"].get("finalizers"),
            "the legacy finalizer removed",
        )
    finally:
        op.stop()
    # No finalizer: with the operator gone, deletion still completes and the garbage
    # collector removes the children.
    testenv.kubectl("delete", "pdc", "orphan", "-n", ns, "--timeout=30s")
    wait_for(
        lambda: not testenv.list("deployments", ns, "plantd.io/cluster=orphan"),
        "orphan's Deployments garbage-collected",
    )


def test_cluster_wide_watch_works_with_the_charts_cluster_role(
    testenv: TestEnv, namespace: str, operator_kubeconfig: Path, lease: Lease, workdir: Path
) -> None:
    """The chart's default: no --namespace, a ClusterRole (the other tests watch one)."""
    op = OperatorProcess(operator_kubeconfig, None, workdir / "wide.log", lease=lease)
    try:
        op.wait_ready()
        testenv.apply(pdc("wide", EXTERNAL, namespace=namespace))
        wait_for(lambda: is_ready(testenv, namespace, "wide"), "wide Ready")
        assert "all namespaces" in op.log()
        assert "Forbidden" not in op.log()
    finally:
        op.stop()
