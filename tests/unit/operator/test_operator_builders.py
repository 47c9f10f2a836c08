"""Pure builders: security, ports, wiring, config hashes, optional features."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from plantd.common import contract
from plantd_operator.builders import render_children, workloads
from plantd_operator.context import Capabilities, ClusterContext
from plantd_operator.reconcile import WORKLOAD_KINDS

pytestmark = pytest.mark.unit
Factory = Callable[..., ClusterContext]


def by_kind(children: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {c["metadata"]["name"]: c for c in children if c["kind"] == kind}


def pod_specs(children: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        c["spec"]["template"]["spec"]
        for c in children
        if c["kind"] in ("Deployment", "StatefulSet")
    ]


def test_default_cluster_children(ctx_factory: Factory) -> None:
    children = render_children(ctx_factory())
    kinds = sorted({c["kind"] for c in children})
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
        "StatefulSet",
    ]
    assert set(by_kind(children, "Deployment")) == {"demo-broker", "demo-state", "demo-identity"}
    assert set(by_kind(children, "Service")) == {
        "demo-broker",
        "demo-broker-headless",
        "demo-state",
        "demo-identity",
        "demo-redis",
        "demo-redis-headless",
    }
    assert by_kind(children, "Service")["demo-broker-headless"]["spec"]["clusterIP"] == "None"
    for c in children:
        ref = c["metadata"]["ownerReferences"][0]
        assert ref["uid"] == "uid-1" and ref["controller"] is True
        assert c["metadata"]["labels"]["plantd.io/cluster"] == "demo"
        assert c["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "plantd-operator"


def test_every_pod_is_restricted(ctx_factory: Factory) -> None:
    for spec in pod_specs(render_children(ctx_factory())):
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert "livenessProbe" in c and "readinessProbe" in c


def test_port_names_say_the_protocol_and_fit_kubernetes_limits(ctx_factory: Factory) -> None:
    children = render_children(ctx_factory())
    for spec in pod_specs(children):
        for c in spec["containers"]:
            for p in c["ports"]:
                assert len(p["name"]) <= 15, p  # IANA service name limit for container ports
                assert p["name"].startswith(("tcp-", "http-", "grpc")), p
    broker = by_kind(children, "Service")["demo-broker"]
    names = {p["name"] for p in broker["spec"]["ports"]}
    assert {"tcp-zmtp", "tcp-bus-state-pub", "tcp-bus-metric-sub", "http-metrics"} <= names
    state = by_kind(children, "Service")["demo-state"]
    # The default cluster runs the gateway sidecar: Istio picks the protocol by port name.
    assert [(p["name"], p.get("appProtocol")) for p in state["spec"]["ports"]] == [
        ("grpc", "grpc"),
        ("http-rest", "http"),
        ("http-metrics", None),
        ("http-metrics-gw", None),
    ]


def test_image_contract(ctx_factory: Factory) -> None:
    children = render_children(ctx_factory({"version": "1.2.3"}))
    deps = by_kind(children, "Deployment")
    broker = deps["demo-broker"]["spec"]["template"]["spec"]["containers"][0]
    assert broker["command"] == ["plantd", "broker"]
    assert broker["image"] == "plantd/plantd:1.2.3"
    state = deps["demo-state"]["spec"]["template"]["spec"]["containers"]
    assert [c["command"] for c in state] == [["plantd", "state"], ["plantd", "gateway"]]
    data = by_kind(children, "ConfigMap")["demo-config"]["data"]
    assert data["PLANTD_STATE_BROKER_ENDPOINT"] == "dns:tcp://demo-broker-headless.plant.svc:9797"
    assert data["PLANTD_STATE_REDIS_URL"] == "redis://demo-redis.plant.svc:6379/0"
    assert data["PLANTD_BROKER_HEARTBEAT_MS"] == str(contract.HEARTBEAT_MS)
    assert all(k.startswith("PLANTD_") for k in data)
    # No secret ever sits in the ConfigMap or a literal env value.
    assert not any("PASSWORD" in k for k in data if not k.endswith("_PASSWORD_FILE"))
    assert not any(
        "secretKeyRef" in str(c.get("env"))
        for d in deps.values()
        for c in d["spec"]["template"]["spec"]["containers"]
    )
    # The password reaches `plantd state` as a file from the Secret (it reads no variable).
    assert data["PLANTD_STATE_REDIS_PASSWORD_FILE"] == "/etc/plantd/redis-auth/password"
    assert "env" not in state[0]
    pod = deps["demo-state"]["spec"]["template"]["spec"]
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["redis-auth"]["secret"]["secretName"] == "demo-redis"
    assert vols["redis-auth"]["secret"]["items"] == [{"key": "password", "path": "password"}]


def test_config_hash_rolls_only_the_component_whose_config_changed(ctx_factory: Factory) -> None:
    def hashes(spec: dict[str, Any]) -> dict[str, str]:
        deps = by_kind(render_children(ctx_factory(spec)), "Deployment")
        return {
            n: d["spec"]["template"]["metadata"]["annotations"]["plantd.io/config-hash"]
            for n, d in deps.items()
        }

    base = hashes({})
    assert hashes({}) == base, "hash must be stable"
    assert hashes({"broker": {"replicas": 3}}) == base, "scaling is not a config change"
    changed = hashes({"broker": {"heartbeat": {"liveness": 5}}})
    assert changed["demo-broker"] != base["demo-broker"]
    assert changed["demo-state"] == base["demo-state"]
    secret_rotated = ctx_factory(secret_digests={"state:password": "new"})
    deps = by_kind(render_children(secret_rotated), "Deployment")
    state_hash = deps["demo-state"]["spec"]["template"]["metadata"]["annotations"]
    assert state_hash["plantd.io/config-hash"] != base["demo-state"]


def test_external_redis_wiring(ctx_factory: Factory) -> None:
    spec = {
        "state": {
            "redis": {
                "mode": "external",
                "external": {
                    "address": "redis.db:6380",
                    "database": 2,
                    "secretRef": {"name": "r", "key": "pw"},
                    "tls": {"enabled": True, "caSecretRef": {"name": "ca", "key": "ca.pem"}},
                },
            }
        }
    }
    # Mounted only once the reconcile has checked the Secrets are labelled for the cluster.
    verified = {"state:password": "p", "state:ca": "c"}
    children = render_children(ctx_factory(spec, secret_digests=verified))
    assert "StatefulSet" not in {c["kind"] for c in children}
    data = by_kind(children, "ConfigMap")["demo-config"]["data"]
    assert data["PLANTD_STATE_REDIS_URL"] == "rediss://redis.db:6380/2"
    assert data["PLANTD_STATE_REDIS_CA_FILE"].endswith("/ca.crt")
    pod = by_kind(children, "Deployment")["demo-state"]["spec"]["template"]["spec"]
    vols = {v["name"]: v["secret"] for v in pod["volumes"] if "secret" in v}
    assert vols["redis-auth"]["secretName"] == "r"
    assert vols["redis-auth"]["items"] == [{"key": "pw", "path": "password"}]
    assert vols["redis-auth"]["defaultMode"] == 0o400
    assert vols["redis-tls"]["secretName"] == "ca"
    unverified = render_children(ctx_factory(spec))
    pod = by_kind(unverified, "Deployment")["demo-state"]["spec"]["template"]["spec"]
    named = {v.get("secret", {}).get("secretName") for v in pod["volumes"]}
    assert not named & {"r", "ca"}, "an unchecked Secret must never reach a pod"


def test_managed_redis_keeps_password_off_the_command_line(ctx_factory: Factory) -> None:
    sts = by_kind(render_children(ctx_factory()), "StatefulSet")["demo-redis"]
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert "--aclfile" in container["args"] and "--appendonly" in container["args"]
    assert not any("pass" in a.lower() for a in container["args"])
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"] == {
        "storage": "1Gi"
    }


def test_managed_redis_image_comes_from_the_cluster_else_the_operator(
    ctx_factory: Factory,
) -> None:
    def image(ctx: ClusterContext) -> str:
        sts = by_kind(render_children(ctx), "StatefulSet")["demo-redis"]
        return str(sts["spec"]["template"]["spec"]["containers"][0]["image"])

    assert image(ctx_factory()) == "redis:7.4"
    mirror = "mirror.plant.example/redis:7.4"
    assert image(ctx_factory(default_redis_image=mirror)) == mirror
    own = {"state": {"redis": {"managed": {"image": "redis:7.4.2"}}}}
    assert image(ctx_factory(own, default_redis_image=mirror)) == "redis:7.4.2"


def test_curve_keys_mounted_least_privilege(ctx_factory: Factory) -> None:
    deps = by_kind(render_children(ctx_factory()), "Deployment")

    def items(name: str, volume: str = "curve-keys") -> set[str]:
        vols = {v["name"]: v for v in deps[name]["spec"]["template"]["spec"]["volumes"]}
        src = vols[volume]["projected"]["sources"][0]["secret"]["items"]
        return {i["path"] for i in src}

    assert items("demo-state") == {"state.key_secret", "state.key", "broker.key"}
    # The gateway sidecar has its own pair (not the service's) and the broker accepts it.
    assert items("demo-state", "curve-keys-gw") == {
        "gateway.key_secret",
        "gateway.key",
        "broker.key",
    }
    assert items("demo-broker") == {
        "broker.key_secret",
        "broker.key",
        "state.key",
        "identity.key",
        "gateway.key",
    }
    deps = by_kind(
        render_children(ctx_factory({"sidecars": {"grpc": {"enabled": False}}})), "Deployment"
    )
    assert "gateway.key" not in items("demo-broker")
    off = by_kind(
        render_children(ctx_factory({"security": {"curve": {"enabled": False}}})), "Deployment"
    )
    assert all(
        v["name"] != "curve-keys" for v in off["demo-broker"]["spec"]["template"]["spec"]["volumes"]
    )


def test_network_policies_default_deny_plus_edges(ctx_factory: Factory) -> None:
    assert not by_kind(render_children(ctx_factory()), "NetworkPolicy")
    nps = by_kind(
        render_children(ctx_factory({"networkPolicy": {"enabled": True}})), "NetworkPolicy"
    )
    deny = nps["demo-default-deny"]["spec"]
    assert deny["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny
    redis = nps["demo-redis"]["spec"]["ingress"][0]
    assert redis["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "state"
    assert redis["ports"] == [{"protocol": "TCP", "port": 6379}]


def test_istio_objects_per_edge_with_service_account_principals(ctx_factory: Factory) -> None:
    spec = {"mesh": {"istio": {"enabled": True, "clientPrincipals": ["cluster.local/ns/x/sa/y"]}}}
    children = render_children(ctx_factory(spec))
    pa = by_kind(children, "PeerAuthentication")["demo"]
    assert pa["spec"]["mtls"]["mode"] == "STRICT"
    aps = by_kind(children, "AuthorizationPolicy")
    redis_from = aps["demo-redis-allow"]["spec"]["rules"][0]["from"][0]["source"]["principals"]
    # Identity keeps its users in the same Redis (its own key prefix).
    assert redis_from == [
        "cluster.local/ns/plant/sa/demo-identity",
        "cluster.local/ns/plant/sa/demo-state",
    ]
    broker_from = aps["demo-broker-allow"]["spec"]["rules"][0]["from"][0]["source"]["principals"]
    assert "cluster.local/ns/x/sa/y" in broker_from
    drs = by_kind(children, "DestinationRule")
    assert drs["demo-broker"]["spec"]["trafficPolicy"]["tls"]["mode"] == "ISTIO_MUTUAL"
    pod = by_kind(children, "Deployment")["demo-broker"]["spec"]["template"]["metadata"]
    assert pod["labels"]["sidecar.istio.io/inject"] == "true"
    assert "holdApplicationUntilProxyStarts" in pod["annotations"]["proxy.istio.io/config"]
    # Without Istio's CRDs nothing Istio is rendered (the reconcile reports it instead).
    bare = render_children(ctx_factory(spec, capabilities=Capabilities()))
    assert not by_kind(bare, "AuthorizationPolicy")


def test_monitoring_needs_flag_and_crd(ctx_factory: Factory) -> None:
    spec = {"monitoring": {"serviceMonitor": {"enabled": True, "labels": {"release": "k"}}}}
    sm = by_kind(render_children(ctx_factory(spec)), "ServiceMonitor")["demo"]
    assert sm["metadata"]["labels"]["release"] == "k"
    assert {e["port"] for e in sm["spec"]["endpoints"]} == {"http-metrics", "http-metrics-gw"}
    assert not by_kind(
        render_children(ctx_factory(spec, capabilities=Capabilities())), "ServiceMonitor"
    )


def test_sidecar_disabled_removes_gateway(ctx_factory: Factory) -> None:
    on = render_children(ctx_factory({"sidecars": {"grpc": {"enabled": True}}}))
    state = by_kind(on, "Deployment")["demo-state"]["spec"]["template"]["spec"]
    assert [c["name"] for c in state["containers"]] == ["state", "gateway"]
    assert by_kind(on, "Service")["demo-state"]["spec"]["ports"][0]["name"] == "grpc"
    children = render_children(ctx_factory({"sidecars": {"grpc": {"enabled": False}}}))
    state = by_kind(children, "Deployment")["demo-state"]["spec"]["template"]["spec"]
    assert [c["name"] for c in state["containers"]] == ["state"]
    svc = by_kind(children, "Service")["demo-state"]
    assert [p["name"] for p in svc["spec"]["ports"]] == ["http-metrics"]


def test_pod_overrides_merge_field_by_field(ctx_factory: Factory) -> None:
    spec = {
        "pod": {"nodeSelector": {"zone": "a"}, "annotations": {"team": "x"}},
        "broker": {"pod": {"nodeSelector": {"zone": "b"}}},
    }
    deps = by_kind(render_children(ctx_factory(spec)), "Deployment")
    broker = deps["demo-broker"]["spec"]["template"]
    state = deps["demo-state"]["spec"]["template"]
    assert broker["spec"]["nodeSelector"] == {"zone": "b"}
    assert broker["metadata"]["annotations"]["team"] == "x"
    assert state["spec"]["nodeSelector"] == {"zone": "a"}


def test_version_label_from_image_override(ctx_factory: Factory) -> None:
    assert ctx_factory({"image": "reg:5000/p/plantd:2.0.0-rc1"}).version == "2.0.0-rc1"
    assert ctx_factory({"image": "reg/p@sha256:abc"}).version == "custom"


def test_broker_ports_cover_every_bus() -> None:
    ports = {p["containerPort"] for p in workloads.broker_container_ports()}
    for front, back in contract.BUS_PORTS.values():
        assert {front, back} <= ports


def test_only_workloads_depend_on_secret_contents(ctx_factory: Factory) -> None:
    """The reconcile applies everything else before the Secrets exist (latency): that is
    only right if nothing but the pod owners changes with the Secrets' digests."""
    plain = ctx_factory({"networkPolicy": {"enabled": True}, "mesh": {"istio": {"enabled": True}}})
    digests = {"curve": "c1", "identity:jwt": "j1", "redis:auth": "r1", "state:redis": "s1"}
    keyed = replace(plain, secret_digests=digests)
    before = {(c["kind"], c["metadata"]["name"]): c for c in render_children(plain)}
    after = {(c["kind"], c["metadata"]["name"]): c for c in render_children(keyed)}
    assert before.keys() == after.keys()
    changed = {key[0] for key in before if before[key] != after[key]}
    assert changed == WORKLOAD_KINDS
    # ...and what carries public keys read from the Secrets: the RequestAuthentications and
    # the registry and JWKS ConfigMaps, which the reconcile sends from the final render.
    with_keys = replace(keyed, jwks='{"keys":[]}', curve_public_keys={"state": "k" * 40})
    late = {(c["kind"], c["metadata"]["name"]) for c in render_children(with_keys)} - set(after)
    assert late == {
        ("RequestAuthentication", "demo-state-jwt"),
        ("RequestAuthentication", "demo-identity-jwt"),
        ("ConfigMap", "demo-registry"),
        ("ConfigMap", "demo-jwks"),
    }


def test_several_brokers_get_workers_and_publishers_on_each(ctx_factory: Factory) -> None:
    one = by_kind(render_children(ctx_factory({})), "ConfigMap")["demo-config"]["data"]
    three = by_kind(render_children(ctx_factory({"broker": {"replicas": 3}})), "ConfigMap")[
        "demo-config"
    ]["data"]
    peers = "dns:tcp://demo-broker-headless.plant.svc"
    # Workers register with, and publishers send to, every broker pod (docs/ha.md)...
    for key, port in [
        ("PLANTD_STATE_BROKER_ENDPOINT", 9797),
        ("PLANTD_IDENTITY_BROKER_ENDPOINT", 9797),
        ("PLANTD_STATE_BUS_ENDPOINT", contract.BUS_PORTS["state"][0]),
        ("PLANTD_STATE_EVENT_BUS_ENDPOINT", contract.BUS_PORTS["event"][0]),
        ("PLANTD_IDENTITY_BUS_ENDPOINT", contract.BUS_PORTS["event"][0]),
        ("PLANTD_GATEWAY_EVENT_PUB_ENDPOINT", contract.BUS_PORTS["event"][0]),
        ("PLANTD_GATEWAY_METRIC_PUB_ENDPOINT", contract.BUS_PORTS["metric"][0]),
    ]:
        assert three[key] == one[key] == f"{peers}:{port}", key  # scaling changes no config
    # ...while clients and subscribers use any one broker through the Service.
    for key in [
        "PLANTD_GATEWAY_BROKER_ENDPOINT",
        "PLANTD_GATEWAY_STATE_SUB_ENDPOINT",
        "PLANTD_STATE_EVENT_SUB_ENDPOINT",
    ]:
        assert three[key] == one[key] and three[key].startswith("tcp://demo-broker.plant.svc:")
    # The names it looks up are a Service the operator renders.
    services = by_kind(render_children(ctx_factory({"broker": {"replicas": 3}})), "Service")
    assert services["demo-broker-headless"]["spec"]["clusterIP"] == "None"


def test_rollouts_drain_first(ctx_factory: Factory) -> None:
    """preStop before SIGTERM, a grace period that covers the drain, one pod at a time, and a
    broker that takes clients only once plantd's workers found it (docs/ha.md)."""
    children = render_children(ctx_factory({"broker": {"replicas": 3, "shutdownGraceSeconds": 40}}))
    deployments = by_kind(children, "Deployment")
    for name, dep in deployments.items():
        pod = dep["spec"]["template"]["spec"]
        for container in pod["containers"]:  # the gateway sidecars too
            assert container["lifecycle"] == {"preStop": {"sleep": {"seconds": 3}}}, name
        assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    broker_pod = deployments["demo-broker"]["spec"]["template"]["spec"]
    assert broker_pod["terminationGracePeriodSeconds"] == 3 + 40 + 15
    assert (
        deployments["demo-state"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 30
    )
    config = by_kind(children, "ConfigMap")["demo-config"]["data"]
    assert config["PLANTD_BROKER_SHUTDOWN_GRACE_MS"] == "40000"
    assert config["PLANTD_BROKER_READY_SERVICES"] == "org.plantd.State,org.plantd.Identity"
    # Workers must find an unready broker (its readiness waits for them); clients must not.
    services = by_kind(children, "Service")
    assert services["demo-broker-headless"]["spec"]["publishNotReadyAddresses"] is True
    assert "publishNotReadyAddresses" not in services["demo-broker"]["spec"]
    pdbs = by_kind(children, "PodDisruptionBudget")
    assert pdbs["demo-broker"]["spec"]["maxUnavailable"] == 1
    # The default keeps the 30 s Kubernetes gives anyway.
    default = by_kind(render_children(ctx_factory()), "Deployment")["demo-broker"]
    assert default["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 30


def test_the_rendered_broker_settings_are_ones_the_broker_accepts(ctx_factory: Factory) -> None:
    from plantd.common.config import BrokerSettings

    config = by_kind(render_children(ctx_factory()), "ConfigMap")["demo-config"]["data"]
    env = {k: v for k, v in config.items() if k.startswith("PLANTD_BROKER_")}
    settings = BrokerSettings.load(environ=env)
    assert settings.ready_services == ["org.plantd.State", "org.plantd.Identity"]
    assert settings.shutdown_grace_ms == 5000


def test_brokers_refuse_a_lost_service_quickly(ctx_factory: Factory) -> None:
    """A broker cut off from a service's workers refuses its requests unrun after 250 ms
    (plantd's clients then reach another broker); the same for one broker or several, so
    scaling does not roll the brokers."""

    def data(replicas: int) -> dict[str, str]:
        children = render_children(ctx_factory({"broker": {"replicas": replicas}}))
        config = next(c for c in children if c["metadata"]["name"] == "demo-config")
        return dict(config["data"])

    assert data(2)["PLANTD_BROKER_ORPHAN_WAIT_MS"] == data(1)["PLANTD_BROKER_ORPHAN_WAIT_MS"]
    assert data(1)["PLANTD_BROKER_ORPHAN_WAIT_MS"] == "250"
