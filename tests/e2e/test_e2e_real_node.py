"""From `helm install` to a working plant, on a real node (hack/testenv/node.sh): real
containers of the image built here, real readiness, real Services, a real volume.

The tests run in file order and build on each other (one chart, one PlantdCluster): install
the chart, the cluster becomes Ready from real pods, a client pod inside the cluster talks to
it through its Services (gRPC sidecar, broker, state, an enrolled echo module), then the plant
survives losing its Redis, state and broker pods and a rolling update under load, the chart
is upgraded and `helm test` passes, and uninstalling leaves what docs/operator.md says.
Figures (times, request counts) are printed; run with -s to see them.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2ekit import (
    IMAGE,
    NODE,
    OPERATOR_NS,
    OPERATOR_RELEASE,
    PREVIOUS_CHART_REVISION,
    REDIS_IMAGE,
    ROOT,
    RealNodeCluster,
    previous_chart,
)
from tests.k8s.k8skit import condition, wait_for
from tests.kit.procs import PYTHON

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

RELEASE = OPERATOR_RELEASE
NS = "plant-e2e"
NAME = "plant"
GATEWAY = f"{NAME}-state:50051"
CLIENT = "e2e-client"
REPO, TAG = IMAGE.rsplit(":", 1)
PASSWORD = "e2e-Admin-passw0rd-long"  # a throwaway test cluster's admin
CHART = ROOT / "charts" / "plantd-operator"
SCRIPT = Path(__file__).with_name("incluster.py")
CHART_VALUES = [
    f"image.repository={REPO}",
    f"image.tag={TAG}",
    "image.pullPolicy=Never",
    f"defaultImage.repository={REPO}",
    f"defaultImage.version={TAG}",
]


def figure(what: str, value: object) -> None:
    print(f"[e2e] {what}: {value}")


SERVICES = {"org.plantd.State", "org.plantd.Identity", "e2e.module.Echo"}


@pytest.fixture(scope="module")
def cluster(real_node: RealNodeCluster) -> Iterator[RealNodeCluster]:
    # A node kept from an earlier run (PLANTD_E2E_KEEP_NODE=1) may still hold this module's work.
    real_node.uninstall_operator()
    real_node.kubectl(
        "delete", "namespace", NS, "--ignore-not-found", "--timeout=120s", timeout=150, check=False
    )
    yield real_node
    # Leave nothing behind for a kept node (PLANTD_E2E_KEEP_NODE=1).
    real_node.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=false", check=False)
    real_node.helm("uninstall", RELEASE, "-n", OPERATOR_NS, check=False)


def ready(pod: dict[str, Any]) -> bool:
    return (condition(pod, "Ready") or {}).get("status") == "True"


def in_client(c: RealNodeCluster, *args: str, timeout: float = 120) -> dict[str, Any]:
    proc = c.kubectl(
        "exec", "-n", NS, CLIENT, "--", "python3", "/e2e/incluster.py", *args, timeout=timeout
    )
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def wait_cluster_ready(c: RealNodeCluster, timeout: int = 300) -> None:
    c.kubectl(
        "wait",
        "-n",
        NS,
        f"pdc/{NAME}",
        "--for=condition=Ready",
        f"--timeout={timeout}s",
        timeout=timeout + 30,
    )


def component_pods(c: RealNodeCluster, component: str) -> list[dict[str, Any]]:
    return c.list(
        "pods", NS, f"app.kubernetes.io/instance={NAME},app.kubernetes.io/component={component}"
    )


def test_helm_install_runs_the_operator_as_real_pods(cluster: RealNodeCluster) -> None:
    start = time.monotonic()
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    args = ["install", RELEASE, str(CHART), "-n", OPERATOR_NS, "--create-namespace", "--wait"]
    for value in CHART_VALUES:
        args += ["--set", value]
    cluster.helm(*args, "--timeout", "5m", timeout=360)
    figure("helm install --wait", f"{time.monotonic() - start:.1f}s")
    operators = cluster.list("pods", OPERATOR_NS, "app.kubernetes.io/name=plantd-operator")
    assert len(operators) == 2 and all(ready(p) for p in operators)
    for pod in operators:
        assert pod["spec"]["nodeName"] == NODE
        container = pod["spec"]["containers"][0]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    # One leader, elected through the chart's Lease RBAC, among these pods (a Lease left by an
    # earlier install expires first).
    names = {p["metadata"]["name"] for p in operators}

    def leader() -> str | None:
        for lease in cluster.list("leases", OPERATOR_NS):
            holder = lease["spec"].get("holderIdentity") or ""
            if any(holder.startswith(n) for n in names):
                return str(holder)
        return None

    figure("operator leader", wait_for(leader, "an operator pod holding the Lease", 90))
    # Streaming through the kubelet (exec), as a user debugging a pod would.
    uid = cluster.kubectl(
        "exec", "-n", OPERATOR_NS, operators[0]["metadata"]["name"], "--", "id", "-u"
    )
    assert uid.stdout.strip() == "10001"


def test_the_plantd_cluster_becomes_ready_from_real_pods(cluster: RealNodeCluster) -> None:
    bootstrap = {
        "username": "admin",
        "email": "admin@e2e.test",
        "password": PASSWORD,
        "must_change_password": False,
    }
    secret_meta = {"namespace": NS, "labels": {"plantd.io/secret-for": NAME}}
    cluster.apply(
        [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "plant-admin", **secret_meta},
                "stringData": {"bootstrap.json": json.dumps(bootstrap), "password": PASSWORD},
            },
        ]
    )
    start = time.monotonic()
    cluster.apply(
        [
            {
                "apiVersion": "plantd.io/v1alpha1",
                "kind": "PlantdCluster",
                "metadata": {"name": NAME, "namespace": NS},
                "spec": {
                    "imagePullPolicy": "Never",
                    "identity": {"bootstrapSecretRef": {"name": "plant-admin"}},
                    "state": {"redis": {"managed": {"image": REDIS_IMAGE}}},
                },
            }
        ]
    )
    wait_cluster_ready(cluster)
    figure("PlantdCluster Ready", f"{time.monotonic() - start:.1f}s")
    plant = cluster.list("pods", NS, f"app.kubernetes.io/instance={NAME}")
    components = {p["metadata"]["labels"].get("app.kubernetes.io/component") for p in plant}
    assert {"broker", "state", "identity", "redis"} <= components, components
    for pod in plant:
        assert pod["spec"]["nodeName"] == NODE
        assert ready(pod), pod["metadata"]["name"]
        restarts = {s["name"]: s["restartCount"] for s in pod["status"]["containerStatuses"]}
        assert all(n == 0 for n in restarts.values()), (pod["metadata"]["name"], restarts)
    claims = cluster.list("pvc", NS)
    assert claims and all(c["status"]["phase"] == "Bound" for c in claims), claims
    # Ready means the components' own readiness: the workers are registered with the broker.
    pdc = cluster.get("pdc", NAME, NS)
    assert condition(pdc, "Ready")["status"] == "True"  # type: ignore[index]


def test_a_client_inside_the_cluster_uses_the_plant(
    cluster: RealNodeCluster, tmp_path: Path
) -> None:
    script = SCRIPT.read_text()
    cluster.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "e2e-script", "namespace": NS},
                "data": {"incluster.py": script},
            },
            client_pod(),
        ]
    )
    wait_for(lambda: ready(cluster.get("pod", CLIENT, NS) or {}), "the client pod ready", 120)
    checked = wait_for(lambda: in_client(cluster, "check", GATEWAY), "a state round trip", 120, 3)
    assert checked["value"] == "world"
    assert {"org.plantd.State", "org.plantd.Identity"} <= set(checked["services"])

    # A module written by a user: its own CURVE key, enrolled with identity through the
    # gateway, serving e2e.module.Echo on the cluster's broker.
    keys = tmp_path / "keys"
    subprocess.run(
        [
            PYTHON,
            "-m",
            "plantd.cli.plantd",
            "keys",
            "generate",
            "--dir",
            str(keys),
            "--name",
            "echo",
            "--json",
        ],
        check=True,
        capture_output=True,
    )
    public = (keys / "echo.key").read_text()
    secret = (keys / "echo.key_secret").read_text()
    z85 = next(line.split('"')[1] for line in public.splitlines() if "public-key" in line)
    curve = cluster.get("secret", f"{NAME}-curve", NS)
    assert curve is not None
    broker_key = base64.b64decode(curve["data"]["broker.key"]).decode()
    in_client(cluster, "enroll", GATEWAY, "e2e-echo", z85)
    cluster.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "e2e-echo-keys", "namespace": NS},
                "stringData": {"echo.key_secret": secret, "broker.key": broker_key},
            },
            echo_pod(),
        ]
    )
    wait_for(
        lambda: ready(cluster.get("pod", "e2e-echo", NS) or {}), "the echo module registered", 120
    )
    echoed = wait_for(
        lambda: in_client(cluster, "check", GATEWAY, "--echo"), "an echo round trip", 60, 2
    )
    assert echoed["echo"] == ["ping", "e2e"]


def explain(c: RealNodeCluster, components: tuple[str, ...]) -> str:
    """What the pods of ``components`` were doing: status, restarts, and the logs of each
    container (the previous run's too): printed when a recovery takes too long."""
    lines = [c.kubectl("get", "pods", "-n", NS, "-o", "wide", check=False).stdout]
    for component in components:
        for pod in component_pods(c, component):
            name = pod["metadata"]["name"]
            for status in pod.get("status", {}).get("containerStatuses", []):
                container = status["name"]
                lines.append(
                    f"--- {name}/{container}: ready={status.get('ready')} "
                    f"restarts={status.get('restartCount')} state={status.get('state')}"
                )
                for previous in ("--previous", ""):
                    logs = c.kubectl(
                        "logs",
                        "-n",
                        NS,
                        name,
                        "-c",
                        container,
                        "--tail=30",
                        *([previous] if previous else []),
                        check=False,
                    )
                    if logs.returncode == 0 and logs.stdout.strip():
                        lines.append(f"[{previous or 'current'}]\n{logs.stdout}")
    return "\n".join(lines)


def test_losing_the_redis_pod_loses_no_acknowledged_write(cluster: RealNodeCluster) -> None:
    in_client(cluster, "check", GATEWAY)  # writes e2e/hello = world, acknowledged
    (redis,) = component_pods(cluster, "redis")
    start = time.monotonic()
    cluster.kubectl("delete", "pod", "-n", NS, redis["metadata"]["name"], "--wait=false")
    wait_for(
        lambda: component_pods(cluster, "redis")[0]["metadata"]["uid"] != redis["metadata"]["uid"],
        "a new redis pod",
        60,
    )
    try:
        got = wait_for(
            lambda: in_client(cluster, "get", GATEWAY, "e2e", "hello"),
            "state answering again",
            180,
            2,
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{explain(cluster, ('redis', 'state'))}") from None
    figure("redis pod replaced, state answering", f"{time.monotonic() - start:.1f}s")
    assert got["value"] == "world"  # the AOF on the volume kept it


@pytest.mark.parametrize("component", ["state", "broker"])
def test_the_plant_recovers_from_losing_a_pod(cluster: RealNodeCluster, component: str) -> None:
    before = {p["metadata"]["uid"] for p in component_pods(cluster, component)}
    start = time.monotonic()
    cluster.kubectl(
        "delete",
        "pod",
        "-n",
        NS,
        "-l",
        f"app.kubernetes.io/instance={NAME},app.kubernetes.io/component={component}",
        "--wait=false",
    )
    wait_for(
        lambda: all(
            p["metadata"]["uid"] not in before and ready(p)
            for p in component_pods(cluster, component)
        ),
        f"a new {component} pod ready",
        180,
    )

    def every_service_back() -> dict[str, Any]:
        # Workers (ours and the echo module) re-register with a new broker when their
        # heartbeats go unanswered, so the plant is back once all of them are listed again.
        checked = in_client(cluster, "check", GATEWAY, "--echo")
        assert set(checked["services"]) >= SERVICES, checked["services"]
        return checked

    checked = wait_for(every_service_back, "every service registered and answering", 120, 2)
    figure(f"{component} pod replaced, plant answering", f"{time.monotonic() - start:.1f}s")
    assert checked["echo"] == ["ping", "e2e"]
    assert in_client(cluster, "get", GATEWAY, "e2e", "hello")["value"] == "world"


class StateLoad:
    """``incluster.py load`` in the client pod: state writes back to back through the gateway
    until stopped, then every acknowledged one read back."""

    def __init__(self, cluster: RealNodeCluster) -> None:
        self.cluster = cluster
        cluster.kubectl("exec", "-n", NS, CLIENT, "--", "rm", "-f", "/tmp/stop", "/tmp/stop.acked")
        self.proc = subprocess.Popen(
            [
                str(cluster.bin / "kubectl"),
                "--kubeconfig",
                cluster.kubeconfig,
                "exec",
                "-n",
                NS,
                CLIENT,
                "--",
                "python3",
                "/e2e/incluster.py",
                "load",
                GATEWAY,
                "/tmp/stop",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def acked_at_least(self, count: int) -> int | None:
        # The load's own count of acknowledged writes (incluster.py load keeps it there).
        out = self.cluster.kubectl(
            "exec", "-n", NS, CLIENT, "--", "cat", "/tmp/stop.acked", check=False
        ).stdout.strip()
        return int(out) if out.isdigit() and int(out) >= count else None

    def stop(self) -> None:
        self.cluster.kubectl("exec", "-n", NS, CLIENT, "--", "touch", "/tmp/stop", check=False)

    def result(self) -> dict[str, Any]:
        out, err = self.proc.communicate(timeout=300)
        assert self.proc.returncode == 0, err[-2000:]
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return result


def test_a_rolling_update_under_load_loses_no_acknowledged_write(cluster: RealNodeCluster) -> None:
    load = StateLoad(cluster)
    acked_at_least = load.acked_at_least
    try:
        before_roll = wait_for(
            lambda: acked_at_least(10), "writes acknowledged before the roll", 60, 0.5
        )
        old = {
            p["metadata"]["uid"]
            for p in cluster.list("pods", NS, f"app.kubernetes.io/instance={NAME}")
        }
        start = time.monotonic()
        cluster.kubectl(
            "patch", "pdc", NAME, "-n", NS, "--type=merge", "-p", '{"spec":{"logLevel":"debug"}}'
        )
        for component in ("broker", "state", "identity"):
            wait_for(
                lambda c=component: (
                    all(
                        p["metadata"]["uid"] not in old and ready(p)
                        for p in component_pods(cluster, c)
                    )
                    and component_pods(cluster, c)
                ),
                f"{component} rolled",
                300,
                2,
            )
        wait_cluster_ready(cluster)
        figure(
            "rolling update (broker, state, identity) to Ready", f"{time.monotonic() - start:.1f}s"
        )
        # And some acknowledged by the rolled plant, before the load stops.
        at_ready = wait_for(lambda: acked_at_least(before_roll), "the load's count", 30, 0.5)
        wait_for(lambda: acked_at_least(at_ready + 10), "writes acknowledged after it", 60, 0.5)
    finally:
        load.stop()
    result = load.result()
    figure("requests during the rolling update", result)
    assert result["acked"] > 20
    assert result["lost"] == 0
    # Each component was replaced one pod at a time behind its Service; a request that hit a
    # pod being replaced failed with a status (counted above), never hung or was lost.
    assert result["failed"] < result["acked"]


def test_two_brokers_serve_one_plant_and_one_can_go_under_load(cluster: RealNodeCluster) -> None:
    """broker.replicas 2 (docs/ha.md): every worker, ours and the module's, registers with both
    broker pods (found through the headless Service); then one broker pod is deleted under
    load, and nothing acknowledged is lost."""
    start = time.monotonic()
    cluster.kubectl(
        "patch", "pdc", NAME, "-n", NS, "--type=merge", "-p", '{"spec":{"broker":{"replicas":2}}}'
    )

    def two_brokers() -> list[str] | None:
        pods = component_pods(cluster, "broker")
        ips = [p["status"].get("podIP", "") for p in pods if ready(p)]
        return ips if len(pods) == 2 and len(ips) == 2 else None

    ips = wait_for(two_brokers, "two broker pods ready", 180, 1)

    def registered_with_both(pod: str, container: str) -> bool:
        logs = cluster.kubectl("logs", "-n", NS, pod, "-c", container, check=False).stdout
        return all(f"serving on broker tcp://{ip}:9797" in logs for ip in ips)

    for component, container in (("state", "state"), ("identity", "identity")):
        (pod,) = component_pods(cluster, component)
        name = pod["metadata"]["name"]
        wait_for(lambda n=name, c=container: registered_with_both(n, c),
                 f"{component} registered with both brokers", 60, 1)  # fmt: skip
    wait_for(lambda: registered_with_both("e2e-echo", "echo"), "the module on both", 60, 1)
    wait_cluster_ready(cluster)
    figure("broker.replicas 2, every worker on both brokers", f"{time.monotonic() - start:.1f}s")
    assert in_client(cluster, "check", GATEWAY, "--echo")["echo"] == ["ping", "e2e"]

    load = StateLoad(cluster)
    try:
        acked = wait_for(lambda: load.acked_at_least(10), "writes before the broker goes", 60, 0.5)
        (gone, *_) = component_pods(cluster, "broker")
        deleted = time.monotonic()
        cluster.kubectl("delete", "pod", "-n", NS, gone["metadata"]["name"], "--wait=false")
        wait_for(lambda: load.acked_at_least(acked + 30), "writes after it", 90, 0.5)
        figure("30 writes acknowledged after a broker pod was deleted",
               f"{time.monotonic() - deleted:.1f}s")  # fmt: skip
    finally:
        load.stop()
    result = load.result()
    figure("requests while one of two brokers went", result)
    assert result["lost"] == 0
    assert result["failed"] < result["acked"]


def test_a_rolling_restart_of_the_brokers_answers_every_request(cluster: RealNodeCluster) -> None:
    """Drain-first rollouts (docs/ha.md) with broker.replicas 2 from the test above: a new
    broker turns ready only once state and identity registered with it, an old one keeps
    serving through preStop while it leaves the Service, then refuses (the gateway sends the
    refused request again, to a ready broker) and drains. Target: >= 99.9 % answered, none of
    the acknowledged writes lost."""

    def two_settled_brokers() -> set[str] | None:
        # The pod the test above deleted may still be terminating next to its replacement.
        pods = component_pods(cluster, "broker")
        settled = [p for p in pods if ready(p) and not p["metadata"].get("deletionTimestamp")]
        return {p["metadata"]["uid"] for p in pods} if len(pods) == len(settled) == 2 else None

    old = wait_for(two_settled_brokers, "two broker pods, none terminating", 120, 1)
    load = StateLoad(cluster)
    try:
        acked = wait_for(lambda: load.acked_at_least(10), "writes before the restart", 60, 0.5)
        start = time.monotonic()
        cluster.kubectl("rollout", "restart", "deployment", f"{NAME}-broker", "-n", NS)
        cluster.kubectl(
            "rollout", "status", "deployment", f"{NAME}-broker", "-n", NS, "--timeout=300s",
            timeout=330,
        )  # fmt: skip
        wait_for(
            lambda: all(p["metadata"]["uid"] not in old for p in component_pods(cluster, "broker")),
            "both old broker pods gone",
            120,
            1,
        )
        figure("rolling restart of 2 brokers", f"{time.monotonic() - start:.1f}s")
        wait_for(lambda: load.acked_at_least(acked + 30), "writes after it", 90, 0.5)
    finally:
        load.stop()
    result = load.result()
    answered = result["acked"] / max(1, result["attempted"])
    figure("requests during the rolling restart of the brokers", {**result, "answered": answered})
    assert result["lost"] == 0
    assert answered >= 0.999, result


def store_status(c: RealNodeCluster) -> dict[str, Any]:
    pdc = c.get("pdc", NAME, NS) or {}
    store: dict[str, Any] = (pdc.get("status") or {}).get("store") or {}
    return store


def test_redis_grows_to_sentinels_and_loses_no_acknowledged_write_when_its_primary_goes(
    cluster: RealNodeCluster,
) -> None:
    """state.redis.managed.replicas 1 -> 3 (a primary, two replicas, a Sentinel beside each)
    with waitReplicas 1; then, under load, the primary pod is deleted (its preStop hands the
    role to a replica) and the next primary crashes (SHUTDOWN NOSAVE NOW: no handover, the
    Sentinels must notice). Nothing acknowledged is lost; status.store reports each failover."""
    start = time.monotonic()
    grow = {"spec": {"state": {"redis": {"managed": {"replicas": 3}, "waitReplicas": 1}}}}
    cluster.kubectl("patch", "pdc", NAME, "-n", NS, "--type=merge", "-p", json.dumps(grow))
    try:
        settled = wait_for(
            lambda: (
                (s := store_status(cluster)).get("replicasInSync") == 2
                and s.get("sentinels") == 3
                and len(component_pods(cluster, "redis")) == 3
                and all(ready(p) for p in component_pods(cluster, "redis"))
                and s
            ),
            "three Redis pods, two replicas in sync, three Sentinels",
            300,
            2,
        )
        wait_cluster_ready(cluster)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{explain(cluster, ('redis', 'state'))}") from None
    figure("redis 1 -> 3 pods with Sentinels, Ready", f"{time.monotonic() - start:.1f}s")
    pdc = cluster.get("pdc", NAME, NS)
    assert condition(pdc, "StateStoreReady")["reason"] == "SentinelReady"  # type: ignore[index]
    # The one pod's data came along: it was the first primary, the replicas synced from it.
    assert in_client(cluster, "get", GATEWAY, "e2e", "hello")["value"] == "world"

    load = StateLoad(cluster)
    try:
        acked = wait_for(lambda: load.acked_at_least(10), "writes acknowledged", 60, 0.5)
        # 1. A planned stop: the primary pod is deleted; its preStop asks for a failover.
        first = settled["primary"]
        t0 = time.monotonic()
        cluster.kubectl("delete", "pod", "-n", NS, first, "--wait=false")
        second = wait_for(
            lambda: (p := store_status(cluster).get("primary")) != first and p,
            "the operator reporting a new primary after the delete",
            90,
            1,
        )
        figure("primary deleted: new primary reported", f"{time.monotonic() - t0:.1f}s")
        acked = wait_for(lambda: load.acked_at_least(acked + 10), "writes after it", 60, 0.5)
        wait_for(
            lambda: store_status(cluster).get("replicasInSync") == 2,
            "the deleted pod back as a replica",
            180,
            2,
        )
        # 2. A crash: the new primary stops at once, without handing over.
        t1 = time.monotonic()
        cluster.kubectl(
            "exec", "-n", NS, second, "-c", "redis", "--",
            "sh", "-c", "REDISCLI_AUTH=$(cat /etc/redis-auth/password) "
            "redis-cli --no-auth-warning SHUTDOWN NOSAVE NOW",
            check=False,
        )  # fmt: skip
        third = wait_for(
            lambda: (p := store_status(cluster).get("primary")) not in (second, None) and p,
            "the Sentinels promoting a replica after the crash",
            120,
            1,
        )
        figure("primary crashed: new primary reported", f"{time.monotonic() - t1:.1f}s")
        wait_for(lambda: load.acked_at_least(acked + 10), "writes after the crash", 60, 0.5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{explain(cluster, ('redis', 'state'))}") from None
    finally:
        load.stop()
    result = load.result()
    figure("requests across both failovers", result)
    assert result["lost"] == 0
    assert result["acked"] > 30
    store = store_status(cluster)
    assert store["lastFailover"]["to"] == third
    wait_cluster_ready(cluster)


def operator_revisions(c: RealNodeCluster) -> set[str]:
    """The chart revision (pod-template hash) of every running operator pod."""
    pods = c.list("pods", OPERATOR_NS, "app.kubernetes.io/name=plantd-operator")
    return {p["metadata"]["labels"].get("pod-template-hash", "") for p in pods if ready(p)}


def test_helm_upgrade_from_the_previous_chart_and_helm_test(
    cluster: RealNodeCluster, tmp_path: Path
) -> None:
    # The previous chart version, installed with the plant present (uninstalling the current
    # release keeps the CRD and the plant: the last test checks that in detail).
    previous = previous_chart(tmp_path)
    cluster.uninstall_operator(check=True)
    old = ["install", RELEASE, str(previous), "-n", OPERATOR_NS, "--wait", "--timeout", "5m"]
    for value in CHART_VALUES:
        old += ["--set", value]
    cluster.helm(*old, timeout=360)
    wait_cluster_ready(cluster)
    before = operator_revisions(cluster)
    start = time.monotonic()
    args = ["upgrade", RELEASE, str(CHART), "-n", OPERATOR_NS, "--wait", "--timeout", "5m"]
    for value in [
        *CHART_VALUES,
        "logLevel=debug",
        f"tests.plantdCluster={NAME}",
        f"tests.namespace={NS}",
        "tests.credentialsSecret.name=plant-admin",
        "tests.echoService=e2e.module.Echo",
    ]:
        args += ["--set", value]
    cluster.helm(*args, timeout=360)
    figure(
        f"helm upgrade from the chart at {PREVIOUS_CHART_REVISION[:12]}",
        f"{time.monotonic() - start:.1f}s",
    )
    # The upgraded operator's pods replaced the previous chart's, and they keep the plant Ready.
    wait_for(
        lambda: (r := operator_revisions(cluster)) and not (r & before),
        "the upgraded operator pods ready and the previous chart's gone",
        180,
    )
    wait_cluster_ready(cluster)
    # Two test pods: the operator's /readyz, and the round trip in the cluster's namespace.
    start = time.monotonic()
    tested = cluster.helm(
        "test", RELEASE, "-n", OPERATOR_NS, "--timeout", "3m", timeout=240, check=False
    )
    figure("helm test", f"{time.monotonic() - start:.1f}s")
    assert tested.returncode == 0, tested.stdout[-3000:] + tested.stderr[-2000:]
    assert tested.stdout.count("Succeeded") >= 2, tested.stdout
    # `helm test --logs` reads test pods from the release's namespace only; the round trip
    # runs in the plant's (kept until the next `helm test`: before-hook-creation only).
    logs = cluster.kubectl("logs", "-n", NS, f"{RELEASE}-test-{NAME}").stdout
    assert "echo round trip to e2e.module.Echo, state wrote and read" in logs, logs


def test_helm_uninstall_keeps_the_crd_and_the_plant(cluster: RealNodeCluster) -> None:
    cluster.uninstall_operator(check=True)
    assert cluster.get("crd", "plantdclusters.plantd.io", "default") is not None
    pdc = cluster.get("pdc", NAME, NS)
    assert pdc is not None
    # Without its operator the plant keeps running as it was: nothing reconciles it.
    assert in_client(cluster, "get", GATEWAY, "e2e", "hello")["value"] == "world"
    # Deleting it takes every child with it (owner references), the claim too.
    cluster.kubectl("delete", "pdc", NAME, "-n", NS, "--wait=true", "--timeout=120s", timeout=150)
    wait_for(
        lambda: not component_pods(cluster, "state") and not cluster.list("pvc", NS),
        "children gone",
        180,
    )


def client_pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": CLIENT, "namespace": NS, "labels": {"plantd.io/client": "true"}},
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": restricted_pod(),
            "containers": [
                {
                    "name": "client",
                    "image": IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["python3", "-c", "import time; time.sleep(86400)"],
                    "env": [{"name": "PLANTD_E2E_PASSWORD_FILE", "value": "/etc/e2e/password"}],
                    "securityContext": restricted_container(),
                    "volumeMounts": [
                        {"name": "script", "mountPath": "/e2e", "readOnly": True},
                        {"name": "admin", "mountPath": "/etc/e2e", "readOnly": True},
                        {"name": "tmp", "mountPath": "/tmp"},
                    ],
                }
            ],
            "volumes": [
                {"name": "script", "configMap": {"name": "e2e-script"}},
                {
                    "name": "admin",
                    "secret": {
                        "secretName": "plant-admin",
                        "defaultMode": 0o440,
                        "items": [{"key": "password", "path": "password"}],
                    },
                },
                {"name": "tmp", "emptyDir": {}},
            ],
        },
    }


def echo_pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "e2e-echo", "namespace": NS, "labels": {"plantd.io/client": "true"}},
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": restricted_pod(),
            "containers": [
                {
                    "name": "echo",
                    "image": IMAGE,
                    "imagePullPolicy": "Never",
                    "args": [
                        "echo",
                        "--broker-endpoint",
                        # Every broker pod, as docs/ha.md asks of modules.
                        f"dns:tcp://{NAME}-broker-headless:9797",
                        "--service",
                        "e2e.module.Echo",
                        "--curve-keys",
                        "/etc/plantd/curve",
                        "--http-host",
                        "0.0.0.0",
                    ],
                    "readinessProbe": {
                        "httpGet": {"path": "/readyz", "port": 8084},
                        "periodSeconds": 2,
                    },
                    "securityContext": restricted_container(),
                    "volumeMounts": [
                        {"name": "keys", "mountPath": "/etc/plantd/curve", "readOnly": True}
                    ],
                }
            ],
            "volumes": [
                {"name": "keys", "secret": {"secretName": "e2e-echo-keys", "defaultMode": 0o440}}
            ],
        },
    }


def restricted_pod() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def restricted_container() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
