"""The README's Kubernetes quick start on the test cluster, run exactly as the README types it
(its second block under "On Kubernetes": `make testenv-up`, the real-node cluster's env,
the CRDs, the chart with hack/testenv/node-values.yaml, the minimal PlantdCluster, `kubectl
wait` for Ready). A new user following the README gets what this test gets.

Runs before test_e2e_real_node.py (file order) on the same node, and removes what it made:
that module installs the same release.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator

import pytest
import yaml
from e2ekit import NODE, ROOT, RealNodeCluster
from tests.k8s.k8skit import condition, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

README = ROOT / "README.md"
NODE_VALUES = ROOT / "hack" / "testenv" / "node-values.yaml"


def quick_start_block() -> str:
    """The bash block of the README that starts with `make testenv-up`."""
    section = README.read_text().split("### On Kubernetes", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    (block,) = [b for b in blocks if b.startswith("make testenv-up")]
    return block


def test_the_block_is_the_quick_start_plus_the_test_cluster() -> None:
    # The test-cluster block is the general one with two lines before it and one values file.
    section = README.read_text().split("### On Kubernetes", 1)[1]
    general = re.findall(r"```bash\n(.*?)```", section, flags=re.S)[0]
    joined = quick_start_block().replace(" \\\n  -f hack/testenv/node-values.yaml", "")
    assert joined.splitlines()[2:] == general.splitlines()


@pytest.fixture
def cleanup(real_node: RealNodeCluster) -> Iterator[RealNodeCluster]:
    yield real_node
    real_node.kubectl("delete", "pdc", "minimal", "-n", "default", "--ignore-not-found", "--wait")
    wait_for(
        lambda: not real_node.list("pods", "default", "app.kubernetes.io/instance=minimal"),
        "the minimal cluster's pods gone",
        180,
    )
    real_node.uninstall_operator()


def test_the_readme_quick_start_reaches_ready_on_the_test_cluster(
    real_node: RealNodeCluster, cleanup: RealNodeCluster
) -> None:
    if os.environ.get("PLANTD_E2E_KUBECONFIG"):
        pytest.skip("the README block is for the repository's own test cluster, not this one")
    # Leftovers of an earlier run on a kept node (PLANTD_E2E_KEEP_NODE=1).
    real_node.uninstall_operator()
    start = time.monotonic()
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "MAKEFLAGS")}
    typed = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", quick_start_block()],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert typed.returncode == 0, typed.stdout[-3000:] + typed.stderr[-4000:]
    print(f"[e2e] README quick start on the test cluster: {time.monotonic() - start:.1f}s")
    # Ready came from real pods on the real node, the Redis image from the chart's default.
    pdc = real_node.get("pdc", "minimal", "default") or {}
    assert (condition(pdc, "Ready") or {}).get("status") == "True", pdc.get("status")
    pods = real_node.list("pods", "default", "app.kubernetes.io/instance=minimal")
    components = {p["metadata"]["labels"].get("app.kubernetes.io/component") for p in pods}
    assert {"broker", "state", "identity", "redis"} <= components, components
    for pod in pods:
        assert pod["spec"]["nodeName"] == NODE
        assert pod["status"]["phase"] == "Running", pod["metadata"]["name"]
    redis = [p for p in pods if p["metadata"]["labels"]["app.kubernetes.io/component"] == "redis"]
    default_redis = yaml.safe_load(NODE_VALUES.read_text())["defaultImage"]["redis"]
    assert redis[0]["spec"]["containers"][0]["image"] == default_redis
