"""Shared helpers of the e2e tier (a module of its own: every tier has a `conftest`, so tests
import from here, as the k8s tier does from k8skit)."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
IMAGE_DIR = ROOT / "hack" / "image"
IMAGE = os.environ.get("PLANTD_IMAGE", "localhost/plantd:dev")
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
