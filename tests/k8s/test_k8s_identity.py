"""Identity and the operator's confused-deputy guards, against the real API server (kwok makes
pods Ready) with the chart's RBAC and the real Istio CRDs.

The operator here runs with an image allow-list, as an administrator would set it in the chart
(imageAllowList): the default plantd image and the default managed Redis image only.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from k8skit import OperatorProcess, TestEnv, b64, condition, pdc, wait_for

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(600)]
ALLOWED = "plantd/plantd:*,redis:7.4*"
OPERATOR_ARGS = ["--allowed-images", ALLOWED]  # the conftest's operator fixture passes these
TLS: dict[str, Any] = {
    "mode": "external",
    "external": {"address": "redis.example:6380", "tls": {"enabled": True}},
}


def reason_is(env: TestEnv, ns: str, name: str, kind: str, reason: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        c = condition(env.get("pdc", name, ns), kind)
        return c if c and c["reason"] == reason else None

    return wait_for(check, f"pdc/{name} {kind} reason {reason}", timeout=90)


def ready(env: TestEnv, ns: str, name: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = env.get("pdc", name, ns)
        c = condition(obj, "Ready")
        gen = (obj or {}).get("metadata", {}).get("generation")
        if c and c["status"] == "True" and obj and obj["status"].get("observedGeneration") == gen:
            return obj
        return None

    return wait_for(check, f"pdc/{name} Ready=True", timeout=90)


def jwt_kids(secret: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"next": [], "active": [], "retired": []}
    for name in secret.get("data") or {}:
        state, _, rest = name.partition(".")
        if state in out and rest.endswith(".pem"):
            out[state].append(rest.removesuffix(".pem"))
    return out


def config_hash(env: TestEnv, ns: str, name: str) -> str:
    dep = env.get("deployment", name, ns)
    assert dep is not None
    return str(dep["spec"]["template"]["metadata"]["annotations"]["plantd.io/config-hash"])


def test_identity_runs_from_its_signing_key_secret_and_rotates(
    testenv: TestEnv, namespace: str, operator: OperatorProcess
) -> None:
    ns = namespace
    testenv.apply(pdc("idt", {"state": {"redis": TLS}}, namespace=ns))
    ready(testenv, ns, "idt")
    secret = testenv.get("secret", "idt-jwt", ns)
    assert secret is not None
    before = jwt_kids(secret)
    assert len(before["active"]) == 1 and len(before["next"]) == 1, before
    config = testenv.get("configmap", "idt-config", ns)
    assert config is not None
    assert config["data"]["PLANTD_IDENTITY_JWT_KEYS_DIR"] == "/etc/plantd/jwt"
    dep = testenv.get("deployment", "idt-identity", ns)
    assert dep is not None
    pod = dep["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"] == ["plantd", "identity"]
    assert [c["name"] for c in pod["containers"]] == ["identity", "gateway"]
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["jwt-keys"]["secret"]["secretName"] == "idt-jwt"
    hash_before = config_hash(testenv, ns, "idt-identity")

    testenv.kubectl("annotate", "pdc", "idt", "-n", ns, "plantd.io/rotate-signing-key=r1")

    def rotated() -> dict[str, list[str]] | None:
        s = testenv.get("secret", "idt-jwt", ns) or {}
        done = (s.get("metadata", {}).get("annotations") or {}).get("plantd.io/rotated-for")
        return jwt_kids(s) if done == "r1" else None

    after = wait_for(rotated, "the signing keys rotated once for r1")
    assert after["active"] == before["next"] and after["retired"] == before["active"]
    assert len(after["next"]) == 1 and after["next"] != before["next"]
    wait_for(
        lambda: config_hash(testenv, ns, "idt-identity") != hash_before,
        "the identity pods roll onto the new keys",
    )
    ready(testenv, ns, "idt")
    # The same annotation value again is a no-op: the Secret remembers it.
    testenv.kubectl("label", "pdc", "idt", "-n", ns, "touch=1")
    ready(testenv, ns, "idt")
    assert jwt_kids(testenv.get("secret", "idt-jwt", ns) or {}) == after


def test_plaintext_external_redis_is_refused_until_opted_in(
    testenv: TestEnv, namespace: str, operator: OperatorProcess
) -> None:
    ns = namespace
    plain = {"mode": "external", "external": {"address": "redis.example:6379"}}
    testenv.apply(pdc("plain", {"state": {"redis": plain}}, namespace=ns))
    c = reason_is(testenv, ns, "plain", "Ready", "RedisTLSRequired")
    assert c["status"] == "False" and "tls.enabled: true" in c["message"]
    # Refused means nothing of it is applied: no pod would carry anything anywhere.
    assert testenv.get("deployment", "plain-state", ns) is None
    assert testenv.get("configmap", "plain-config", ns) is None
    testenv.kubectl(
        "patch",
        "pdc",
        "plain",
        "-n",
        ns,
        "--type=merge",
        "-p",
        '{"spec":{"state":{"redis":{"external":{"allowPlaintext":true}}}}}',
    )
    obj = ready(testenv, ns, "plain")
    degraded = condition(obj, "Degraded")
    assert degraded and degraded["status"] == "True" and degraded["reason"] == "PlaintextRedis"


def test_a_secret_not_labelled_for_the_cluster_never_reaches_a_pod(
    testenv: TestEnv, namespace: str, operator: OperatorProcess
) -> None:
    ns = namespace
    testenv.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "victim", "namespace": ns},
            "data": {"password": b64("s3cret"), "aws-root-credentials": b64("x")},
        }
    )
    external = {
        "address": "redis.example:6380",
        "tls": {"enabled": True},
        "secretRef": {"name": "victim"},
    }
    spec = {"state": {"redis": {"mode": "external", "external": external}}}
    testenv.apply(pdc("deputy", spec, namespace=ns))
    c = reason_is(testenv, ns, "deputy", "Ready", "RedisSecretNotFound")
    assert "plantd.io/secret-for=deputy" in c["message"]
    status = json.dumps(testenv.get("pdc", "deputy", ns))
    assert "aws-root-credentials" not in status, "status must not list other Secrets' keys"

    def state_volumes() -> list[dict[str, Any]]:
        dep = testenv.get("deployment", "deputy-state", ns)
        assert dep is not None
        return list(dep["spec"]["template"]["spec"]["volumes"])

    vols = wait_for(state_volumes, "the state Deployment (rendered without the Secret)")
    assert not any(v.get("secret", {}).get("secretName") == "victim" for v in vols)
    # Identity shares state's Redis wiring, so it is held to the same check.
    identity = wait_for(
        lambda: testenv.get("deployment", "deputy-identity", ns), "the identity Deployment"
    )
    assert "victim" not in json.dumps(identity["spec"]["template"]["spec"]["volumes"])

    testenv.kubectl("label", "secret", "victim", "-n", ns, "plantd.io/secret-for=deputy")
    ready(testenv, ns, "deputy")
    mounted = [v["secret"] for v in state_volumes() if "secret" in v]
    assert {
        "secretName": "victim",
        "defaultMode": 0o400,
        "items": [{"key": "password", "path": "password"}],
    } in mounted


def test_an_image_outside_the_allow_list_gets_nothing_applied(
    testenv: TestEnv, namespace: str, operator: OperatorProcess
) -> None:
    ns = namespace
    testenv.apply(
        pdc("img", {"image": "evil.example/plantd:1", "state": {"redis": TLS}}, namespace=ns)
    )
    c = reason_is(testenv, ns, "img", "Ready", "ImageNotAllowed")
    assert "evil.example/plantd:1" in c["message"]
    obj = testenv.get("pdc", "img", ns)
    assert obj is not None and obj["status"]["phase"] == "Failed"
    for kind in ("deployment", "configmap", "secret"):
        assert not testenv.list(kind, ns, "plantd.io/cluster=img"), kind


def test_request_authentication_with_inline_jwks_is_accepted_by_istio_crds(
    testenv: TestEnv, namespace: str, operator: OperatorProcess
) -> None:
    ns = namespace
    testenv.apply(
        pdc("mesh", {"state": {"redis": TLS}, "mesh": {"istio": {"enabled": True}}}, namespace=ns)
    )
    ready(testenv, ns, "mesh")

    def ra() -> dict[str, Any] | None:
        return testenv.get("requestauthentications.security.istio.io", "mesh-state-jwt", ns)

    obj = wait_for(ra, "RequestAuthentication mesh-state-jwt")
    (rule,) = obj["spec"]["jwtRules"]
    assert rule["forwardOriginalToken"] is True
    assert rule["audiences"] == ["org.plantd.State", "org.plantd.Identity", "org.plantd.Broker"]
    kids = {k["kid"] for k in json.loads(rule["jwks"])["keys"]}
    secret = jwt_kids(testenv.get("secret", "mesh-jwt", ns) or {})
    assert kids == set(secret["active"] + secret["next"])
    assert all("d" not in k for k in json.loads(rule["jwks"])["keys"])


def data_of(env: TestEnv, kind: str, name: str, ns: str) -> dict[str, str] | None:
    obj = env.get(kind, name, ns)
    return dict(obj["data"]) if obj and obj.get("data") else None


def test_the_secured_plant_identity_on_redis_registry_and_state_auth(
    testenv: TestEnv, namespace: str, operator: OperatorProcess
) -> None:
    """What issue 8 §9 asks of the operator, as the real API server stores it (with the
    chart's RBAC): identity replicas on the cluster's Redis, the broker's and state's machine
    registry and state's JWKS as ConfigMaps, mounted, in the pods' config hashes."""
    from plantd.common.registry import Registry
    from plantd_operator import secrets

    ns = namespace
    testenv.apply(pdc("sec", {"state": {"redis": TLS}, "identity": {"replicas": 3}}, namespace=ns))
    obj = ready(testenv, ns, "sec")
    assert obj["status"]["components"]["identity"] == {
        "ready": 3,
        "desired": 3,
        "replicas": "3/3",
    }
    degraded = condition(obj, "Degraded")
    assert degraded is not None and degraded["reason"] == "AsExpected", degraded
    identity = testenv.get("deployment", "sec-identity", ns)
    assert identity is not None and identity["spec"]["replicas"] == 3

    config = data_of(testenv, "configmap", "sec-config", ns)
    assert config is not None
    assert config["PLANTD_IDENTITY_STORE"] == "redis"
    assert config["PLANTD_IDENTITY_REDIS_URL"] == config["PLANTD_STATE_REDIS_URL"]
    assert config["PLANTD_STATE_AUTH"] == "identity"
    assert config["PLANTD_STATE_AUTH_AUDIENCE"] == "org.plantd.State"
    assert config["PLANTD_BROKER_IDENTITY_REGISTRY"] == "true"

    # The registry: the components' public keys from the operator's CURVE Secret.
    registry = wait_for(
        lambda: data_of(testenv, "configmap", "sec-registry", ns), "ConfigMap sec-registry"
    )
    curve = testenv.get("secret", "sec-curve", ns)
    assert curve is not None
    keys = secrets.curve_public_keys(curve["data"], ["broker", "state", "identity", "gateway"])
    reg = Registry.from_dict(json.loads(registry["registry.json"]))
    assert {i.name: i.public_key for i in reg.identities()} == keys
    assert reg.may_serve(keys["state"], "org.plantd.State")
    # The gateway sidecar serves no service; it may publish only users' ext. topics.
    assert not reg.may_serve(keys["gateway"], "org.plantd.State")

    # The JWKS: the signing-key Secret's public keys.
    jwks = wait_for(lambda: data_of(testenv, "configmap", "sec-jwks", ns), "ConfigMap sec-jwks")
    kids = {k["kid"] for k in json.loads(jwks["jwks.json"])["keys"]}
    signing = jwt_kids(testenv.get("secret", "sec-jwt", ns) or {})
    assert kids == set(signing["active"] + signing["next"])

    def pod_volumes(component: str) -> tuple[dict[str, Any], dict[str, Any]]:
        dep = testenv.get("deployment", f"sec-{component}", ns)
        assert dep is not None
        pod = dep["spec"]["template"]["spec"]
        return (
            {v["name"]: v for v in pod["volumes"]},
            {m["name"]: m for m in pod["containers"][0]["volumeMounts"]},
        )

    vols, mounts = pod_volumes("broker")
    assert vols["registry"]["configMap"]["name"] == "sec-registry"
    assert mounts["registry"]["readOnly"] is True
    assert config["PLANTD_BROKER_REGISTRY"].startswith(mounts["registry"]["mountPath"])
    vols, mounts = pod_volumes("state")
    assert vols["registry"]["configMap"]["name"] == "sec-registry"
    assert vols["jwks"]["configMap"]["name"] == "sec-jwks"
    assert config["PLANTD_STATE_JWKS_FILE"].startswith(mounts["jwks"]["mountPath"])

    # A signing-key rotation reaches state's JWKS and rolls the state pods, not the broker.
    state_before = config_hash(testenv, ns, "sec-state")
    broker_before = config_hash(testenv, ns, "sec-broker")
    testenv.kubectl("annotate", "pdc", "sec", "-n", ns, "plantd.io/rotate-signing-key=r1")

    def rotated_jwks() -> set[str] | None:
        now = jwt_kids(testenv.get("secret", "sec-jwt", ns) or {})
        data = data_of(testenv, "configmap", "sec-jwks", ns) or {"jwks.json": '{"keys":[]}'}
        have = {k["kid"] for k in json.loads(data["jwks.json"])["keys"]}
        want = set(now["next"] + now["active"] + now["retired"])
        return have if now["retired"] and have == want else None

    wait_for(rotated_jwks, "the JWKS ConfigMap follows the rotation")
    wait_for(
        lambda: config_hash(testenv, ns, "sec-state") != state_before,
        "the state pods roll onto the new JWKS",
    )
    assert config_hash(testenv, ns, "sec-broker") == broker_before
    ready(testenv, ns, "sec")


def test_the_first_admin_comes_from_a_secret_only_once_it_is_labelled(
    testenv: TestEnv, namespace: str, operator: OperatorProcess
) -> None:
    """spec.identity.bootstrapSecretRef: an unlabelled Secret degrades the cluster and never
    reaches a pod (identity still gets the file path, so it waits rather than minting a
    setup-token admin); labelled, the identity Deployment mounts it read-only."""
    ns = namespace
    admin = {
        "username": "ops",
        "email": "ops@example.com",
        "password": "correct horse battery staple 42",
        "must_change_password": True,
    }
    testenv.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "first-admin", "namespace": ns},
            "data": {"bootstrap.json": b64(json.dumps(admin)), "aws-root-credentials": b64("x")},
        }
    )
    spec = {"state": {"redis": TLS}, "identity": {"bootstrapSecretRef": {"name": "first-admin"}}}
    testenv.apply(pdc("boot", spec, namespace=ns))
    c = reason_is(testenv, ns, "boot", "Degraded", "BootstrapSecretNotFound")
    assert c["status"] == "True" and "plantd.io/secret-for=boot" in c["message"]
    obj = testenv.get("pdc", "boot", ns)
    assert obj is not None and obj["status"]["phase"] != "Failed"
    assert "aws-root-credentials" not in json.dumps(obj["status"]), "no other Secret keys"

    def identity_pod() -> dict[str, Any] | None:
        dep = testenv.get("deployment", "boot-identity", ns)
        return dict(dep["spec"]["template"]["spec"]) if dep else None

    pod = wait_for(identity_pod, "the identity Deployment (rendered without the Secret)")
    assert "first-admin" not in json.dumps(pod)
    config = data_of(testenv, "configmap", "boot-config", ns)
    assert config is not None
    assert config["PLANTD_IDENTITY_BOOTSTRAP_FILE"] == "/etc/plantd/bootstrap/bootstrap.json"

    testenv.kubectl("label", "secret", "first-admin", "-n", ns, "plantd.io/secret-for=boot")

    def mounted() -> dict[str, Any] | None:
        # One snapshot of the template: its volume and the container's mount together.
        pod = identity_pod() or {}
        vols = {v["name"]: v for v in pod.get("volumes", [])}
        mounts = {m["name"] for c in pod.get("containers", []) for m in c.get("volumeMounts", [])}
        return pod if "bootstrap" in vols and "bootstrap" in mounts else None

    pod = wait_for(mounted, "the identity Deployment mounts the labelled Secret (next resync)")
    vol = {v["name"]: v for v in pod["volumes"]}["bootstrap"]
    assert vol["secret"] == {
        "secretName": "first-admin",
        "defaultMode": 0o400,
        "items": [{"key": "bootstrap.json", "path": "bootstrap.json"}],
        "optional": True,
    }
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["bootstrap"]["mountPath"] == "/etc/plantd/bootstrap"
    assert mounts["bootstrap"]["readOnly"] is True
    # kubelet gives the file 0440 root:fsGroup; identity reads it through that group.
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"]
    for other in ("boot-broker", "boot-state"):
        dep = testenv.get("deployment", other, ns)
        assert dep is not None and "first-admin" not in json.dumps(dep["spec"])
    c = reason_is(testenv, ns, "boot", "Degraded", "AsExpected")
    assert c["status"] == "False"
