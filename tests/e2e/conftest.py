"""The e2e tier: the image built here (hack/image) and run the way a restricted pod runs it.

Self-contained for CI: the session builds the image with `hack/image/build.sh` (buildah with a
debootstrap base when no registry answers, cached in ~/.cache/plantd-image). Locally a missing
tool skips the tier; under CI=true it fails it (tests/kit/prereq.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from e2ekit import BUILD_TIMEOUT, IMAGE, IMAGE_DIR, ROOT, BuiltImage
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
