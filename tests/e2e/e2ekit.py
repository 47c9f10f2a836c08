"""Shared helpers of the e2e tier (a module of its own: every tier has a `conftest`, so tests
import from here, as the k8s tier does from k8skit)."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.k8s.k8skit import TestEnv, wait_for

ROOT = Path(__file__).resolve().parents[2]
IMAGE_DIR = ROOT / "hack" / "image"
IMAGE = os.environ.get("PLANTD_IMAGE", "localhost/plantd:dev")
# The node the plant must run on and the managed Redis image it has: the real node of
# hack/testenv/node.sh by default; hack/kind/e2e.sh names a kind worker and its Redis.
NODE = os.environ.get("PLANTD_E2E_NODE", "plantd-node-1")
REDIS_IMAGE = os.environ.get("PLANTD_E2E_REDIS_IMAGE", "localhost/plantd-redis:bookworm")
# The operator's release, as the README and both e2e modules install it.
OPERATOR_RELEASE = "plantd-operator"
OPERATOR_NS = "plantd-system"
# The operator Deployment's pods; `helm test` pods share the chart's name label and stay after
# an uninstall (hook-delete-policy before-hook-creation).
OPERATOR_PODS = "app.kubernetes.io/name=plantd-operator,app.kubernetes.io/component!=test"
BUILD_TIMEOUT = 1800  # cold: debootstrap about 50 s, the build about 150 s on 2 cores


@dataclass(frozen=True)
class BuiltImage:
    name: str
    build_log: str

    def inspect(self) -> dict[str, Any]:
        """buildah's view of the image (its OCI config under "OCIv1")."""
        out = buildah("inspect", "--type", "image", self.name)
        parsed: dict[str, Any] = json.loads(out)
        return parsed


def image_cache() -> Path:
    return Path(os.environ.get("PLANTD_IMAGE_CACHE", Path.home() / ".cache" / "plantd-image"))


def buildah(*args: str) -> str:
    """buildah on the project's own storage (hack/image/lib.sh, bh)."""
    cache = image_cache()
    cmd = ["buildah", "--root", str(cache / "storage"), "--runroot", str(cache / "run")]
    cmd += ["--storage-driver", "vfs", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300).stdout


NODE_SCRIPT = ROOT / "hack" / "testenv" / "node.sh"
NODE_UP_TIMEOUT = 2700  # cold: the control plane and the node's binaries build from Go modules


class RealNodeCluster(TestEnv):
    """The real-node cluster of hack/testenv/node.sh: the k8s tier's client on another
    kubeconfig (admin), with the testenv's tools."""

    @classmethod
    def at(cls, kubeconfig: str, bin: Path) -> RealNodeCluster:
        return cls(env={**os.environ, "KUBECONFIG": kubeconfig, "PLANTD_TESTENV_BIN": str(bin)})

    def helm(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.run("helm", *args, **kw)

    def apply(self, obj: dict[str, Any] | list[dict[str, Any]], *extra: str) -> str:
        # The tests own these objects outright: take fields another manager last set.
        return super().apply(obj, "--force-conflicts", *extra)

    def uninstall_operator(self, check: bool = False) -> None:
        """`helm uninstall --wait` of the operator release, then until its pods are gone:
        helm returns while they still terminate, and a next install would count them."""
        self.helm(
            "uninstall", OPERATOR_RELEASE, "-n", OPERATOR_NS, "--wait", timeout=180, check=check
        )
        wait_for(
            lambda: not self.list("pods", OPERATOR_NS, OPERATOR_PODS),
            "the operator release's pods gone",
            120,
        )


# The chart `helm upgrade` is tested from: the chart as the previous round shipped it (sidecars
# on, before the helm test hooks). Until charts are released as packages, a revision of this
# repository; move it forward when the chart's version is bumped.
PREVIOUS_CHART_REVISION = "eaddff7b85bce664834df50ee84202610e91ab13"


def previous_chart(into: Path) -> Path:
    """charts/plantd-operator at PREVIOUS_CHART_REVISION, extracted under ``into``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", PREVIOUS_CHART_REVISION, "charts/plantd-operator"],
        capture_output=True,
        timeout=60,
    )
    if archive.returncode != 0:
        raise AssertionError(
            f"git archive {PREVIOUS_CHART_REVISION} failed (a shallow clone? "
            f"git fetch --unshallow): {archive.stderr.decode(errors='replace').strip()}"
        )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True, timeout=60)
    return into / "charts" / "plantd-operator"
