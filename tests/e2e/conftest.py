"""The e2e tier: the image built here (hack/image) and run the way a restricted pod runs it.

Self-contained for CI: the session builds the image with `hack/image/build.sh` (buildah with a
debootstrap base when no registry answers, cached in ~/.cache/plantd-image). Locally a missing
tool skips the tier; under CI=true it fails it (tests/kit/prereq.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2ekit import (
    BUILD_TIMEOUT,
    IMAGE,
    IMAGE_DIR,
    NODE_SCRIPT,
    NODE_UP_TIMEOUT,
    ROOT,
    BuiltImage,
    RealNodeCluster,
    image_cache,
)
from tests.kit import require


@pytest.fixture(scope="session")
def image() -> BuiltImage:
    require(os.geteuid() == 0, "the e2e tier runs as root (debootstrap, runc)")
    for tool, package in (("buildah", "buildah"), ("runc", "runc"), ("debootstrap", "debootstrap")):
        require(shutil.which(tool) is not None, f"{tool} not found: apt-get install {package}")
    build = subprocess.run(
        [str(IMAGE_DIR / "build.sh")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        env={**os.environ, "PLANTD_IMAGE": IMAGE, "PLANTD_IMAGE_BUILDER": "buildah"},
    )
    if build.returncode != 0:
        pytest.fail(f"make image failed:\n{build.stderr[-4000:]}")
    assert build.stdout.strip() == IMAGE, build.stdout
    return BuiltImage(name=IMAGE, build_log=build.stderr)


def testenv_bin() -> Path:
    """hack/testenv/build.sh (cached): the bin dir with kubectl and helm."""
    built = subprocess.run(
        [str(ROOT / "hack" / "testenv" / "build.sh")],
        capture_output=True,
        text=True,
        timeout=NODE_UP_TIMEOUT,
    )
    if built.returncode != 0:
        pytest.fail(f"hack/testenv/build.sh failed:\n{built.stderr[-4000:]}")
    return Path(built.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def real_node(image: BuiltImage) -> Iterator[RealNodeCluster]:
    """hack/testenv/node.sh up (a control plane of its own and one real node), the image built
    above imported into the node's containerd; brought down at the end unless
    PLANTD_E2E_KEEP_NODE=1 (then `make testenv-node-down` stops it).

    PLANTD_E2E_KUBECONFIG=<file> runs the tier on that cluster instead (hack/kind/e2e.sh: a
    kind cluster with the image loaded), with kubectl and helm from hack/testenv/build.sh."""
    external = os.environ.get("PLANTD_E2E_KUBECONFIG")
    if external:
        yield RealNodeCluster.at(external, testenv_bin())
        return
    for tool in ("iptables", "conntrack", "openssl", "curl"):
        require(shutil.which(tool) is not None, f"{tool} not found: make deps-system")
    require(
        Path("/opt/cni/bin/bridge").exists() or Path("/usr/lib/cni/bridge").exists(),
        "CNI plugins not found: apt-get install containernetworking-plugins",
    )
    bin = testenv_bin()
    tarball = image_cache() / "plantd-dev.tar"
    up = subprocess.run(
        [str(NODE_SCRIPT), "up", "--image", str(tarball)],
        capture_output=True,
        text=True,
        timeout=NODE_UP_TIMEOUT,
    )
    if up.returncode != 0:
        pytest.fail(f"hack/testenv/node.sh up --image {tarball} failed:\n{up.stderr[-4000:]}")
    kubeconfig = up.stdout.strip().splitlines()[-1].removeprefix("export KUBECONFIG=")
    yield RealNodeCluster.at(kubeconfig, bin)
    if os.environ.get("PLANTD_E2E_KEEP_NODE") != "1":
        subprocess.run([str(NODE_SCRIPT), "down"], capture_output=True, timeout=300)
