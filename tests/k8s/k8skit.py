"""Helpers for the k8s tier: the test control plane, kubectl, the operator as a real process."""

from __future__ import annotations

import base64
import builtins
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

# tests/ is on pytest's `pythonpath`: the shared helpers import by name.
from tests.conftest import free_port as free_port
from tests.conftest import in_ci as in_ci
from tests.conftest import require as require
from tests.kit import wait_for as kit_wait_for

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "plantd-operator"
T = TypeVar("T")


def wait_for(
    fn: Callable[[], T | None], what: str, timeout: float = 60.0, interval: float = 0.3
) -> T:
    """The kit's wait_for in this tier's argument order; an AssertionError from ``fn`` counts
    as "not yet" (API objects appear in stages)."""
    got: T | None = kit_wait_for(fn, timeout, what, interval, retry_on=(AssertionError,))
    assert got is not None
    return got


def testenv_environment(script: Path) -> dict[str, str] | None:
    """The environment after `eval "$(hack/testenv/env.sh)"`, or None if the cluster is down."""
    proc = subprocess.run(
        ["bash", "-c", f'out=$(bash "{script}") || exit 1; eval "$out"; env -0'],
        capture_output=True,
    )
    if proc.returncode != 0:
        return None
    pairs = (item.split("=", 1) for item in proc.stdout.decode().split("\0") if "=" in item)
    return dict(pairs)


@dataclass
class TestEnv:
    """The running test control plane (admin credentials)."""

    __test__ = False  # not a test class, despite the name

    env: dict[str, str]

    @property
    def kubeconfig(self) -> str:
        return self.env["KUBECONFIG"]

    @property
    def bin(self) -> Path:
        return Path(self.env["PLANTD_TESTENV_BIN"])

    def run(
        self,
        tool: str,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: str | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        env = dict(self.env)
        if kubeconfig:
            env["KUBECONFIG"] = kubeconfig
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
                f"{tool} {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}"
            )
        return proc

    def kubectl(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.run("kubectl", "--request-timeout=20s", *args, **kw)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        ns = ["-n", namespace] if namespace else []
        proc = self.kubectl("get", kind, name, *ns, "-o", "json", check=False)
        if proc.returncode != 0:
            if "NotFound" in proc.stderr or "not found" in proc.stderr:
                return None
            raise AssertionError(proc.stderr)
        return dict(json.loads(proc.stdout))

    def list(self, kind: str, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        sel = ["-l", selector] if selector else []
        proc = self.kubectl("get", kind, "-n", namespace, *sel, "-o", "json")
        return list(json.loads(proc.stdout)["items"])

    def apply(self, obj: dict[str, Any] | builtins.list[dict[str, Any]], *extra: str) -> str:
        docs = obj if isinstance(obj, list) else [obj]
        text = yaml.safe_dump_all(docs)
        return self.kubectl("apply", "--server-side", "-f", "-", *extra, input=text).stdout

    def create(self, obj: dict[str, Any], check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.kubectl("create", "-f", "-", input=yaml.safe_dump(obj), check=check)


def sa_kubeconfig(env: TestEnv, namespace: str, sa: str, path: Path) -> Path:
    """A kubeconfig that authenticates as a ServiceAccount (TokenRequest), not as admin."""
    token = env.kubectl("create", "token", sa, "-n", namespace, "--duration=2h").stdout.strip()
    admin = yaml.safe_load(Path(env.kubeconfig).read_text())
    ctx_name = admin["current-context"]
    ctx = next(c for c in admin["contexts"] if c["name"] == ctx_name)["context"]
    cluster = next(c for c in admin["clusters"] if c["name"] == ctx["cluster"])["cluster"]
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "test", "user": sa}}],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(cfg))
    path.chmod(0o600)
    return path


@dataclass(frozen=True)
class Lease:
    """Where operator processes elect their leader (the chart's RBAC names one Lease)."""

    namespace: str
    name: str


# Leader-election timings for tests that kill or race replicas: short, but with room for a
# loaded 2-core machine (a renewal has 4 s to succeed before the leader gives up).
FAST_ELECTION = (6.0, 4.0, 1.0)


class OperatorProcess:
    """``python -m plantd_operator`` as a subprocess, with its log captured to a file."""

    def __init__(
        self,
        kubeconfig: Path,
        namespace: str | None,
        log_path: Path,
        *,
        lease: Lease,
        identity: str | None = None,
        election: tuple[float, float, float] | None = None,
        drift_interval: float = 3.0,
        log_level: str = "info",
        extra_args: Sequence[str] = (),
    ) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.identity = identity or f"test-{secrets.token_hex(3)}"
        args = [
            sys.executable,
            "-m",
            "plantd_operator",
            *(["--namespace", namespace] if namespace else []),  # None: the whole cluster
            "--drift-interval",
            str(drift_interval),
            "--http-host",
            "127.0.0.1",
            "--http-port",
            str(self.port),
            "--log-level",
            log_level,
            "--leader-elect-namespace",
            lease.namespace,
            "--leader-elect-lease-name",
            lease.name,
            "--leader-elect-identity",
            self.identity,
        ]
        args += list(extra_args)
        if election:
            duration, deadline, retry = election
            args += [
                "--leader-elect-lease-duration",
                str(duration),
                "--leader-elect-renew-deadline",
                str(deadline),
                "--leader-elect-retry-period",
                str(retry),
            ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PLANTD_")}
        env["KUBECONFIG"] = str(kubeconfig)
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def http(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, ""

    def role(self) -> str:
        """``starting``, ``standby`` or ``leader`` (from /readyz); ``down`` if not answering."""
        try:
            code, body = self.http("/readyz")
        except OSError:
            return "down"
        if code != 200:
            return "starting"
        return str(json.loads(body).get("role", ""))

    def wait_ready(self, role: str = "leader", timeout: float = 60) -> None:
        """Until /readyz says ``role`` (``standby``: ready to take over; ``leader``: acting)."""

        def ready() -> bool:
            assert self.proc.poll() is None, f"operator exited: {self.log()[-3000:]}"
            return self.role() == role

        wait_for(ready, f"the operator's /readyz to say {role}", timeout)

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples whose labels include ``labels``."""
        _, text = self.http("/metrics")
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name) or line.startswith("#"):
                continue
            head, _, value = line.rpartition(" ")
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


@contextlib.contextmanager
def namespace_operator(
    testenv: TestEnv,
    namespace: str,
    kubeconfig: Path,
    lease: Lease,
    log_dir: Path,
    extra_args: Sequence[str] = (),
) -> Iterator[OperatorProcess]:
    """The operator watching ``namespace``, leading and ready; after, every PlantdCluster there
    is deleted (while it still runs) and the operator stopped, its log's path printed."""
    log = log_dir / "operator.log"
    op = OperatorProcess(kubeconfig, namespace, log, lease=lease, extra_args=extra_args)
    try:
        op.wait_ready()
        yield op
    finally:
        try:
            delete_clusters(testenv, namespace)
        finally:
            op.stop()
            print(f"operator log: {log}")


def pdc(name: str, spec: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "plantd.io/v1alpha1",
        "kind": "PlantdCluster",
        "metadata": {"name": name, **meta},
        "spec": spec or {},
    }


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == kind:
            return dict(c)
    return None


def pv_for(namespace: str, cluster: str, size: str = "1Gi") -> dict[str, Any]:
    """A PersistentVolume pre-bound to a managed Redis claim (kwok has no provisioner)."""
    claim = f"data-{cluster}-redis-0"
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"{namespace}-{cluster}", "labels": {"plantd-test": namespace}},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            "hostPath": {"path": f"/tmp/plantd-test/{namespace}/{cluster}"},
            "claimRef": {"namespace": namespace, "name": claim},
        },
    }


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@contextlib.contextmanager
def timer() -> Iterator[Callable[[], float]]:
    start = time.perf_counter()
    yield lambda: time.perf_counter() - start


def delete_clusters(testenv: TestEnv, ns: str) -> None:
    """Delete every PlantdCluster and wait until they are gone (the operator sets no
    finalizer, so this needs no operator; a finalizer left by an old version is removed)."""
    testenv.kubectl("delete", "pdc", "--all", "-n", ns, "--wait=false", check=False)
    try:
        wait_for(lambda: not testenv.list("pdc", ns), f"PlantdClusters in {ns} to go", timeout=60)
    except AssertionError:
        # Leave no stuck namespace behind even when the operator is broken.
        for item in testenv.list("pdc", ns):
            testenv.kubectl(
                "patch",
                "pdc",
                item["metadata"]["name"],
                "-n",
                ns,
                "--type=merge",
                "-p",
                '{"metadata":{"finalizers":null}}',
                check=False,
            )
        raise
