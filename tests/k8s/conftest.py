"""The k8s tier: a real API server (hack/testenv), the chart installed with the real helm, and
the operator as a real process authenticated with the chart's ServiceAccount token.

Self-contained for CI: when the cluster is not up, hack/testenv/up.sh brings it up (building
or reusing the cached binaries). Locally a cluster that cannot come up skips the tier; under
CI=true it fails it.
"""

from __future__ import annotations

import re
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from k8skit import (
    CHART,
    ROOT,
    Lease,
    OperatorProcess,
    TestEnv,
    namespace_operator,
    require,
    sa_kubeconfig,
    testenv_environment,
)

CRD_FILES = [ROOT / "crds" / "plantd.io_plantdclusters.yaml"]
UP_TIMEOUT = 3600  # a cold build of the control plane takes a while; warm start is seconds


@pytest.fixture(scope="session")
def testenv() -> TestEnv:
    script = ROOT / "hack" / "testenv" / "env.sh"
    require(script.exists(), "hack/testenv/env.sh is missing")
    env = testenv_environment(script)
    if env is None:
        up = subprocess.run(
            ["bash", str(ROOT / "hack" / "testenv" / "up.sh")],
            capture_output=True,
            text=True,
            timeout=UP_TIMEOUT,
        )
        tail = (up.stderr or up.stdout).strip().splitlines()[-5:]
        require(up.returncode == 0, f"test cluster could not be brought up: {' | '.join(tail)}")
        env = testenv_environment(script)
    require(env is not None, "test cluster not answering after hack/testenv/up.sh")
    assert env is not None
    return TestEnv(env)


@pytest.fixture(scope="session")
def crds(testenv: TestEnv) -> None:
    """Our CRD, server-side applied (as docs/operator.md says)."""
    args = ["apply", "--server-side", "--force-conflicts"]
    for f in CRD_FILES:
        args += ["-f", str(f)]
    testenv.kubectl(*args)
    testenv.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/plantdclusters.plantd.io",
    )


def restricted_namespace(testenv: TestEnv, name: str) -> None:
    """A namespace enforcing the restricted Pod Security profile: non-compliant pods fail."""
    testenv.kubectl("create", "namespace", name)
    testenv.kubectl(
        "label",
        "namespace",
        name,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    )


@pytest.fixture(scope="session")
def release(testenv: TestEnv, crds: None) -> Iterator[dict[str, str]]:
    """The chart installed with helm into its own namespace (the operator pods are kwok fakes)."""
    suffix = secrets.token_hex(3)
    name, ns = f"pdo-{suffix}", f"pdo-{suffix}"
    restricted_namespace(testenv, ns)
    testenv.run(
        "helm",
        "install",
        name,
        str(CHART),
        "--namespace",
        ns,
        "--skip-crds",
        "--wait",
        "--timeout",
        "120s",
        timeout=180,
    )
    try:
        # The Lease name is the chart's default: the release's full name.
        yield {
            "name": name,
            "namespace": ns,
            "serviceAccount": f"{name}-plantd-operator",
            "lease": f"{name}-plantd-operator",
        }
    finally:
        testenv.run("helm", "uninstall", name, "--namespace", ns, "--wait", check=False)
        testenv.kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture(scope="session")
def operator_kubeconfig(
    testenv: TestEnv, release: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Credentials of the chart's ServiceAccount: the operator runs with exactly its RBAC."""
    path = tmp_path_factory.mktemp("sa") / "kubeconfig"
    return sa_kubeconfig(testenv, release["namespace"], release["serviceAccount"], path)


@pytest.fixture(scope="session")
def lease(release: dict[str, str]) -> Lease:
    """The one Lease the chart lets the operator's ServiceAccount use."""
    return Lease(release["namespace"], release["lease"])


@pytest.fixture(scope="module")
def namespace(testenv: TestEnv, crds: None, request: pytest.FixtureRequest) -> Iterator[str]:
    base = re.sub(r"[^a-z0-9]", "", request.module.__name__.rsplit(".", 1)[-1].lower())[-20:]
    ns = f"t-{base}-{secrets.token_hex(3)}"
    restricted_namespace(testenv, ns)
    try:
        yield ns
    finally:
        testenv.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        testenv.kubectl("delete", "pv", "-l", f"plantd-test={ns}", "--wait=false", check=False)


@pytest.fixture(scope="module")
def operator(
    testenv: TestEnv,
    namespace: str,
    operator_kubeconfig: Path,
    lease: Lease,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[OperatorProcess]:
    """The operator on the module's namespace, with the module's ``OPERATOR_ARGS`` if any
    (e.g. an image allow-list)."""
    logs = tmp_path_factory.mktemp("operator")
    extra = getattr(request.module, "OPERATOR_ARGS", ())
    with namespace_operator(testenv, namespace, operator_kubeconfig, lease, logs, extra) as op:
        yield op
