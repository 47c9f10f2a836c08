"""Operator restarts without redoing or losing work; two replicas never both act."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from k8skit import OperatorProcess, TestEnv, condition, delete_clusters, pdc, wait_for

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(600)]
EXTERNAL = {"state": {"redis": {"mode": "external", "external": {"address": "r.example:6379"}}}}


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
    testenv: TestEnv, namespace: str, operator_kubeconfig: Path, workdir: Path
) -> None:
    ns = namespace
    op = OperatorProcess(operator_kubeconfig, ns, workdir / "a.log", drift_interval=300)
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
        '{"spec":{"identity":{"replicas":2}}}',
    )
    op = OperatorProcess(operator_kubeconfig, ns, workdir / "b.log", drift_interval=300)
    try:
        op.wait_ready()
        # ...is applied after the restart (not lost),
        wait_for(
            lambda: testenv.get("deployment", "keep-identity", ns)["spec"]["replicas"] == 2,  # type: ignore[index]
            "identity scaled after restart",
        )
        wait_for(lambda: is_ready(testenv, ns, "keep"), "keep Ready again")
        after = versions(testenv, ns, "keep")
        # ...and nothing else was rewritten (server-side apply of unchanged objects is a no-op).
        changed = {k for k in before if before[k] != after.get(k)}
        assert changed == {"deployments/keep-identity"}, changed
        secret_after = testenv.get("secret", "keep-curve", ns)
        assert secret_before is not None and secret_after is not None
        assert secret_after["data"] == secret_before["data"], "generated keys must be kept"
        delete_clusters(testenv, ns)
    finally:
        op.stop()


@pytest.fixture
def peering(testenv: TestEnv, namespace: str) -> Iterator[str]:
    name = "plantd-ha"
    testenv.apply(
        {
            "apiVersion": "kopf.dev/v1",
            "kind": "KopfPeering",
            "metadata": {"name": name, "namespace": namespace},
        }
    )
    yield name


def test_two_replicas_never_both_act_and_the_standby_takes_over(
    testenv: TestEnv, namespace: str, operator_kubeconfig: Path, workdir: Path, peering: str
) -> None:
    ns = namespace

    def peers() -> int:
        return len((testenv.get("kopfpeering", peering, ns) or {}).get("status") or {})

    # The active replica is up and announced before the standby starts, as in a rollout.
    # (kopf's peering has a window at a *simultaneous* start: see docs/operator.md.)
    high = OperatorProcess(
        operator_kubeconfig,
        ns,
        workdir / "high.log",
        peering=peering,
        priority=200,
        peering_lifetime=8,
    )
    low: OperatorProcess | None = None
    try:
        high.wait_ready()
        wait_for(lambda: peers() == 1, "the first replica in the KopfPeering")
        low = OperatorProcess(
            operator_kubeconfig,
            ns,
            workdir / "low.log",
            peering=peering,
            priority=100,
            peering_lifetime=8,
        )
        low.wait_ready()
        # Both announce themselves in the peering object.
        wait_for(lambda: peers() == 2, "two peers in the KopfPeering")
        testenv.apply(pdc("ha1", EXTERNAL, namespace=ns))
        wait_for(lambda: is_ready(testenv, ns, "ha1"), "ha1 Ready")
        testenv.kubectl(
            "patch",
            "pdc",
            "ha1",
            "-n",
            ns,
            "--type=merge",
            "-p",
            '{"spec":{"broker":{"replicas":2}}}',
        )
        wait_for(lambda: is_ready(testenv, ns, "ha1"), "ha1 Ready after scaling")
        assert high.metric("plantd_operator_reconciliations_total") >= 2
        assert low.metric("plantd_operator_reconciliations_total") == 0, "standby acted"
        assert low.metric("plantd_operator_children_applied_total") == 0
        # Kill the active replica hard: no goodbye in the peering object.
        high.stop(signal.SIGKILL)
        testenv.apply(pdc("ha2", EXTERNAL, namespace=ns))
        wait_for(lambda: is_ready(testenv, ns, "ha2"), "ha2 Ready via the standby", timeout=60)
        assert low.metric("plantd_operator_reconciliations_total") >= 1
        peers = (testenv.get("kopfpeering", peering, ns) or {}).get("status") or {}
        assert json.dumps(peers).count("priority") >= 1
        delete_clusters(testenv, ns)
    finally:
        high.stop()
        if low is not None:
            low.stop()
