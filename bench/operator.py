"""Benchmark the PlantdCluster operator against the test control plane (hack/testenv).

    python -m bench.operator            # 1 and 20 clusters, 3 rounds, medians
    python -m bench.operator --quick    # 1 and 5 clusters, 1 round

Measures, in the same run and on the same control plane:
  * floor: creating bare Deployments with as many pods as a cluster has, until Ready;
  * time from creating a PlantdCluster to its children applied and to Ready=True,
    for 1 cluster and for N clusters created at once;
  * the operator's peak RSS and CPU.
Prints figures and ratios to the floor. Needs the test cluster up (hack/testenv/up.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

ROOT = Path(__file__).resolve().parent.parent
CRDS = [
    ROOT / "crds" / "plantd.io_plantdclusters.yaml",
    ROOT / "charts" / "plantd-operator" / "crds" / "kopf.dev_peerings.yaml",
]
# External Redis: three pods per cluster (broker, state, identity), no volume to provision.
SPEC = {"state": {"redis": {"mode": "external", "external": {"address": "redis.bench:6379"}}}}
PODS_PER_CLUSTER = 3


def testenv_env() -> dict[str, str]:
    """The environment after `eval "$(hack/testenv/env.sh)"` (KUBECONFIG, PATH, ...)."""
    script = ROOT / "hack" / "testenv" / "env.sh"
    proc = subprocess.run(
        ["bash", "-c", f'out=$(bash "{script}") || exit 1; eval "$out"; env -0'],
        capture_output=True,
    )
    if proc.returncode != 0:
        sys.exit(f"test cluster is not up: {proc.stderr.decode().strip()} (hack/testenv/up.sh)")
    pairs = (item.split("=", 1) for item in proc.stdout.decode().split("\0") if "=" in item)
    return dict(pairs)


def kubectl(env: dict[str, str], *args: str, input: str | None = None) -> str:
    proc = subprocess.run(
        [str(Path(env["PLANTD_TESTENV_BIN"]) / "kubectl"), *args],
        input=input,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


@dataclass
class Watcher:
    """Records when objects first satisfy a predicate, from a watch stream (no polling)."""

    list_fn: Callable[..., Any]
    args: tuple[Any, ...]
    done: Callable[[dict[str, Any]], bool]
    seen: dict[str, float] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        w = watch.Watch()  # type: ignore[no-untyped-call]
        while not self.stop.is_set():
            for ev in w.stream(self.list_fn, *self.args, timeout_seconds=5):  # type: ignore[no-untyped-call]
                obj = ev["object"]
                obj = (
                    obj
                    if isinstance(obj, dict)
                    else client.ApiClient().sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]
                )
                name = obj["metadata"]["name"]
                if name not in self.seen and self.done(obj):
                    self.seen[name] = time.perf_counter()
                if self.stop.is_set():
                    break

    def start(self) -> threading.Thread:
        t = threading.Thread(target=self.run, daemon=True)
        t.start()
        return t

    def wait(self, names: list[str], timeout: float) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(n in self.seen for n in names):
                return {n: self.seen[n] for n in names}
            time.sleep(0.01)
        missing = [n for n in names if n not in self.seen]
        raise TimeoutError(f"not ready after {timeout}s: {missing[:5]}")


def deployment_ready(obj: dict[str, Any]) -> bool:
    st = obj.get("status") or {}
    return bool(
        (st.get("readyReplicas") or 0) >= obj["spec"]["replicas"]
        and st.get("observedGeneration", 0) >= obj["metadata"].get("generation", 0)
    )


def cluster_ready(obj: dict[str, Any]) -> bool:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == "Ready" and c["status"] == "True":
            return True
    return False


class Operator:
    def __init__(self, env: dict[str, str], namespaces: list[str], log: Path) -> None:
        self.port = _free_port()
        args = [
            sys.executable,
            "-m",
            "plantd_operator",
            "--http-host",
            "127.0.0.1",
            "--http-port",
            str(self.port),
            "--log-level",
            "warning",
        ]
        for ns in namespaces:
            args += ["--namespace", ns]
        self.log = log.open("wb")
        self.proc = subprocess.Popen(args, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.cpu_start = 0.0
        self.started = time.perf_counter()

    def metric(self, name: str, **labels: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as r:
            text = r.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"operator exited; see {self.log.name}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1):
                    self.cpu_start = self.cpu_seconds()
                    self.started = time.perf_counter()
                    return
            except OSError:
                time.sleep(0.1)
        sys.exit("operator did not become ready in 60 s")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bare_deployment(name: str, ns: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "c", "image": "plantd/plantd:0.1.0"}]},
            },
        },
    }


def create_all(create: Callable[[dict[str, Any]], Any], objs: list[dict[str, Any]]) -> float:
    """Create objects in parallel threads (a burst, like `kubectl apply` of N files)."""
    threads = [threading.Thread(target=create, args=(o,)) for o in objs]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return t0


def round_(env: dict[str, str], n: int, log_dir: Path) -> dict[str, Any]:
    suffix = secrets.token_hex(3)
    ns_floor, ns_one, ns_many = (f"bench-{k}-{suffix}" for k in ("floor", "one", "many"))
    for ns in (ns_floor, ns_one, ns_many):
        kubectl(env, "create", "namespace", ns)
    apps = client.AppsV1Api()
    custom = client.CustomObjectsApi()
    op = Operator(env, [ns_one, ns_many], log_dir / f"operator-{suffix}.log")
    try:
        op.wait_ready()
        dep_w = Watcher(apps.list_namespaced_deployment, (ns_floor,), deployment_ready)
        pdc_one = Watcher(
            custom.list_namespaced_custom_object,
            ("plantd.io", "v1alpha1", ns_one, "plantdclusters"),
            cluster_ready,
        )
        pdc_many = Watcher(
            custom.list_namespaced_custom_object,
            ("plantd.io", "v1alpha1", ns_many, "plantdclusters"),
            cluster_ready,
        )
        for w in (dep_w, pdc_one, pdc_many):
            w.start()
        time.sleep(0.5)  # watches established

        def mk_dep(o: dict[str, Any]) -> None:
            apps.create_namespaced_deployment(o["metadata"]["namespace"], o)  # type: ignore[arg-type]

        def mk_pdc(o: dict[str, Any]) -> None:
            custom.create_namespaced_custom_object(
                "plantd.io", "v1alpha1", o["metadata"]["namespace"], "plantdclusters", o
            )

        def pdc(name: str, ns: str) -> dict[str, Any]:
            return {
                "apiVersion": "plantd.io/v1alpha1",
                "kind": "PlantdCluster",
                "metadata": {"name": name, "namespace": ns},
                "spec": SPEC,
            }

        out: dict[str, Any] = {}
        # Floor, 1: one Deployment with a cluster's pod count.
        t0 = create_all(mk_dep, [bare_deployment("floor-1", ns_floor, PODS_PER_CLUSTER)])
        out["floor_1"] = dep_w.wait(["floor-1"], 120)["floor-1"] - t0
        # Floor with a cluster's shape: one single-pod Deployment per component, at once.
        shape = [f"floor-s{i}" for i in range(PODS_PER_CLUSTER)]
        t0 = create_all(mk_dep, [bare_deployment(x, ns_floor, 1) for x in shape])
        out["floor_shape"] = max(dep_w.wait(shape, 120).values()) - t0
        # One PlantdCluster: children applied, then Ready.
        applied0 = op.metric("plantd_operator_reconciliations_total", result="applied")
        t0 = create_all(mk_pdc, [pdc("one", ns_one)])
        deadline = time.monotonic() + 60
        while op.metric("plantd_operator_reconciliations_total", result="applied") <= applied0:
            if time.monotonic() > deadline:
                raise TimeoutError("no reconcile of the single cluster")
            time.sleep(0.005)
        out["applied_1"] = time.perf_counter() - t0
        out["ready_1"] = pdc_one.wait(["one"], 120)["one"] - t0
        # Floor, N: N Deployments at once.
        names = [f"floor-n{i}" for i in range(n)]
        t0 = create_all(mk_dep, [bare_deployment(x, ns_floor, PODS_PER_CLUSTER) for x in names])
        out["floor_n"] = max(dep_w.wait(names, 300).values()) - t0
        # N PlantdClusters at once.
        names = [f"c{i}" for i in range(n)]
        t0 = create_all(mk_pdc, [pdc(x, ns_many) for x in names])
        done = pdc_many.wait(names, 300)
        out["ready_n_max"] = max(done.values()) - t0
        out["ready_n_median"] = statistics.median(done.values()) - t0
        out["rss_mb"] = op.peak_rss_mb()
        out["cpu_s"] = op.cpu_seconds() - op.cpu_start
        out["wall_s"] = time.perf_counter() - op.started
        for w in (dep_w, pdc_one, pdc_many):
            w.stop.set()
        # Clean up while the operator still runs (it removes its finalizer).
        for ns in (ns_one, ns_many):
            kubectl(env, "delete", "pdc", "--all", "-n", ns, "--wait=true", "--timeout=120s")
    finally:
        op.stop()
        for ns in (ns_floor, ns_one, ns_many):
            subprocess.run(
                [
                    str(Path(env["PLANTD_TESTENV_BIN"]) / "kubectl"),
                    "delete",
                    "namespace",
                    ns,
                    "--wait=false",
                ],
                env=env,
                capture_output=True,
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.operator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="5 clusters, 1 round")
    parser.add_argument("--clusters", type=int, default=None, help="clusters created at once")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (medians reported)")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args(argv)
    n = args.clusters or (5 if args.quick else 20)
    rounds = args.rounds or (1 if args.quick else 3)
    env = testenv_env()
    os.environ["KUBECONFIG"] = env["KUBECONFIG"]
    config.load_kube_config(env["KUBECONFIG"])  # type: ignore[no-untyped-call]
    kubectl(
        env,
        "apply",
        "--server-side",
        "--force-conflicts",
        *[a for c in CRDS for a in ("-f", str(c))],
    )
    kubectl(env, "wait", "--for=condition=Established", "crd/plantdclusters.plantd.io")
    log_dir = Path(tempfile.gettempdir()) / "plantd-bench-operator"
    log_dir.mkdir(parents=True, exist_ok=True)
    results = [round_(env, n, log_dir) for _ in range(rounds)]
    med = {k: statistics.median(r[k] for r in results) for k in results[0]}
    rss_peak = max(r["rss_mb"] for r in results)
    print(f"plantd operator benchmark: {rounds} round(s), medians; {PODS_PER_CLUSTER} pods/cluster")
    print(f"  floor: bare Deployment ({PODS_PER_CLUSTER} pods) Ready       {med['floor_1']:7.2f} s")
    print(f"  floor: {n} bare Deployments at once, last Ready   {med['floor_n']:7.2f} s")
    print(
        f"  1 cluster: children applied after create         {med['applied_1']:7.2f} s"
        "   (target <= 1 s)"
    )
    print(
        f"  1 cluster: Ready=True after create               {med['ready_1']:7.2f} s   "
        f"ratio to floor {med['ready_1'] / med['floor_1']:.2f} (target <= 1.5); "
        f"to the same-shape floor {med['ready_1'] / med['floor_shape']:.2f}"
    )
    print(
        f"  {n} clusters at once: last Ready=True              {med['ready_n_max']:7.2f} s   "
        f"ratio to 1 cluster {med['ready_n_max'] / med['ready_1']:.2f} (target <= 2); "
        f"ratio to {n}-Deployment floor {med['ready_n_max'] / med['floor_n']:.2f}"
    )
    print(f"  {n} clusters at once: median Ready=True            {med['ready_n_median']:7.2f} s")
    print(
        f"  operator peak RSS                                {rss_peak:7.1f} MB  (target < 150 MB)"
    )
    print(
        f"  operator CPU over the round                      {med['cpu_s']:7.2f} s "
        f"({med['cpu_s'] / med['wall_s'] * 100:.0f}% of one core; "
        f"{med['cpu_s'] / (n + 1) * 1000:.0f} ms per cluster)"
    )
    if args.json:
        print(json.dumps({"rounds": results, "median": med, "clusters": n}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
