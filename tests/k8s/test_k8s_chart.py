"""The Helm chart: lint, schema-checked values, kubeconform, and the installed release."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from k8skit import CHART, ROOT, TestEnv

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(600)]


def test_helm_lint(testenv: TestEnv) -> None:
    out = testenv.run("helm", "lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in out.stdout


def test_values_schema_rejects_bad_values(testenv: TestEnv) -> None:
    bad = testenv.run("helm", "template", "x", str(CHART), "--set", "replicaCount=0", check=False)
    assert bad.returncode != 0 and "replicaCount" in bad.stderr
    unknown = testenv.run("helm", "template", "x", str(CHART), "--set", "nope=1", check=False)
    assert unknown.returncode != 0 and "nope" in unknown.stderr
    no_election = testenv.run(
        "helm", "template", "x", str(CHART), "--set", "leaderElection.enabled=false", check=False
    )
    assert no_election.returncode != 0 and "needs leaderElection.enabled" in no_election.stderr
    unsafe = testenv.run(
        "helm",
        "template",
        "x",
        str(CHART),
        "--set",
        "leaderElection.renewDeadline=20",
        check=False,
    )
    assert unsafe.returncode != 0 and "must exceed leaderElection.renewDeadline" in unsafe.stderr
    single = testenv.run(
        "helm",
        "template",
        "x",
        str(CHART),
        "--set",
        "replicaCount=1",
        "--set",
        "leaderElection.enabled=false",
    ).stdout
    assert "--no-leader-elect" in single and "type: Recreate" in single
    no_credentials = testenv.run(
        "helm", "template", "x", str(CHART), "--set", "tests.plantdCluster=plant", check=False
    )
    assert no_credentials.returncode != 0
    assert "needs tests.credentialsSecret.name" in no_credentials.stderr


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["--set", "watchNamespaces={a,b}"],
        # The PlantdCluster round-trip test pod (helm test) renders restricted and valid.
        ["--set", "tests.plantdCluster=plant", "--set", "tests.credentialsSecret.name=admin"],
        [
            "--set",
            "tests.plantdCluster=plant",
            "--set",
            "tests.credentialsSecret.name=admin",
            "--set",
            "tests.echoService=org.plantd.module.Echo",
        ],
    ],
)
def test_rendered_chart_passes_kubeconform_and_server_dry_run(
    testenv: TestEnv, tmp_path: Path, extra: list[str]
) -> None:
    rendered = testenv.run(
        "helm",
        "template",
        "pdo",
        str(CHART),
        "--namespace",
        "default",
        "--include-crds",
        *extra,
    ).stdout
    schemas = os.environ.get("PLANTD_KUBECONFORM_SCHEMAS") or testenv.env.get(
        "PLANTD_KUBECONFORM_SCHEMAS"
    )
    args = ["-strict", "-summary", "-output", "json"]
    if schemas:
        args += ["-schema-location", schemas]
    else:
        # Offline: no schema source, so CRD-typed objects are skipped and the API server's
        # dry run below is the authoritative check.
        args += ["-ignore-missing-schemas", "-schema-location", str(tmp_path / "none.json")]
    conform = testenv.run("kubeconform", *args, input=rendered, check=False)
    summary = json.loads(conform.stdout or "{}").get("summary", {})
    assert conform.returncode == 0 and summary.get("invalid", 0) == 0, conform.stdout
    dry = testenv.kubectl(
        "apply", "--dry-run=server", "--server-side", "-f", "-", input=rendered, check=False
    )
    # Namespaced objects for namespaces that do not exist fail with NotFound; nothing else may.
    errors = [
        line
        for line in dry.stderr.splitlines()
        if line.strip()
        and 'namespaces "a" not found' not in line
        and 'namespaces "b" not found' not in line
    ]
    assert not errors, dry.stderr


def test_installed_release_runs_restricted_with_least_privilege(
    testenv: TestEnv, release: dict[str, str]
) -> None:
    ns, name, sa = release["namespace"], release["name"], release["serviceAccount"]
    dep = testenv.get("deployment", f"{name}-plantd-operator", ns)
    assert dep is not None and dep["status"].get("readyReplicas") == 2
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["args"][0] == "operator"
    assert f"--leader-elect-lease-name={release['lease']}" in c["args"]
    assert f"--leader-elect-namespace={ns}" in c["args"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert testenv.get("pdb", f"{name}-plantd-operator", ns) is not None

    def can(verb: str, resource: str, namespace: str = "default") -> bool:
        out = testenv.kubectl(
            "auth",
            "can-i",
            verb,
            resource,
            "-n",
            namespace,
            f"--as=system:serviceaccount:{ns}:{sa}",
            check=False,
        )
        return out.stdout.strip() == "yes"

    # Leader election: its one Lease, in its own namespace, and nothing more.
    lease = f"leases.coordination.k8s.io/{release['lease']}"
    assert can("get", lease, ns) and can("update", lease, ns)
    assert can("create", "leases.coordination.k8s.io", ns)
    assert not can("update", "leases.coordination.k8s.io/someone-else", ns)
    assert not can("delete", lease, ns)
    assert not can("get", lease, "default")
    assert not can("update", "plantdclusters.plantd.io/finalizers"), "no finalizer is used"

    assert can("patch", "deployments.apps") and can("create", "secrets")
    assert can("patch", "plantdclusters.plantd.io/status")
    assert not can("list", "secrets"), "the operator must not list Secrets"
    assert not can("delete", "deployments.apps")
    assert not can("create", "pods")
    assert not can("patch", "nodes")


def test_examples_are_valid(testenv: TestEnv, namespace: str) -> None:
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        testenv.kubectl("create", "--dry-run=server", "-n", namespace, "-f", str(path))


def test_image_allow_list_reaches_the_operator(testenv: TestEnv) -> None:
    rendered = testenv.run(
        "helm",
        "template",
        "x",
        str(CHART),
        "--set",
        "imageAllowList={registry.example/plantd/*,redis:7.4*}",
    ).stdout
    assert "- --allowed-images=registry.example/plantd/*,redis:7.4*" in rendered
    assert "--allowed-images" not in testenv.run("helm", "template", "x", str(CHART)).stdout
    bad = testenv.run(
        "helm", "template", "x", str(CHART), "--set", "imageAllowList={a b}", check=False
    )
    assert bad.returncode != 0 and "imageAllowList" in bad.stderr


def test_default_images_reach_the_operator(testenv: TestEnv) -> None:
    default = testenv.run("helm", "template", "x", str(CHART)).stdout
    assert "- --default-redis-image=redis:7.4" in default
    mirror = testenv.run(
        "helm", "template", "x", str(CHART), "--set", "defaultImage.redis=mirror.example/redis:7.4"
    ).stdout
    assert "- --default-redis-image=mirror.example/redis:7.4" in mirror
    bad = testenv.run(
        "helm", "template", "x", str(CHART), "--set", "defaultImage.redis=", check=False
    )
    assert bad.returncode != 0 and "redis" in bad.stderr
