"""The operator against a real API server (kwok makes pods Ready), with the chart's RBAC."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from k8skit import OperatorProcess, TestEnv, b64, condition, pdc, pv_for, wait_for

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(600)]


def ready(env: TestEnv, ns: str, name: str, timeout: float = 90) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = env.get("pdc", name, ns)
        c = condition(obj, "Ready")
        gen = (obj or {}).get("metadata", {}).get("generation")
        if c and c["status"] == "True" and obj and obj["status"].get("observedGeneration") == gen:
            return obj
        return None

    return wait_for(check, f"pdc/{name} Ready=True", timeout)


def deployment(env: TestEnv, ns: str, name: str) -> dict[str, Any]:
    obj = env.get("deployment", name, ns)
    assert obj is not None, f"deployment {name} missing"
    return obj


def events(env: TestEnv, ns: str, name: str) -> list[dict[str, Any]]:
    out = env.kubectl(
        "get", "events", "-n", ns, "--field-selector", f"involvedObject.name={name}", "-o", "json"
    ).stdout
    return list(json.loads(out)["items"])


def test_cluster_gets_every_child_and_becomes_ready(
    testenv: TestEnv, namespace: str, operator: OperatorProcess
) -> None:
    ns = namespace
    testenv.apply(pv_for(ns, "alpha"))
    testenv.apply(pdc("alpha", {"version": "0.1.0"}, namespace=ns))
    obj = ready(testenv, ns, "alpha")
    # Every child, with owner references to the cluster.
    uid = obj["metadata"]["uid"]
    for kind, names in {
        "serviceaccount": ["alpha-broker", "alpha-state", "alpha-identity", "alpha-redis"],
        "configmap": ["alpha-config", "alpha-registry", "alpha-jwks"],
        "secret": ["alpha-curve", "alpha-jwt", "alpha-redis"],
        "service": [
            "alpha-broker",
            "alpha-broker-headless",
            "alpha-state",
            "alpha-identity",
            "alpha-redis",
            "alpha-redis-headless",
        ],
        "deployment": ["alpha-broker", "alpha-state", "alpha-identity"],
        "statefulset": ["alpha-redis"],
        "poddisruptionbudget": ["alpha-broker", "alpha-state", "alpha-identity", "alpha-redis"],
    }.items():
        for n in names:
            child = testenv.get(kind, n, ns)
            assert child is not None, f"{kind}/{n} missing"
            assert child["metadata"]["ownerReferences"][0]["uid"] == uid, f"{kind}/{n}"
    # The right spec: image contract, restricted pods (the namespace enforces it), probes.
    broker = deployment(testenv, ns, "alpha-broker")["spec"]["template"]["spec"]
    c = broker["containers"][0]
    assert c["command"] == ["plantd", "broker"] and c["image"].endswith(":0.1.0")
    assert {p["name"] for p in c["ports"]} >= {"tcp-zmtp", "tcp-state-pub", "http-metrics"}
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # The gateway sidecar runs next to state and identity, probed over grpc.health.v1.
    for component in ("state", "identity"):
        spec = deployment(testenv, ns, f"alpha-{component}")["spec"]["template"]["spec"]
        assert [x["name"] for x in spec["containers"]] == [component, "gateway"]
        gw = spec["containers"][1]
        assert gw["command"] == ["plantd", "gateway"]
        assert gw["readinessProbe"]["grpc"] == {"port": 50051, "service": "readiness"}
        assert gw["livenessProbe"]["grpc"] == {"port": 50051, "service": "liveness"}
    pods = testenv.list("pods", ns, "plantd.io/cluster=alpha")
    assert len(pods) == 4 and all(p["status"]["phase"] == "Running" for p in pods)
    # Secrets are real and never in the ConfigMap.
    curve = testenv.get("secret", "alpha-curve", ns)
    assert curve is not None and "broker.key_secret" in curve["data"]
    cm = testenv.get("configmap", "alpha-config", ns)
    assert cm is not None
    # Only the path of the password file (mounted from the Secret), never a password.
    assert sorted(k for k in cm["data"] if "PASSWORD" in k) == [
        "PLANTD_GATEWAY_RATE_LIMIT_REDIS_PASSWORD_FILE",
        "PLANTD_IDENTITY_REDIS_PASSWORD_FILE",
        "PLANTD_STATE_REDIS_PASSWORD_FILE",
    ]
    # Status contract.
    st = obj["status"]
    assert st["phase"] == "Ready" and st["brokerReplicas"] == "1/1"
    for t in ("BrokerReady", "StateReady", "StateStoreReady", "IdentityReady"):
        assert condition(obj, t)["status"] == "True", t  # type: ignore[index]
    assert st["endpoints"]["broker"] == f"tcp://alpha-broker.{ns}.svc:9797"
    assert st["endpoints"]["stateGrpc"] == f"alpha-state.{ns}.svc:50051"
    assert st["endpoints"]["rest"] == f"http://alpha-state.{ns}.svc:8086"
    # kubectl wait is meaningful, and transitions became Events.
    testenv.kubectl("wait", "--for=condition=Ready", "pdc/alpha", "-n", ns, "--timeout=5s")
    assert any(e["reason"] == "AllComponentsReady" for e in events(testenv, ns, "alpha"))
    # kopf's bookkeeping lives under plantd.io/, never kopf.zalando.org; and no finalizer:
    # children go by garbage collection, so deletion never waits for the operator.
    meta = obj["metadata"]
    assert not meta.get("finalizers"), meta.get("finalizers")
    assert "plantd.io/last-handled-configuration" in meta["annotations"]
    assert not any("zalando" in k for k in [*meta["annotations"], *meta.get("finalizers", [])])
    assert operator.metric("plantd_operator_reconciliations_total", result="applied") >= 1
    assert operator.metric("plantd_operator_children_applied_total", kind="Deployment") >= 3


def test_scaling_and_version_changes_reach_the_deployments(
    testenv: TestEnv, namespace: str, operator: OperatorProcess
) -> None:
    ns = namespace
    before = deployment(testenv, ns, "alpha-state")["spec"]["template"]["metadata"]
    testenv.kubectl(
        "patch",
        "pdc",
        "alpha",
        "-n",
        ns,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"version": "0.2.0", "broker": {"replicas": 2}}}),
    )

    def rolled() -> bool:
        d = deployment(testenv, ns, "alpha-broker")
        image = d["spec"]["template"]["spec"]["containers"][0]["image"]
        return bool(d["spec"]["replicas"] == 2 and image.endswith(":0.2.0"))

    wait_for(rolled, "broker Deployment scaled to 2 with image 0.2.0")
    obj = ready(testenv, ns, "alpha")
    assert obj["status"]["brokerReplicas"] == "2/2" and obj["status"]["version"] == "0.2.0"
    after = deployment(testenv, ns, "alpha-state")["spec"]["template"]["metadata"]
    # The config hash did not move: only the version label and image changed for state.
    assert (
        after["annotations"]["plantd.io/config-hash"]
        == before["annotations"]["plantd.io/config-hash"]
    )


def test_deleted_child_is_recreated_and_edited_field_reverted(
    testenv: TestEnv, namespace: str, operator: OperatorProcess
) -> None:
    ns = namespace
    old_uid = deployment(testenv, ns, "alpha-identity")["metadata"]["uid"]
    testenv.kubectl("delete", "deployment", "alpha-identity", "-n", ns, "--wait=false")
    wait_for(
        lambda: (
            (d := testenv.get("deployment", "alpha-identity", ns)) is not None
            and d["metadata"]["uid"] != old_uid
        ),
        "alpha-identity to be recreated",
        timeout=30,
    )
    testenv.kubectl("delete", "service", "alpha-state", "-n", ns, "--wait=false")
    wait_for(lambda: testenv.get("service", "alpha-state", ns), "service recreated", timeout=30)
    testenv.kubectl("delete", "pdb", "alpha-broker", "-n", ns, "--wait=false")
    wait_for(lambda: testenv.get("pdb", "alpha-broker", ns), "PDB recreated (timer)", timeout=30)
    # An edit by another manager to a field the operator owns is reverted.
    testenv.kubectl("scale", "deployment", "alpha-broker", "-n", ns, "--replicas=5")
    wait_for(
        lambda: deployment(testenv, ns, "alpha-broker")["spec"]["replicas"] == 2,
        "broker replicas reverted to 2",
        timeout=30,
    )
    assert operator.metric("plantd_operator_drift_repairs_total") >= 3
    ready(testenv, ns, "alpha")


def test_unrelated_field_of_another_manager_is_left_alone(
    testenv: TestEnv, namespace: str, operator: OperatorProcess
) -> None:
    ns = namespace
    testenv.kubectl(
        "annotate",
        "deployment",
        "alpha-broker",
        "-n",
        ns,
        "example.com/owner=team-a",
        "--field-manager=someone-else",
    )
    testenv.kubectl(
        "label",
        "service",
        "alpha-broker",
        "-n",
        ns,
        "example.com/tier=bus",
        "--field-manager=someone-else",
    )
    # A spec change makes the operator apply everything again.
    testenv.kubectl(
        "patch",
        "pdc",
        "alpha",
        "-n",
        ns,
        "--type=merge",
        "-p",
        '{"spec":{"broker":{"heartbeat":{"liveness":4}}}}',
    )
    wait_for(
        lambda: (
            testenv.get("configmap", "alpha-config", ns)["data"][  # type: ignore[index]
                "PLANTD_BROKER_HEARTBEAT_LIVENESS"
            ]
            == "4"
        ),
        "the new liveness in the ConfigMap",
    )
    ready(testenv, ns, "alpha")
    d = deployment(testenv, ns, "alpha-broker")
    assert d["metadata"]["annotations"]["example.com/owner"] == "team-a"
    svc = testenv.get("service", "alpha-broker", ns)
    assert svc is not None and svc["metadata"]["labels"]["example.com/tier"] == "bus"
    raw = testenv.kubectl(
        "get", "deployment", "alpha-broker", "-n", ns, "-o", "json", "--show-managed-fields"
    ).stdout
    managers = {m["manager"] for m in json.loads(raw)["metadata"]["managedFields"]}
    assert {"plantd-operator", "someone-else"} <= managers


def test_pause_holds_everything(
    testenv: TestEnv, namespace: str, operator: OperatorProcess
) -> None:
    ns = namespace
    testenv.kubectl(
        "patch", "pdc", "alpha", "-n", ns, "--type=merge", "-p", '{"spec":{"paused":true}}'
    )
    wait_for(
        lambda: (
            (condition(testenv.get("pdc", "alpha", ns), "Paused") or {}).get("status") == "True"
        ),
        "Paused=True",
    )
    brokers = deployment(testenv, ns, "alpha-broker")["spec"]["replicas"]
    assert brokers != 3
    testenv.kubectl(
        "patch",
        "pdc",
        "alpha",
        "-n",
        ns,
        "--type=merge",
        "-p",
        '{"spec":{"broker":{"replicas":3}}}',
    )
    testenv.kubectl("scale", "deployment", "alpha-state", "-n", ns, "--replicas=2")
    applied = operator.metric("plantd_operator_children_applied_total")
    # Three resync intervals (3 s each) pass with nothing touched.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert deployment(testenv, ns, "alpha-broker")["spec"]["replicas"] == brokers
        assert deployment(testenv, ns, "alpha-state")["spec"]["replicas"] == 2
        time.sleep(0.5)
    assert operator.metric("plantd_operator_children_applied_total") == applied
    obj = testenv.get("pdc", "alpha", ns)
    assert obj is not None and obj["status"]["phase"] == "Paused"
    assert condition(obj, "Reconciling")["reason"] == "Paused"  # type: ignore[index]
    # Resume: everything converges to the spec.
    testenv.kubectl(
        "patch", "pdc", "alpha", "-n", ns, "--type=merge", "-p", '{"spec":{"paused":false}}'
    )
    wait_for(
        lambda: (
            deployment(testenv, ns, "alpha-broker")["spec"]["replicas"] == 3
            and deployment(testenv, ns, "alpha-state")["spec"]["replicas"] == 1
        ),
        "changes applied after resume",
    )
    ready(testenv, ns, "alpha")
    # The annotation pauses too.
    testenv.kubectl("annotate", "pdc", "alpha", "-n", ns, "plantd.io/paused=true")
    wait_for(
        lambda: (testenv.get("pdc", "alpha", ns) or {}).get("status", {}).get("phase") == "Paused",
        "phase Paused by annotation",
    )
    testenv.kubectl("annotate", "pdc", "alpha", "-n", ns, "plantd.io/paused-")
    wait_for(
        lambda: (testenv.get("pdc", "alpha", ns) or {}).get("status", {}).get("phase") == "Ready",
        "phase Ready after removing the annotation",
    )


def test_missing_secret_says_what_to_fix_then_recovers(
    testenv: TestEnv, namespace: str, operator: OperatorProcess
) -> None:
    ns = namespace
    spec = {
        "state": {
            "redis": {
                "mode": "external",
                "external": {
                    "address": "redis.example:6379",
                    "secretRef": {"name": "ext-redis"},
                    "tls": {"enabled": True},
                },
            }
        }
    }
    testenv.apply(pdc("beta", spec, namespace=ns))

    def blocked() -> dict[str, Any] | None:
        c = condition(testenv.get("pdc", "beta", ns), "Ready")
        return c if c and c["reason"] == "RedisSecretNotFound" else None

    c = wait_for(blocked, "Ready=False reason RedisSecretNotFound")
    assert c["status"] == "False" and "ext-redis" in c["message"] and "create it" in c["message"]
    wait_for(
        lambda: any(
            e["type"] == "Warning" and e["reason"] == "RedisSecretNotFound"
            for e in events(testenv, ns, "beta")
        ),
        "a Warning event",
    )
    # The rest of the cluster is still rendered, and the operator keeps serving others.
    assert testenv.get("deployment", "beta-broker", ns) is not None
    testenv.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            # Labelled for the cluster: the operator uses no other Secret (docs/operator.md).
            "metadata": {
                "name": "ext-redis",
                "namespace": ns,
                "labels": {"plantd.io/secret-for": "beta"},
            },
            "data": {"password": b64("s3cret")},
        }
    )
    obj = ready(testenv, ns, "beta", timeout=60)
    assert condition(obj, "StateStoreReady")["reason"] == "ExternalConfigured"  # type: ignore[index]
    pod = deployment(testenv, ns, "beta-state")["spec"]["template"]["spec"]
    mounted = {v["secret"]["secretName"]: v["secret"] for v in pod["volumes"] if "secret" in v}
    assert mounted["ext-redis"]["items"] == [{"key": "password", "path": "password"}]


def test_istio_networkpolicy_and_monitoring_objects_accepted_by_real_crds(
    testenv: TestEnv, namespace: str, operator: OperatorProcess
) -> None:
    ns = namespace
    spec = {
        "state": {
            "redis": {
                "mode": "external",
                "external": {"address": "r.example:6379", "tls": {"enabled": True}},
            }
        },
        "mesh": {"istio": {"enabled": True}},
        "networkPolicy": {"enabled": True},
        "monitoring": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
        "sidecars": {"grpc": {"edge": {"enabled": True, "type": "NodePort"}}},
    }
    testenv.apply(pdc("gamma", spec, namespace=ns))
    obj = ready(testenv, ns, "gamma")
    assert obj["status"]["phase"] == "Ready"
    for kind, name in [
        ("peerauthentications.security.istio.io", "gamma"),
        ("authorizationpolicies.security.istio.io", "gamma-broker-allow"),
        ("destinationrules.networking.istio.io", "gamma-broker"),
        ("servicemonitors.monitoring.coreos.com", "gamma"),
        ("prometheusrules.monitoring.coreos.com", "gamma"),
        ("networkpolicies", "gamma-default-deny"),
        ("networkpolicies", "gamma-broker"),
    ]:
        assert testenv.get(kind, name, ns) is not None, f"{kind}/{name}"
    pod = deployment(testenv, ns, "gamma-broker")["spec"]["template"]["metadata"]
    assert pod["labels"]["sidecar.istio.io/inject"] == "true"
    # The edge Service selects every pod with a gateway sidecar (state and identity).
    edge = testenv.get("service", "gamma-edge", ns)
    assert edge is not None and edge["spec"]["type"] == "NodePort"
    assert [p["name"] for p in edge["spec"]["ports"]] == ["grpc", "http-rest"]
    backends = testenv.list(
        "pods", ns, ",".join(f"{k}={v}" for k, v in edge["spec"]["selector"].items())
    )
    assert sorted(p["metadata"]["labels"]["app.kubernetes.io/component"] for p in backends) == [
        "identity",
        "state",
    ]
    assert obj["status"]["endpoints"]["edge"] == f"gamma-edge.{ns}.svc:50051"
    # Switching a feature off removes its objects.
    testenv.kubectl(
        "patch",
        "pdc",
        "gamma",
        "-n",
        ns,
        "--type=merge",
        "-p",
        '{"spec":{"networkPolicy":{"enabled":false},"sidecars":{"grpc":{"edge":{"enabled":false}}}}}',
    )
    wait_for(
        lambda: not testenv.list("networkpolicies", ns, "plantd.io/cluster=gamma"),
        "NetworkPolicies pruned",
    )
    wait_for(lambda: testenv.get("service", "gamma-edge", ns) is None, "edge Service pruned")
    assert testenv.get("service", "gamma-state", ns) is not None, "only the edge is pruned"


def test_deleting_the_cluster_removes_everything(
    testenv: TestEnv, namespace: str, operator: OperatorProcess
) -> None:
    ns = namespace
    testenv.kubectl("delete", "pdc", "gamma", "-n", ns, "--wait=false")
    for kind in (
        "deployments",
        "services",
        "secrets",
        "configmaps",
        "serviceaccounts",
        "poddisruptionbudgets",
        "authorizationpolicies.security.istio.io",
    ):
        wait_for(
            lambda kind=kind: not testenv.list(kind, ns, "plantd.io/cluster=gamma"),  # type: ignore[misc]
            f"{kind} of gamma garbage-collected",
            timeout=60,
        )
    assert testenv.get("pdc", "gamma", ns) is None
    # The other clusters are untouched.
    assert testenv.get("deployment", "alpha-broker", ns) is not None
