"""Benchmark the PlantdCluster operator against the test control plane (hack/testenv).

    python -m bench.operator            # 1 and 20 clusters, 3 rounds, medians
    python -m bench.operator --quick    # 1 and 5 clusters, 1 round

Measures, in the same run and on the same control plane (medians over rounds; the single-
cluster figures also over --singles repetitions per round, interleaved with their floors):
  * floors: bare Deployments, no operator, until Ready: one Deployment with a cluster's pod
    count (the issue's floor), a cluster's shape (one one-pod Deployment per component), and
    for the burst N Deployments of a cluster's pods and N clusters' shape;
  * time from creating a PlantdCluster to its children applied and to Ready=True, for one
    cluster and for N clusters created at once;
  * the operator's peak RSS and CPU.
Prints figures and ratios to the floors. Needs the test cluster up (hack/testenv/up.sh).
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

from plantd_operator import secrets as op_secrets
from plantd_operator.builders import render_children
from plantd_operator.context import ClusterContext
from plantd_operator.kube import Kube
from plantd_operator.models import parse_spec
from plantd_operator.reconcile import FIRST_KINDS, WORKLOAD_KINDS

ROOT = Path(__file__).resolve().parent.parent
CRDS = [ROOT / "crds" / "plantd.io_plantdclusters.yaml"]
# External Redis: three pods per cluster (broker, state, identity), no volume to provision.
SPEC = {
    "state": {
        "redis": {
            "mode": "external",
            "external": {"address": "redis.bench:6379", "tls": {"enabled": True}},
        }
    }
}
PODS_PER_CLUSTER = 3
SINGLE_KEYS = ("floor_1", "floor_shape", "floor_direct", "applied_1", "ready_1")


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
    def __init__(
        self, env: dict[str, str], namespaces: list[str], log: Path, log_level: str = "warning"
    ) -> None:
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
            log_level,
            # As deployed: leader election on (its Lease in the first watched namespace).
            "--leader-elect-namespace",
            namespaces[0],
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


def direct_cluster(kube: Kube, ns: str, name: str) -> tuple[float, list[str]]:
    """The operator's own objects for one cluster, applied by the bench itself in the
    operator's order (Services in the background; identities, settings and Secrets; workloads;
    the rest), with no operator and no owner (so no garbage collection). Returns the start
    time and the workloads' names."""
    ctx = ClusterContext(name=name, namespace=ns, uid="none", spec=parse_spec(SPEC))
    children = render_children(ctx)
    generated = [
        op_secrets.manifest(ctx, sname, op_secrets.missing_entries(kind, {}))
        for sname, kind in op_secrets.wanted(ctx).items()
    ]
    for obj in [*children, *generated]:
        obj["metadata"].pop("ownerReferences", None)
    first = [c for c in children if c["kind"] in FIRST_KINDS] + generated
    workloads = [c for c in children if c["kind"] in WORKLOAD_KINDS]
    services = [c for c in children if c["kind"] == "Service"]
    done = FIRST_KINDS | WORKLOAD_KINDS | {"Service"}
    rest = [c for c in children if c["kind"] not in done]

    def put(obj: dict[str, Any]) -> None:
        if obj["kind"] == "Secret":
            kube.create(obj)
        else:
            kube.apply(obj)

    background = [threading.Thread(target=put, args=(o,)) for o in services]
    t0 = time.perf_counter()
    for t in background:
        t.start()
    create_all(put, first)
    create_all(put, workloads)
    create_all(put, rest)
    for t in background:
        t.join()
    return t0, [w["metadata"]["name"] for w in workloads]


def pdc_manifest(name: str, ns: str) -> dict[str, Any]:
    return {
        "apiVersion": "plantd.io/v1alpha1",
        "kind": "PlantdCluster",
        "metadata": {"name": name, "namespace": ns},
        "spec": SPEC,
    }


def round_(env: dict[str, str], n: int, singles: int, log_dir: Path) -> dict[str, Any]:
    suffix = secrets.token_hex(3)
    ns_floor, ns_one, ns_many = (f"bench-{k}-{suffix}" for k in ("floor", "one", "many"))
    for ns in (ns_floor, ns_one, ns_many):
        kubectl(env, "create", "namespace", ns)
    # Generic (dict) API for every watch and create: the bench's own CPU stays out of the way
    # of the control plane it measures (typed models cost a deserialisation per event).
    custom = client.CustomObjectsApi()
    op = Operator(env, [ns_one, ns_many], log_dir / f"operator-{suffix}.log")
    try:
        op.wait_ready()
        dep_w = Watcher(
            custom.list_namespaced_custom_object,
            ("apps", "v1", ns_floor, "deployments"),
            deployment_ready,
        )
        pdc_w = Watcher(
            custom.list_namespaced_custom_object,
            ("plantd.io", "v1alpha1", ns_one, "plantdclusters"),
            cluster_ready,
        )
        many_w = Watcher(
            custom.list_namespaced_custom_object,
            ("plantd.io", "v1alpha1", ns_many, "plantdclusters"),
            cluster_ready,
        )
        for w in (dep_w, pdc_w, many_w):
            w.start()
        time.sleep(0.5)  # watches established

        def mk_dep(o: dict[str, Any]) -> None:
            custom.create_namespaced_custom_object(
                "apps", "v1", o["metadata"]["namespace"], "deployments", o
            )

        def mk_pdc(o: dict[str, Any]) -> None:
            custom.create_namespaced_custom_object(
                "plantd.io", "v1alpha1", o["metadata"]["namespace"], "plantdclusters", o
            )

        def floor(names: list[str], pods: int) -> float:
            t0 = create_all(mk_dep, [bare_deployment(x, ns_floor, pods) for x in names])
            return max(dep_w.wait(names, 600).values()) - t0

        kube = Kube()
        samples: dict[str, list[float]] = {k: [] for k in SINGLE_KEYS}
        for i in range(singles):
            # Interleaved, so load from elsewhere on the machine hits floors and clusters alike.
            samples["floor_1"].append(floor([f"f1-{i}"], PODS_PER_CLUSTER))
            samples["floor_shape"].append(floor([f"fs{i}-{c}" for c in range(PODS_PER_CLUSTER)], 1))
            time.sleep(0.3)
            t0, workloads = direct_cluster(kube, ns_floor, f"d{i}")
            samples["floor_direct"].append(max(dep_w.wait(workloads, 120).values()) - t0)
            time.sleep(0.3)
            applied0 = op.metric("plantd_operator_reconciliations_total", result="applied")
            t0 = create_all(mk_pdc, [pdc_manifest(f"one-{i}", ns_one)])
            deadline = time.monotonic() + 60
            # Poll gently: /metrics is served by the operator's own event loop.
            while op.metric("plantd_operator_reconciliations_total", result="applied") <= applied0:
                if time.monotonic() > deadline:
                    raise TimeoutError("no reconcile of the single cluster")
                time.sleep(0.02)
            samples["applied_1"].append(time.perf_counter() - t0)
            samples["ready_1"].append(pdc_w.wait([f"one-{i}"], 120)[f"one-{i}"] - t0)
            time.sleep(0.3)  # let the control plane settle between samples
        out: dict[str, Any] = {k: statistics.median(v) for k, v in samples.items()}
        out["samples"] = samples
        # Bursts: N Deployments of a cluster's pods; N clusters' shape; N PlantdClusters.
        out["floor_n"] = floor([f"fn{i}" for i in range(n)], PODS_PER_CLUSTER)
        time.sleep(1)
        out["floor_n_shape"] = floor(
            [f"fm{i}-{c}" for i in range(n) for c in range(PODS_PER_CLUSTER)], 1
        )
        time.sleep(1)
        names = [f"c{i}" for i in range(n)]
        t0 = create_all(mk_pdc, [pdc_manifest(x, ns_many) for x in names])
        done = many_w.wait(names, 600)
        out["ready_n_max"] = max(done.values()) - t0
        out["ready_n_median"] = statistics.median(done.values()) - t0
        out["rss_mb"] = op.peak_rss_mb()
        out["cpu_s"] = op.cpu_seconds() - op.cpu_start
        out["wall_s"] = time.perf_counter() - op.started
        for w in (dep_w, pdc_w, many_w):
            w.stop.set()
    finally:
        op.stop()
        # Deleted and waited for, so the next round starts on a quiet control plane (no
        # finalizer: PlantdClusters go with their namespace, operator running or not).
        subprocess.run(
            [
                str(Path(env["PLANTD_TESTENV_BIN"]) / "kubectl"),
                "delete",
                "namespace",
                ns_floor,
                ns_one,
                ns_many,
                "--wait=true",
                "--timeout=300s",
            ],
            env=env,
            capture_output=True,
        )
    return out


def report(med: dict[str, float], n: int, rounds: int, singles: int, rss_peak: float) -> None:
    def row(label: str, value: float, note: str = "", unit: str = "s") -> None:
        print(f"  {label:<58}{value:8.2f} {unit}   {note}".rstrip())

    def verdict(ratio: float, target: float) -> str:
        return f"{ratio:.2f}x (target <= {target:g}x: {'met' if ratio <= target else 'NOT met'})"

    print(
        f"plantd operator benchmark: {rounds} round(s) x {singles} single-cluster samples, "
        f"medians; {PODS_PER_CLUSTER} pods per cluster (broker, state, identity)"
    )
    print("Floors (bare Deployments, no operator; same control plane, same run):")
    row(f"one Deployment of {PODS_PER_CLUSTER} pods Ready (the issue's floor)", med["floor_1"])
    row(
        f"{PODS_PER_CLUSTER} one-pod Deployments at once (a cluster's shape)",
        med["floor_shape"],
        f"{med['floor_shape'] / med['floor_1']:.2f}x the floor",
    )
    row(
        "a cluster's own objects applied by the bench, no operator",
        med["floor_direct"],
        f"{med['floor_direct'] / med['floor_1']:.2f}x the floor",
    )
    row(f"{n} Deployments of {PODS_PER_CLUSTER} pods at once", med["floor_n"])
    row(
        f"{n * PODS_PER_CLUSTER} one-pod Deployments at once ({n} clusters' shape)",
        med["floor_n_shape"],
    )
    print("One PlantdCluster:")
    row("every child applied after create", med["applied_1"], "(target <= 1 s)")
    row(
        "Ready=True after create",
        med["ready_1"],
        f"to the floor {verdict(med['ready_1'] / med['floor_1'], 1.5)}; "
        f"to a cluster's shape {med['ready_1'] / med['floor_shape']:.2f}x",
    )
    row(
        "  the operator's own cost (Ready minus the same objects applied directly)",
        med["ready_1"] - med["floor_direct"],
        f"{med['ready_1'] / med['floor_direct']:.2f}x that floor",
    )
    print(f"{n} PlantdClusters at once:")
    row(
        "last Ready=True",
        med["ready_n_max"],
        f"to one cluster {verdict(med['ready_n_max'] / med['ready_1'], 2)}; "
        f"to the {n * PODS_PER_CLUSTER}-Deployment shape floor "
        f"{med['ready_n_max'] / med['floor_n_shape']:.2f}x",
    )
    row("median Ready=True", med["ready_n_median"])
    print("Operator:")
    row("peak RSS", rss_peak, "(target < 150 MB)", unit="MB")
    row(
        "CPU over the round",
        med["cpu_s"],
        f"({med['cpu_s'] / med['wall_s'] * 100:.0f}% of one core; "
        f"{med['cpu_s'] / (n + singles) * 1000:.0f} ms per cluster)",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.operator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="5 clusters, 1 round")
    parser.add_argument("--clusters", type=int, default=None, help="clusters created at once")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (medians reported)")
    parser.add_argument(
        "--singles", type=int, default=None, help="single-cluster samples per round (default 3)"
    )
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args(argv)
    n = args.clusters or (5 if args.quick else 20)
    rounds = args.rounds or (1 if args.quick else 3)
    singles = args.singles or 3
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
    results = [round_(env, n, singles, log_dir) for _ in range(rounds)]
    keys = [k for k in results[0] if k != "samples"]
    med = {k: statistics.median(r[k] for r in results) for k in keys}
    # Single-cluster figures: the median of every sample of every round.
    for k in SINGLE_KEYS:
        med[k] = statistics.median(x for r in results for x in r["samples"][k])
    report(med, n, rounds, singles, max(r["rss_mb"] for r in results))
    if args.json:
        print(json.dumps({"rounds": results, "median": med, "clusters": n}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
