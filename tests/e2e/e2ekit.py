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


NODE_SCRIPT = ROOT / "hack" / "testenv" / "node.sh"
NODE_UP_TIMEOUT = 2700  # cold: the control plane and the node's binaries build from Go modules


@dataclass
class RealNodeCluster:
    """The real-node cluster of hack/testenv/node.sh (admin kubeconfig, the testenv's tools)."""

    kubeconfig: str
    bin: Path

    def run(
        self,
        tool: str,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 180,
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": self.kubeconfig}
        proc = subprocess.run(
            [str(self.bin / tool), *args],
            input=input,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{tool} {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}"
            )
        return proc

    def kubectl(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.run("kubectl", "--request-timeout=30s", *args, **kw)

    def helm(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.run("helm", *args, **kw)

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        proc = self.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
        if proc.returncode != 0:
            if "NotFound" in proc.stderr or "not found" in proc.stderr:
                return None
            raise AssertionError(proc.stderr)
        return dict(json.loads(proc.stdout))

    def list(self, kind: str, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        sel = ["-l", selector] if selector else []
        proc = self.kubectl("get", kind, "-n", namespace, *sel, "-o", "json")
        return list(json.loads(proc.stdout)["items"])

    def apply(self, docs: list[dict[str, Any]]) -> None:
        import yaml

        self.kubectl(
            "apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump_all(docs)
        )


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    for cond in (obj or {}).get("status", {}).get("conditions", []):
        if cond.get("type") == kind:
            return dict(cond)
    return None
